"""Any-to-any generation: ``terramind_v1_{size}_generate``.

``model = build("terramind_v1_base_generate", modalities=["S2L2A"], output_modalities=["LULC"],
pretrained=True, standardize=True)``; ``model(x)["LULC"]`` are 10-class land-cover logits (B, 10, H, W).

The model is the TerraMind network (with a decoder for the outputs) plus a :class:`Sampler`; tokenizers are
built only for what needs them: outputs (decoding ids to pixels) and token inputs given as images.

A call may generate a subset of the built outputs, or reorder them: ``model(x, outputs=["DEM"])`` (the outputs
are chained in the order given). Inputs that lack pretrained bands are refused unless the model is built with
``bands={"S2L2A": [the bands the input holds]}`` and ``fill_missing_bands="mean"``, which fills the absent bands
with their pretraining mean (0 after standardization) and warns that the result degrades.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from terratim import modalities as mods
from terratim.generation.sampler import Sampler, Target
from terratim.generation.settings import GenerationSettings, generation_options, resolve_settings
from terratim.model.backbone import TerraMindBackbone, parse_modalities, require_tokenizer_module
from terratim.model.config import size_config
from terratim.registry import register_sizes
from terratim.weights import load_weights, terramind_state_dict


def input_band_fill(
    inputs: Sequence[str], bands: Mapping[str, Sequence[str]] | None, fill_missing_bands: str | None
) -> dict[str, tuple[str, ...]]:
    """``{input modality: bands the input holds}`` for inputs given with fewer (or reordered) pretrained bands.

    Without ``fill_missing_bands`` an input lacking pretrained bands raises (the default); with ``"mean"`` the
    absent bands are filled with their pretraining mean and a warning names them.
    """
    fill = mods.check_fill_method(fill_missing_bands)
    if not bands:
        if fill is not None:
            raise ValueError(
                "fill_missing_bands needs bands={modality: [the bands the input holds]}, e.g. "
                "bands={'S2L2A': ['BLUE', 'GREEN', 'RED', 'NIR_NARROW', 'SWIR_1', 'SWIR_2']}"
            )
        return {}
    if not isinstance(bands, Mapping):
        raise TypeError(f"bands must be a dict {{modality: [band names]}}, got {type(bands).__name__}")
    names = [mods.resolve(n).name for n in inputs if isinstance(n, str)]
    layout: dict[str, tuple[str, ...]] = {}
    for name, given in bands.items():
        modality = mods.resolve(name)
        if modality.name not in names:
            raise ValueError(f"bands names {modality.name}, which is not an input of this model; inputs: {names}")
        if modality.kind != "image":
            raise ValueError(f"bands: {modality.name} is not a raw image modality; bands apply to {names}")
        missing = modality.missing_bands(given)  # a band the modality lacks raises, naming its bands
        if missing and fill is None:
            raise ValueError(
                f"{modality.name}: pretrained bands {list(missing)} are missing and generation needs "
                "every pretrained band; pass fill_missing_bands='mean' to fill them with their "
                "pretraining mean (results degrade)"
            )
        mods.warn_filled_bands(modality.name, missing)
        layout[modality.name] = tuple(given)
    return layout


def output_keys(output_modalities: Sequence[str], inputs: Mapping[str, tuple[str, int | None]]) -> dict[str, str]:
    """``{user name: token key}`` for the outputs; an output that is also an input raises."""
    if not output_modalities:
        raise ValueError("output_modalities is empty; name at least one modality to generate")
    outputs: dict[str, str] = {}
    input_keys = {key for key, _ in inputs.values()}
    input_modalities = {mods.KEY_OWNERS.get(key) for key in input_keys}
    for name in output_modalities:
        key = mods.token_key(name)
        canonical = mods.resolve(name).name
        if key in input_keys or canonical in input_modalities:
            raise ValueError(
                f"{canonical} is both an input and an output; it is already given, remove it from "
                "output_modalities (or from modalities)"
            )
        outputs[canonical] = key
    return outputs


class TerraMindGenerate(nn.Module):
    """TerraMind any-to-any generation.

    Args:
        network: TerraMind network with encoder embeddings for the inputs and the output token domains and a
            decoder for the outputs.
        outputs: ``{name: token key}`` in generation order.
        settings: sampling and decoding options (default: the reference's); ``model.settings`` may be replaced
            later, e.g. ``model.settings = model.settings.replace(temperature=0.0)``.
        standardize: standardize inputs and de-standardize outputs with the registry statistics.
        offset: ``{name: value}`` added to the mean of that modality (this model only).
        tokenizers: ``{name: tokenizer}`` for outputs (decoding) and token inputs given as images.
        input_bands: ``{input modality: the bands it holds, in order}`` for inputs lacking pretrained bands; the
            absent ones are filled with their pretraining mean (see :func:`input_band_fill`).
    """

    def __init__(
        self,
        network: TerraMindBackbone,
        outputs: Mapping[str, str],
        settings: GenerationSettings | None = None,
        standardize: bool = False,
        offset: Mapping[str, float] | None = None,
        tokenizers: Mapping[str, nn.Module] | None = None,
        input_bands: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        self.settings = resolve_settings(settings)
        self.network = network
        self.outputs = dict(outputs)
        self.standardize = standardize
        self.offset = {mods.resolve(k).name: float(v) for k, v in (offset or {}).items()}
        named = {mods.resolve(k).name: t for k, t in (tokenizers or {}).items()}
        self.tokenizers = nn.ModuleDict({k: require_tokenizer_module(k, t) for k, t in named.items()})
        for tokenizer in self.tokenizers.values():
            tokenizer.eval().requires_grad_(False)
        self.user_inputs = [n for n, (key, _) in network.inputs.items() if n not in self.outputs]
        self.input_bands = {mods.resolve(k).name: tuple(v) for k, v in (input_bands or {}).items()}

    @property
    def chain(self) -> bool:
        """Whether each output is conditioned on the outputs generated before it (``settings.chain``)."""
        return self.settings.chain

    # ------------------------------------------------------------------------------ standardization
    def statistics(self, name: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std (C,) of a modality's input bands, with this model's offset applied."""
        modality = mods.resolve(name)
        mean_values, std_values = modality.statistics(self.input_bands.get(modality.name))
        mean = torch.tensor(mean_values, dtype=like.dtype, device=like.device) + self.offset.get(modality.name, 0)
        std = torch.tensor(std_values, dtype=like.dtype, device=like.device)
        return mean, std

    def _standardize_inputs(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, x in inputs.items():
            known = name in mods.MODALITIES and mods.resolve(name).kind != "sequence"
            if known and torch.is_floating_point(x) and not mods.resolve(name).is_categorical:
                x = mods.normalize(x, *self.statistics(name, x), name)
            out[name] = x
        return out

    def _fill_bands(self, named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Standardized inputs holding ``input_bands`` -> every pretrained band (the absent ones 0, their mean)."""
        for name, given in self.input_bands.items():
            if name in named:
                named[name] = mods.resolve(name).fill_bands(named[name], given, standardized=True)
        return named

    # ----------------------------------------------------------------------------------------- steps
    def select_outputs(self, outputs: Sequence[str] | str | None = None) -> dict[str, str]:
        """``{name: token key}`` of ``outputs`` in the order given (None: every output the model was built for).

        Raises:
            ValueError: for an unknown name, a modality this model was not built to generate, or a repeat; the
                message lists the available outputs.
        """
        if outputs is None:
            return dict(self.outputs)
        available = list(self.outputs)
        names = [outputs] if isinstance(outputs, str) else list(outputs)
        if not names:
            raise ValueError(f"outputs is empty; name at least one of this model's outputs {available}")
        chosen: dict[str, str] = {}
        for name in names:
            try:
                canonical = mods.resolve(name).name
            except (KeyError, TypeError):
                raise ValueError(f"unknown output {name!r}; this model generates {available}") from None
            if canonical not in self.outputs:
                raise ValueError(
                    f"{canonical} is not an output of this model; available outputs: {available} "
                    "(build with output_modalities=[...] to generate others)"
                )
            if canonical in chosen:
                raise ValueError(f"output {canonical} is named twice; available outputs: {available}")
            chosen[canonical] = self.outputs[canonical]
        return chosen

    def targets(self, num_image_tokens: int, outputs: Sequence[str] | str | None = None) -> list[Target]:
        """One record per output, in order (sequences hold at most 4 tokens)."""
        records = []
        for key in self.select_outputs(outputs).values():
            sequence = mods.key_modality(key).kind == "sequence"
            records.append(Target(key, 4 if sequence else num_image_tokens, self.settings, sequence))
        return records

    def _prepared(
        self, x: Mapping[str, torch.Tensor] | torch.Tensor, standardize: bool | None
    ) -> dict[str, torch.Tensor]:
        named = self.network.as_input_dict(x)
        unknown = [n for n in named if n not in self.user_inputs]
        if unknown:
            raise KeyError(f"{unknown} are not inputs of this model; it takes {self.user_inputs}")
        for name, given in self.input_bands.items():
            if name in named and (named[name].dim() < 3 or named[name].shape[-3] != len(given)):
                raise ValueError(
                    f"{name}: this model takes the {len(given)} bands {', '.join(given)} (the other "
                    f"pretrained bands are filled), got shape {tuple(named[name].shape)}"
                )
        if self.standardize if standardize is None else standardize:
            named = self._standardize_inputs(named)
        named = self._fill_bands(named)
        for name, value in named.items():
            if value.dim() == 4 and value.shape[-1] != value.shape[-2]:
                raise ValueError(
                    f"{name}: generation needs square inputs, got {tuple(value.shape[-2:])}; "
                    "use tiled generation (terratim generate) for other shapes"
                )
        return self.network.keyed_inputs(named)

    @torch.no_grad()
    def generate_tokens(
        self,
        x: Mapping[str, torch.Tensor] | torch.Tensor,
        generator: torch.Generator | None = None,
        standardize: bool | None = None,
        return_states: bool = False,
        outputs: Sequence[str] | str | None = None,
    ) -> dict[str, Any]:
        """Generated token ids ``{name: (B, h, w)}`` (sequences (B, L)), without decoding to pixels.

        Args:
            x: inputs ``{name: (B, C, H, W)}``, or a bare tensor for the first input.
            generator: all sampling randomness.
            standardize: standardize the inputs (default: the model's ``standardize``).
            return_states: return each output's :class:`TargetState` (ids, first-step logits) instead of ids.
            outputs: the outputs to generate, in this order (default: every output the model was built for); a
                subset or a new order of them, chained in the order given unless ``settings.chain`` is False.
        """
        chosen = self.select_outputs(outputs)
        keyed = self._prepared(x, standardize)
        grid = self._grid(keyed)
        sampler = Sampler(self.network, record_logits=return_states)
        states = sampler.generate(keyed, self.targets(grid * grid, list(chosen)), generator, self.settings.chain)
        if return_states:
            return {name: states[key] for name, key in chosen.items()}
        tokens = {}
        for name, key in chosen.items():
            ids = states[key].ids
            tokens[name] = ids if mods.key_modality(key).kind == "sequence" else ids.view(-1, grid, grid)
        return tokens

    def _grid(self, keyed: Mapping[str, torch.Tensor]) -> int:
        for key, value in keyed.items():
            if key not in mods.KEY_OWNERS or not mods.is_token_key(key):  # pixels
                return value.shape[-1] // self.network.config.patch_size
            if mods.is_image_token_key(key):
                return int(round(value[0].numel() ** 0.5))
        return self.network.config.grid

    def decode(
        self,
        tokens: Mapping[str, torch.Tensor],
        timesteps: int | None = None,
        generator: torch.Generator | None = None,
        standardize: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Token ids -> pixels: LULC logits (B, 10, H, W), continuous modalities (B, C, H, W), coords (B, 2)."""
        physical = self.standardize if standardize is None else standardize
        return decode_tokens(
            tokens,
            dict(self.tokenizers),
            timesteps or self.settings.timesteps,
            generator,
            physical_units=physical,
            offset=self.offset,
        )

    def forward(
        self,
        x: Mapping[str, torch.Tensor] | torch.Tensor,
        standardize: bool | None = None,
        timesteps: int | None = None,
        generator: torch.Generator | None = None,
        outputs: Sequence[str] | str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Generate the outputs (default: all; or ``outputs``, in that order) and decode them: ``{name: tensor}``."""
        tokens = self.generate_tokens(x, generator, standardize, outputs=outputs)
        return self.decode(tokens, timesteps, generator, standardize)


@torch.no_grad()
def decode_tokens(
    tokens: Mapping[str, torch.Tensor],
    tokenizers: Mapping[str, nn.Module],
    timesteps: int = 10,
    generator: torch.Generator | None = None,
    physical_units: bool = True,
    offset: Mapping[str, float] | None = None,
    patch_size: int = 16,
) -> dict[str, torch.Tensor]:
    """Decode token ids with modality tokenizers.

    Args:
        tokens: ``{name: ids}``, image ids (B, h, w), sequence ids (B, L).
        tokenizers: ``{name: tokenizer}`` covering every name in ``tokens``.
        timesteps: diffusion steps for continuous modalities.
        generator: diffusion noise.
        physical_units: de-standardize continuous outputs with the registry statistics (plus ``offset``).
        offset: ``{name: value}`` added to the registry mean.
        patch_size: pixels per token side.

    Returns:
        ``{name: tensor}``: LULC as 10-class logits (B, 10, H, W), other images (B, C, H, W), coords (B, 2).
    """
    out = {}
    for name, ids in tokens.items():
        modality = mods.resolve(name)
        if modality.name not in tokenizers:
            raise ValueError(
                f"no {modality.name} tokenizer to decode its tokens; pass tokenizers={{'{modality.name}':"
                f" terratim.build('terramind_v1_tokenizer_{modality.name.lower()}', ...)}} "
                "or build with pretrained=True"
            )
        tokenizer: Any = tokenizers[modality.name]
        if modality.kind == "sequence":
            out[modality.name] = tokenizer.decode(ids)
            continue
        size = (ids.shape[-2] * patch_size, ids.shape[-1] * patch_size)
        image = tokenizer.decode_tokens(ids, image_size=size, timesteps=timesteps, generator=generator)
        if not modality.is_categorical and physical_units:
            shift = (offset or {}).get(modality.name, 0.0)
            image = modality.destandardize(image) + shift
        out[modality.name] = image
    return out


def build_tokenizers(names: Sequence[str], pretrained: bool, decoder: bool = True) -> dict[str, nn.Module]:
    """The official tokenizers for ``names`` (only those that have one); ``decoder=False`` builds encoders only."""
    from terratim.registry import build

    tokenizers: dict[str, nn.Module] = {}
    for name in names:
        modality = mods.resolve(name)
        if modality.kind == "sequence":
            if pretrained:  # the WordPiece vocabulary has no random initialisation
                from terratim.tokenizers.coords import CoordsTokenizer

                tokenizers[modality.name] = CoordsTokenizer.pretrained()
        elif modality.tokenizer_file is not None:
            tokenizers[modality.name] = build(
                f"terramind_v1_tokenizer_{modality.name.lower()}", pretrained=pretrained, decoder=decoder
            )
    return tokenizers


@generation_options()
def build_generate(
    size: str,
    modalities: Sequence[str],
    output_modalities: Sequence[str],
    settings: GenerationSettings | None = None,
    standardize: bool = False,
    offset: Mapping[str, float] | None = None,
    img_size: int = 224,
    pretrained: bool = False,
    ckpt_path: str | None = None,
    tokenizers: Mapping[str, nn.Module] | None = None,
    build_tokenizers_for_outputs: bool = True,
    bands: Mapping[str, Sequence[str]] | None = None,
    fill_missing_bands: str | None = None,
    **unknown: Any,
) -> TerraMindGenerate:
    """Build a generation model (encoder-decoder) and the tokenizers it needs.

    Sampling options come as ``settings=GenerationSettings(...)`` and/or as keywords named after its fields
    (``decoding_steps=``, ``temperature=`` or ``temps=``, ``top_k=``, ``top_p=``, ``scheme=``, ``token_schedule=``,
    ``temperature_schedule=``, ``cfg_scale=``, ``chain=``, ``timesteps=``); keywords override ``settings``.

    ``bands={"S2L2A": [...]}`` names the bands an input holds (in order); pretrained bands it lacks raise unless
    ``fill_missing_bands="mean"``, which fills them with their pretraining mean and warns (results degrade).
    """
    if unknown:
        raise TypeError(f"terramind_v1_{size}_generate: unknown arguments {sorted(unknown)}")
    input_bands = input_band_fill(modalities, bands, fill_missing_bands)
    config = size_config(size).with_(img_size=img_size)
    inputs = parse_modalities(modalities)
    outputs = output_keys(output_modalities, inputs)
    network = TerraMindBackbone(
        config, modalities, merge_method=None, token_inputs=outputs, decoder_keys=list(outputs.values())
    )
    loaded = terramind_state_dict(size, pretrained, ckpt_path)
    if loaded is not None:
        load_weights(network, network, *loaded)
    network.eval().requires_grad_(False)
    given = dict(tokenizers or {})
    decoded = [n for n in outputs if build_tokenizers_for_outputs and n not in given]
    encoded = [n for n, (key, _) in inputs.items() if mods.is_image_token_key(key) and n not in given]
    given.update(build_tokenizers(decoded, pretrained))
    given.update(build_tokenizers(encoded, pretrained, decoder=False))  # token inputs are only encoded
    input_tokenizers = {n: t for n, t in given.items() if n in inputs and mods.is_image_token_key(inputs[n][0])}
    for name, tokenizer in input_tokenizers.items():
        network.attach_tokenizer(name, tokenizer)
    output_tokenizers = {n: t for n, t in given.items() if n in outputs}
    return TerraMindGenerate(network, outputs, settings, standardize, offset, output_tokenizers, input_bands)


register_sizes(
    "terramind_v1_{size}_generate",
    build_generate,
    "TerraMind v1 {size} any-to-any generation (encoder-decoder + tokenizers).",
)
