"""Registry entries ``terramind_v1_tokenizer_<mod>`` and the strict loading of ``TerraMind_Tokenizer_<MOD>.pt``.

Official tokenizer files are a flat state dict with the keys our modules carry (spec §7.6): ``encoder.*``,
``quant_proj.*``, ``decoder.*`` and, for LULC, ``post_quant_proj.*``. At build time everything except the decoder
is loaded strictly, and the decoder's keys and shapes are checked against a decoder built on the ``meta`` device
(no memory). The decoder itself is built and filled from the same file the first time it is used.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from terratim.modalities import resolve
from terratim.registry import register
from terratim.tokenizers.model import FSQTokenizer, TokenizerConfig, make_tokenizer
from terratim.weights import (
    CheckpointError,
    LoadReport,
    convert_state_dict,
    hub_file,
    load_into,
    read_config,
    read_state_dict,
    save_safetensors,
)

TOKENIZER_MODALITIES = ("S2L2A", "S1GRD", "S1RTC", "DEM", "LULC", "NDVI")
DECODER_PREFIX = "decoder."


def _decoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(DECODER_PREFIX) :]: v for k, v in state.items() if k.startswith(DECODER_PREFIX)}


def _check_decoder_layout(model: FSQTokenizer, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly compare the file's decoder keys with a decoder built on the meta device."""
    with torch.device("meta"):
        decoder = model.make_decoder()
    file_state = _decoder_state(state)
    _, report = convert_state_dict(file_state, decoder)
    report.missing.extend(k for k in decoder.state_dict() if k not in file_state)
    if not report.ok:
        for keys in (report.missing, report.unexpected, report.mismatched):
            keys[:] = [DECODER_PREFIX + k for k in keys]  # name keys as they appear in the file
        raise CheckpointError(f"checkpoint {source}: the decoder does not fit {type(decoder).__name__}:\n"
                              f"{report.describe()}")  # fmt: skip


def _decoder_loader(path: Path):
    def load(decoder: nn.Module) -> None:
        converted, report = convert_state_dict(_decoder_state(read_state_dict(path)), decoder)
        load_into(decoder, converted, report, source=f"{path} (decoder)")

    return load


def load_tokenizer_weights(model: FSQTokenizer, path: str | os.PathLike, strict: bool = True) -> LoadReport:
    """Load an official-layout (or converted) tokenizer file into ``model``; the decoder follows lazily."""
    path = Path(path)
    state = read_state_dict(path)
    converted, report = convert_state_dict(state, model, keep=lambda key: not key.startswith(DECODER_PREFIX))
    report.ignored.clear()  # the decoder keys, checked separately below
    load_into(model, converted, report, source=str(path), strict=strict)
    if strict:
        _check_decoder_layout(model, state, str(path))
    if model.has_decoder:
        _decoder_loader(path)(model.decoder)
    model.decoder_loader = _decoder_loader(path)
    return report


def build_tokenizer(
    modality: str,
    pretrained: bool = False,
    ckpt_path: str | os.PathLike | None = None,
    config: TokenizerConfig | dict | None = None,
    strict: bool = True,
) -> FSQTokenizer:
    """Build a modality's tokenizer, optionally with weights.

    Args:
        modality: S2L2A, S1GRD, S1RTC, DEM, LULC or NDVI (aliases accepted).
        pretrained: download (or take from the hub cache) the official ``TerraMind_Tokenizer_<MOD>.pt``.
        ckpt_path: a local official ``.pt`` or a converted ``.safetensors`` (its ``.json`` config, if present,
            gives the architecture); wins over ``pretrained``.
        config: the architecture; default the released one (or the config saved next to ``ckpt_path``).
        strict: every key and shape must match.
    """
    mod = resolve(modality)
    if mod.name not in TOKENIZER_MODALITIES:
        raise ValueError(f"{mod.name} has no TerraMind v1 image tokenizer; available: {TOKENIZER_MODALITIES}")
    path = Path(ckpt_path) if ckpt_path is not None else None
    if path is None and pretrained:
        path = hub_file(mod.tokenizer_repo, mod.tokenizer_file)
    if isinstance(config, dict):
        config = TokenizerConfig.from_dict(config)
    if config is None and path is not None and path.is_file() and (saved := read_config(path)) is not None:
        config = TokenizerConfig.from_dict(saved)
    config = config or TokenizerConfig.for_modality(mod.name)
    if resolve(config.modality).name != mod.name:
        raise ValueError(f"config is for {config.modality}, but a {mod.name} tokenizer was asked for")
    model = make_tokenizer(config)
    if path is not None:
        load_tokenizer_weights(model, path, strict=strict)
    return model.eval()


def save_tokenizer(model: FSQTokenizer, path: str | os.PathLike) -> Path:
    """Write all weights (the decoder included) as ``.safetensors`` with the config as ``.json`` beside it."""
    path = Path(path)
    state = {k: v for k, v in nn.Module.state_dict(_with_decoder(model)).items()}
    save_safetensors(state, path, config=model.config.to_dict())
    return path


def _with_decoder(model: FSQTokenizer) -> FSQTokenizer:
    model.decoder  # noqa: B018 - builds (and loads) the decoder
    return model


def _register(mod: str) -> None:
    name = f"terramind_v1_tokenizer_{mod.lower()}"
    kind = "ViT decoder to class logits" if mod == "LULC" else "diffusion decoder (DDIM)"

    def builder(pretrained: bool = False, ckpt_path: str | os.PathLike | None = None, **kwargs) -> FSQTokenizer:
        return build_tokenizer(mod, pretrained=pretrained, ckpt_path=ckpt_path, **kwargs)

    builder.__doc__ = f"TerraMind v1 {mod} FSQ-VAE tokenizer ({kind})."
    builder.__name__ = name
    register(name)(builder)


for _mod in TOKENIZER_MODALITIES:
    _register(_mod)
