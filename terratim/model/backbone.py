"""TerraMind as a fine-tuning backbone (``terramind_v1_{tiny,small,base,large}``): the encoder plus merging.

The backbone is the TerraMind network built without a decoder; its parameter names equal the reference
``TerraMindViT``'s (and the official file's), so fine-tuned weights stay interchangeable.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import torch
import torch.nn as nn

from terratim import modalities as mods
from terratim.layers import Linear
from terratim.model.config import TerraMindConfig
from terratim.model.embeddings import PatchEmbedding, SequenceEmbedding, TokenEmbedding
from terratim.model.terramind import Span, TerraMind
from terratim.registry import register_sizes
from terratim.weights import load_weights, terramind_architecture, terramind_state_dict

log = logging.getLogger(__name__)

MergeMethod = Literal["mean", "max", "concat", "dict"] | None
MERGE_METHODS = ("mean", "max", "concat", "dict", None)
ModalitySpec = str | Mapping[str, int]


def given_as_image(x: torch.Tensor) -> bool:
    """Whether an input of a token modality is an image to tokenize rather than token ids.

    Token ids are int32/int64 tensors (B, h, w) or (B, N). Images are float tensors, 4-D tensors (B, C, H, W), or
    uint8/int16 class maps (B, H, W) as read from GeoTIFFs.
    """
    return torch.is_floating_point(x) or x.dim() == 4 or x.dtype in (torch.uint8, torch.int8, torch.int16, torch.bool)


def is_finite(x: torch.Tensor) -> bool:
    """True when ``x`` has no NaN/inf: one reduction, and the full check only if the sum is not finite."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def require_tokenizer_module(name: str, tokenizer: Any) -> nn.Module:
    """``tokenizer`` itself if it is an ``nn.Module`` (image tokenizers and the coordinates tokenizer are)."""
    if not isinstance(tokenizer, nn.Module):
        raise TypeError(
            f"the {name} tokenizer must be a torch.nn.Module (terratim.build('terramind_v1_tokenizer_...') or "
            f"terratim.tokenizers.coords.CoordsTokenizer), got {type(tokenizer).__name__}"
        )
    return tokenizer


def parse_modalities(modalities: Sequence[ModalitySpec]) -> dict[str, tuple[str, int | None]]:
    """User modality list -> ``{user name: (internal key, channels of a new modality or None)}``.

    ``"S2L2A"`` selects the pretrained embedding; ``{"HLS": 6}`` declares a new raw modality with 6 channels.
    """
    parsed: dict[str, tuple[str, int | None]] = {}
    for item in modalities:
        if isinstance(item, Mapping):
            for name, channels in item.items():
                if not isinstance(channels, int) or channels < 1:
                    raise ValueError(f"new modality {name!r} needs a positive channel count, got {channels!r}")
                parsed[name] = (name, channels)
            continue
        key = mods.input_key(item)
        name = item if item in mods.KEY_OWNERS else mods.resolve(item).name
        if any(existing_key == key for existing_key, _ in parsed.values()):
            raise ValueError(f"modality {item!r} is listed twice (as {key})")
        parsed[name] = (key, None)
    if not parsed:
        raise ValueError("at least one modality is needed, e.g. modalities=['S2L2A']")
    return parsed


class TerraMindBackbone(TerraMind):
    """TerraMind encoder returning per-layer features, merged across modalities.

    Args:
        config: architecture.
        modalities: inputs, by user name (``"S2L2A"``) or as ``{"NAME": channels}`` for a new raw modality.
        merge_method: ``"mean"`` / ``"max"`` over image modalities, ``"concat"`` along channels, ``"dict"``
            per modality, or ``None`` for the raw token sequence.
        modality_drop_rate: training-time probability of dropping each input but one (see ``forward``).
        check_finite: raise on NaN/inf inputs instead of propagating them silently.
        token_inputs: extra inputs given as token ids, ``{name: token key}`` (TiM's imagined modalities, or
            generation targets that condition later decoding steps). Names already among the inputs are kept.
        decoder_keys: token domains to decode (generation); empty for a plain backbone.
    """

    # Submodules with weights of their own, not loaded from the TerraMind file with this network.
    nested_prefixes: tuple[str, ...] = ("tokenizers.",)

    def __init__(
        self,
        config: TerraMindConfig,
        modalities: Sequence[ModalitySpec],
        merge_method: MergeMethod = "mean",
        modality_drop_rate: float = 0.0,
        check_finite: bool = True,
        token_inputs: Mapping[str, str] | None = None,
        decoder_keys: Sequence[str] = (),
    ) -> None:
        if merge_method not in MERGE_METHODS:
            raise ValueError(f"merge_method must be one of {MERGE_METHODS}, got {merge_method!r}")
        self.inputs = parse_modalities(modalities)
        for name, key in (token_inputs or {}).items():
            if name not in self.inputs and all(key != k for k, _ in self.inputs.values()):
                self.inputs[name] = (key, None)
        super().__init__(config, {key: channels for key, channels in self.inputs.values()}, tuple(decoder_keys))
        self.merge_method = merge_method
        self.modality_drop_rate = modality_drop_rate
        self.check_finite = check_finite
        self.tokenizers = nn.ModuleDict()  # tokenizers of token inputs given as images (or lon/lat for COORDS)
        self.band_names: dict[str, tuple[str, ...]] = {}
        num_images = sum(1 for key, _ in self.inputs.values() if not self._is_sequence(key))
        if merge_method == "concat":
            self.missing_mod_token = nn.Parameter(torch.empty(config.dim).normal_(std=0.02))
        width = config.dim * num_images if merge_method == "concat" else config.dim
        self.out_channels = [width] * config.encoder_depth

    def _is_sequence(self, key: str) -> bool:
        return isinstance(self.encoder_embeddings[key], SequenceEmbedding)

    # ---------------------------------------------------------------------------------------- inputs
    def _name_of(self, name: str) -> str:
        """Map a user-given input name to the name the model was built with."""
        if name in self.inputs:
            return name
        try:
            canonical = mods.resolve(name).name
        except KeyError:
            canonical = None
        if canonical in self.inputs:
            return canonical
        raise KeyError(f"input {name!r} is not a modality of this model; it takes {list(self.inputs)}")

    def _check_image(self, name: str, key: str, x: torch.Tensor) -> None:
        embedding = self.encoder_embeddings[key]
        if not torch.is_floating_point(x):
            raise TypeError(f"{name}: expected a float tensor of standardized values, got {x.dtype}")
        if x.dim() != 4:
            raise ValueError(f"{name}: expected (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != embedding.num_channels:
            bands = self.band_names.get(name) or self._default_bands(name)
            listed = f" ({', '.join(bands)})" if bands else ""
            raise ValueError(f"{name}: expected {embedding.num_channels} bands{listed}, got {x.shape[1]} channels")
        patch = self.config.patch_size
        if x.shape[-2] % patch or x.shape[-1] % patch:
            raise ValueError(
                f"{name}: height and width must be multiples of {patch}, got {tuple(x.shape[-2:])}; "
                "pad or crop the input (or use tiled inference for scenes)"
            )

    def _default_bands(self, name: str) -> tuple[str, ...]:
        try:
            return mods.resolve(name).bands
        except KeyError:
            return ()

    def _prepare(self, name: str, key: str, x: torch.Tensor) -> torch.Tensor:
        """Validate one input; tokenize image inputs of token modalities."""
        embedding = self.encoder_embeddings[key]
        if isinstance(embedding, PatchEmbedding):
            self._check_image(name, key, x)
        elif given_as_image(x):
            x = self._tokenize(name, key, x)
        if self.check_finite and torch.is_floating_point(x) and not is_finite(x):
            raise ValueError(
                f"{name}: input contains NaN or inf; fill nodata before the model "
                "(the data modules replace nodata with a fill value and pass a validity mask)"
            )
        if isinstance(embedding, (TokenEmbedding, SequenceEmbedding)):
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= embedding.vocab_size):
                raise ValueError(
                    f"{name}: token ids must lie in [0, {embedding.vocab_size}), got [{int(x.min())}, {int(x.max())}]"
                )
        return x

    def attach_tokenizer(self, name: str, tokenizer: Any) -> None:
        """Tokenize input ``name`` inside the model when it arrives as an image (or lon/lat for COORDS)."""
        key = self.inputs[self._name_of(name)][0]
        self.tokenizers[key] = require_tokenizer_module(name, tokenizer).eval().requires_grad_(False)

    def _tokenize(self, name: str, key: str, x: torch.Tensor) -> torch.Tensor:
        if key not in self.tokenizers:
            raise ValueError(
                f"{name} was given as an image, but this model has no {name} tokenizer; pass token ids "
                f"(integer tensor (B, h, w)) or build with tokenizers, e.g. "
                f"build(..., tokenizers={{'{name}': terratim.build('terramind_v1_tokenizer_{name.lower()}')}})"
            )
        with torch.no_grad():
            encoded = cast(Any, self.tokenizers[key]).encode(x)  # an image tokenizer or the COORDS tokenizer
        return encoded[1] if isinstance(encoded, tuple) else encoded  # image tokenizers: (codes, ids)

    def as_input_dict(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Accept a dict {name: tensor} or a bare tensor (taken as the first declared modality)."""
        if isinstance(x, torch.Tensor):
            return {next(iter(self.inputs)): x}
        if not isinstance(x, Mapping) or not x:
            raise TypeError(f"expected a tensor or a non-empty dict of tensors, got {type(x).__name__}")
        return {self._name_of(name): value for name, value in x.items()}

    def keyed_inputs(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Validated inputs keyed by internal key, in the caller's order."""
        named = self.as_input_dict(x)
        keyed = {self.inputs[name][0]: self._prepare(name, self.inputs[name][0], v) for name, v in named.items()}
        self._check_grids(keyed)
        return keyed

    def _check_grids(self, keyed: Mapping[str, torch.Tensor]) -> None:
        grids = {}
        for key, value in keyed.items():
            if isinstance(self.encoder_embeddings[key], PatchEmbedding):
                grids[key] = tuple(s // self.config.patch_size for s in value.shape[-2:])
            elif isinstance(self.encoder_embeddings[key], TokenEmbedding):
                n = value[0].numel()
                grids[key] = (int(round(n**0.5)),) * 2
        if len(set(grids.values())) > 1:
            detail = ", ".join(f"{mods.KEY_OWNERS.get(k, k)}: {g[0]}x{g[1]}" for k, g in grids.items())
            raise ValueError(f"all image modalities must share one token grid (same H and W), got {detail}")
        batches = {value.shape[0] for value in keyed.values()}
        if len(batches) > 1:
            raise ValueError(f"all inputs must have the same batch size, got {sorted(batches)}")

    def drop_modalities(
        self, keyed: dict[str, torch.Tensor], generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """Training-time modality dropout: k = n - 1 inputs are candidates, each dropped with probability p."""
        names = list(keyed)
        if len(names) < 2 or self.modality_drop_rate <= 0:
            return keyed
        order = torch.randperm(len(names), generator=generator)[: len(names) - 1]
        drop = torch.rand(len(order), generator=generator) < self.modality_drop_rate
        dropped = {names[int(i)] for i, d in zip(order, drop) if d}
        return {key: value for key, value in keyed.items() if key not in dropped}

    # ----------------------------------------------------------------------------------------- merge
    def merge(self, layer: torch.Tensor, spans: list[Span]) -> Any:
        """Merge one layer's (B, N, D) tokens according to ``merge_method``."""
        if self.merge_method is None:
            return layer
        images = [s for s in spans if s.is_image]
        if self.merge_method == "dict":
            names = {key: name for name, (key, _) in self.inputs.items()}
            return {names.get(s.key, s.key): layer[:, s.start : s.stop] for s in spans}
        if not images:
            raise ValueError("mean/max/concat merging needs at least one image modality")
        parts = [layer[:, s.start : s.stop] for s in images]  # each (B, N, D)
        if self.merge_method == "concat":
            return self._concat(parts)
        if len(parts) == 1:
            return parts[0]
        if self.merge_method == "max":
            merged = parts[0]
            for part in parts[1:]:  # pairwise, without stacking a (B, M, N, D) copy
                merged = torch.maximum(merged, part)
            return merged
        merged = parts[0] + parts[1]  # a new tensor, so the sum and mean go on in place (autograd allows it)
        for part in parts[2:]:
            merged.add_(part)
        return merged.div_(len(parts))

    def _concat(self, parts: list[torch.Tensor]) -> torch.Tensor:
        missing = self.out_channels[0] // self.config.dim - len(parts)
        if missing > 0:
            filler = self.missing_mod_token.to(parts[0].dtype).expand_as(parts[0])
            parts = parts + [filler] * missing
        return torch.cat(parts, dim=-1)  # (B, N, M*D)

    # --------------------------------------------------------------------------------------- forward
    def forward(
        self, x: torch.Tensor | Mapping[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> list[Any]:
        """Per-layer features.

        Args:
            x: ``{name: tensor}`` (standardized images (B, C, H, W), or token ids for LULC/NDVI/COORDS) or a
                bare tensor for the first declared modality. Dict order fixes the token order.
            generator: randomness for modality dropout (training only).

        Returns:
            ``encoder_depth`` merged outputs (the last one after the encoder norm); with mean/max each is
            (B, N, D), with concat (B, N, M*D).
        """
        keyed = self.keyed_inputs(x)
        if self.training:
            keyed = self.drop_modalities(keyed, generator)
        tokens, emb, spans = self.embed(keyed)
        layers = self.run_encoder(tokens + emb)
        return [self.merge(layer, spans) for layer in layers]

    # ----------------------------------------------------------------------------------------- bands
    def select_bands(self, bands: Mapping[str, Sequence[str]]) -> None:
        """Rebuild patch embeddings for band subsets by name, copying pretrained columns.

        As TerraTorch's ``select_modality_patch_embed_weights``
        (terratorch/models/backbones/terramind/model/terramind_register.py).
        """
        for name, band_list in bands.items():
            name = self._name_of(name)
            key, new_channels = self.inputs[name]
            modality = mods.key_modality(key) if new_channels is None else None
            if modality is None or modality.kind != "image":
                raise ValueError(f"bands can only be chosen for pretrained raw-image modalities, not {name!r}")
            self._replace_patch_embedding(name, key, modality, list(band_list))

    def _replace_patch_embedding(self, name: str, key: str, modality: mods.Modality, bands: list[str]) -> None:
        old = cast(PatchEmbedding, self.encoder_embeddings[key])
        patch_pixels = self.config.patch_size**2
        new_proj = Linear(patch_pixels * len(bands), self.config.dim, bias=False)
        old_w = old.proj.weight.detach().view(self.config.dim, patch_pixels, old.num_channels)
        new_w = new_proj.weight.detach().view(self.config.dim, patch_pixels, len(bands))
        unknown = []
        for position, band in enumerate(bands):
            if not isinstance(band, str):
                raise TypeError(
                    f"{name}: bands must be given by name (pretrained order: {list(modality.bands)}), got "
                    f"{band!r}; integer indices would silently give an untrained embedding in the reference"
                )
            try:
                new_w[:, :, position] = old_w[:, :, modality.band_index(band)]
            except ValueError:
                unknown.append(band)
        if unknown:
            warnings.warn(
                f"{name}: bands {unknown} are not pretrained {name} bands "
                f"({list(modality.bands)}); their patch weights start untrained",
                stacklevel=3,
            )
        old.proj = new_proj
        old.num_channels = len(bands)
        self.band_names[name] = tuple(bands)


# --------------------------------------------------------------------------------------------- build
def build_backbone(
    size: str | TerraMindConfig | None,
    modalities: Sequence[ModalitySpec] = ("S2L2A",),
    merge_method: MergeMethod = "mean",
    bands: Mapping[str, Sequence[str]] | None = None,
    img_size: int | None = None,
    pretrained: bool = False,
    ckpt_path: str | None = None,
    modality_drop_rate: float = 0.0,
    tokenizers: Mapping[str, nn.Module] | None = None,
    **unknown: Any,
) -> TerraMindBackbone:
    """A backbone of the architecture ``size`` names, or (``size=None``) the one in ``ckpt_path``'s JSON; when
    both are given they must agree. ``img_size`` defaults to the architecture's (224 for the official sizes)."""
    if unknown:
        raise TypeError(f"terramind_v1_{size}: unknown arguments {sorted(unknown)}")
    architecture = terramind_architecture(size, ckpt_path)
    config = architecture.with_(img_size=img_size or architecture.img_size)
    model = TerraMindBackbone(config, modalities, merge_method, modality_drop_rate)
    loaded = terramind_state_dict(size, pretrained, ckpt_path)
    if loaded is not None:
        load_weights(model, model, *loaded)
    for name, tokenizer in (tokenizers or {}).items():
        model.attach_tokenizer(name, tokenizer)
    if bands:
        model.select_bands(bands)
    return model


register_sizes("terramind_v1_{size}", build_backbone, "TerraMind v1 {size} encoder as a backbone (per-layer features).")
