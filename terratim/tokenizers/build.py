"""Registry entries ``terramind_v1_tokenizer_<mod>`` and the strict loading of ``TerraMind_Tokenizer_<MOD>.pt``.

Official tokenizer files are a flat state dict whose keys are our modules' names: ``encoder.*``, ``quant_proj.*``,
``decoder.*`` and, for LULC, ``post_quant_proj.*`` (the layout of TerraTorch's
``terratorch/models/backbones/terramind/tokenizer/vqvae.py`` models). A tokenizer is built with its decoder side or
without it (``decoder=False``); the file is read once, at build time, and every key of the parts built must be in
it with the right shape. The keys of a decoder that was not built are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from terratim.modalities import check_fill_method, resolve
from terratim.registry import register
from terratim.tokenizers.model import FSQTokenizer, TokenizerConfig, make_tokenizer
from terratim.weights import (
    LoadReport,
    convert_state_dict,
    hub_file,
    load_into,
    read_config,
    read_state_dict,
    save_safetensors,
)

TOKENIZER_MODALITIES = ("S2L2A", "S1GRD", "S1RTC", "DEM", "LULC", "NDVI")


def load_tokenizer_weights(model: FSQTokenizer, path: str | os.PathLike, strict: bool = True) -> LoadReport:
    """Load an official-layout (or converted) tokenizer file into ``model``, reading it once.

    Every key of the parts ``model`` has must be in the file (with ``strict``); the decoder-side keys of a
    tokenizer built without its decoder are reported as ignored.
    """
    path = Path(path)
    state = read_state_dict(path)
    take = (lambda key: True) if model.has_decoder else (lambda key: not model.is_decoder_key(key))
    converted, report = convert_state_dict(state, model, keep=take)
    del state  # the decoder tensors of an encode-only build are freed here
    load_into(model, converted, report, source=str(path), strict=strict)
    return report


def build_tokenizer(
    modality: str,
    pretrained: bool = False,
    ckpt_path: str | os.PathLike | None = None,
    config: TokenizerConfig | dict | None = None,
    strict: bool = True,
    decoder: bool = True,
    bands: Sequence[str] | None = None,
    fill_missing_bands: str | None = None,
) -> FSQTokenizer:
    """Build a modality's tokenizer, optionally with weights.

    Args:
        modality: S2L2A, S1GRD, S1RTC, DEM, LULC or NDVI (aliases accepted).
        pretrained: download (or take from the hub cache) the official ``TerraMind_Tokenizer_<MOD>.pt``.
        ckpt_path: a local official ``.pt`` or a converted ``.safetensors`` (its ``.json`` config, if present,
            gives the architecture); wins over ``pretrained``.
        config: the architecture; default the released one (or the config saved next to ``ckpt_path``).
        strict: every key and shape of the parts built must match.
        decoder: build (and load) the decoder; ``False`` for encode-only use (token inputs, pretraining targets),
            which never allocates it (0.75 GB for the diffusion UNet in float32). Decoding then raises an error.
        bands: the bands inputs hold, in their order, when not the pretrained ones (e.g. 6-band HLS as S2L2A).
        fill_missing_bands: ``"mean"`` fills pretrained bands absent from ``bands`` with their pretraining mean
            (0 after standardization), with a warning; by default a missing band is an error.
    """
    mod = resolve(modality)
    if mod.name not in TOKENIZER_MODALITIES:
        raise ValueError(f"{mod.name} has no TerraMind v1 image tokenizer; available: {TOKENIZER_MODALITIES}")
    path = Path(ckpt_path) if ckpt_path is not None else None
    if path is None and pretrained:
        if mod.tokenizer_repo is None or mod.tokenizer_file is None:
            raise ValueError(f"{mod.name} names no hub file for its tokenizer weights; pass ckpt_path")
        path = hub_file(mod.tokenizer_repo, mod.tokenizer_file)
    if isinstance(config, dict):
        config = TokenizerConfig.from_dict(config)
    if config is None and path is not None and path.is_file() and (saved := read_config(path)) is not None:
        config = TokenizerConfig.from_dict(saved)
    config = config or TokenizerConfig.for_modality(mod.name)
    if resolve(config.modality).name != mod.name:
        raise ValueError(f"config is for {config.modality}, but a {mod.name} tokenizer was asked for")
    model = make_tokenizer(config, decoder=decoder)
    if path is not None:
        load_tokenizer_weights(model, path, strict=strict)
    if bands is None and check_fill_method(fill_missing_bands) is not None:
        raise ValueError(f"fill_missing_bands needs bands=[the bands the {mod.name} input holds]")
    if bands is not None:
        model.check_fillable()
        missing = mod.missing_bands(bands)
        if missing and fill_missing_bands is None:
            raise ValueError(
                f"{mod.name}: pretrained bands {list(missing)} are missing; pass fill_missing_bands="
                "'mean' to fill them with their pretraining mean (results degrade)"
            )
        model.fill_missing_bands(bands, fill_missing_bands or "mean")
    return model.eval()


def save_tokenizer(model: FSQTokenizer, path: str | os.PathLike) -> Path:
    """Write all weights (the decoder included) as ``.safetensors`` with the config as ``.json`` beside it."""
    if not model.has_decoder:
        raise ValueError(
            f"this {model.modality.name} tokenizer was built without its decoder (decoder=False); "
            "build it with decoder=True to save a complete tokenizer file"
        )
    path = Path(path)
    save_safetensors(model.state_dict(), path, config=model.config.to_dict())
    return path


def _register(mod: str) -> None:
    name = f"terramind_v1_tokenizer_{mod.lower()}"
    kind = "ViT decoder to class logits" if resolve(mod).is_categorical else "diffusion decoder (DDIM)"

    def builder(pretrained: bool = False, ckpt_path: str | os.PathLike | None = None, **kwargs) -> FSQTokenizer:
        return build_tokenizer(mod, pretrained=pretrained, ckpt_path=ckpt_path, **kwargs)

    builder.__doc__ = f"TerraMind v1 {mod} FSQ-VAE tokenizer ({kind}); decoder=False builds it encode-only."
    builder.__name__ = name
    register(name)(builder)


for _mod in TOKENIZER_MODALITIES:
    _register(_mod)
