"""``terramind_sim_micro*``: the small TerraMind the project pretrained itself, on SIMULATED data only.

The official weights need a download; this model ships inside the package (``terratim/assets/sim_micro``) so
that pretraining, generation, TiM and fine-tuning can be shown end to end on any machine, offline. It was
trained with ``terratim train-tokenizer`` and ``terratim pretrain`` on :mod:`terratim.data.sim` with the
configs in ``configs/pretrain/sim_micro*.yaml`` (see docs/pretraining.md). It knows the simulated world, not
the real one: use it to learn and test the tools, never for real-world results.

Registered names (same arguments as the ``terramind_v1_*`` builders, ``pretrained=True`` loads the bundle):

* ``terramind_sim_micro`` - backbone;
* ``terramind_sim_micro_generate`` - any-to-any generation (inputs S1GRD, DEM, LULC; outputs LULC, DEM);
* ``terramind_sim_micro_tim`` - Thinking-in-Modalities backbone;
* ``terramind_sim_micro_tokenizer_{lulc,dem}`` - its tokenizers.

The architecture is registered as the size ``"sim_micro"`` (:func:`terratim.model.config.register_size`), so
the regular creation paths (backbone, generation, TiM) build and load it strictly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.nn as nn

from terratim.model.config import TerraMindConfig, register_size
from terratim.registry import register

SIZE = "sim_micro"
SIM_MICRO = TerraMindConfig(dim=64, encoder_depth=4, decoder_depth=2, num_heads=4, mlp_hidden=256,
                            gated_mlp=False, bias=True, patch_size=16, img_size=64)  # fmt: skip
register_size(SIZE, SIM_MICRO)
ASSETS = Path(__file__).resolve().parent / "assets" / "sim_micro"
CHECKPOINT = ASSETS / "terramind_sim_micro.safetensors"
TOKENIZER_MODALITIES = ("LULC", "DEM")
IMG_SIZE = SIM_MICRO.img_size


def tokenizer_path(modality: str) -> Path:
    return ASSETS / f"tokenizer_{modality.lower()}.safetensors"


def _bundled(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"the bundled simulated-data model file {path} is missing; rebuild it with the commands in "
            "docs/pretraining.md (terratim train-tokenizer / terratim pretrain with configs/pretrain/sim_micro*)"
        )
    return path


def _checkpoint(pretrained: bool, ckpt_path: str | os.PathLike | None) -> str | None:
    if ckpt_path is not None:
        return str(ckpt_path)
    return str(_bundled(CHECKPOINT)) if pretrained else None


def load_decoder(tokenizer: nn.Module) -> nn.Module:
    """Build and fill a tokenizer's decoder now (so decoding needs no lazy construction later)."""
    if "decoder" not in tokenizer._modules:
        decoder = tokenizer.make_decoder()
        if tokenizer.decoder_loader is not None:
            tokenizer.decoder_loader(decoder)
        tokenizer._modules["decoder"] = decoder.eval()
    return tokenizer


def build_sim_tokenizer(modality: str, pretrained: bool = True, ckpt_path: str | os.PathLike | None = None,
                        **kwargs: Any) -> nn.Module:  # fmt: skip
    """A tokenizer of the bundled model (architecture from the ``.json`` next to the weights)."""
    from terratim.tokenizers.build import build_tokenizer

    if ckpt_path is None and not pretrained:
        raise ValueError("the simulated-data tokenizers exist only as trained files; use pretrained=True or ckpt_path")
    path = ckpt_path if ckpt_path is not None else _bundled(tokenizer_path(modality))
    return load_decoder(build_tokenizer(modality, ckpt_path=path, **kwargs))


def _default_tokenizers(names: list[str], given: Mapping[str, nn.Module] | None) -> dict[str, nn.Module]:
    from terratim import modalities as mods

    tokenizers = dict(given or {})
    have = {mods.resolve(n).name for n in tokenizers}
    for name in names:
        canonical = mods.resolve(name).name
        if canonical in TOKENIZER_MODALITIES and canonical not in have:
            tokenizers[canonical] = build_sim_tokenizer(canonical)
    return tokenizers


@register("terramind_sim_micro")
def terramind_sim_micro(pretrained: bool = False, ckpt_path: str | os.PathLike | None = None,
                        img_size: int = IMG_SIZE, **kwargs: Any) -> nn.Module:  # fmt: skip
    """Small TerraMind pretrained on simulated data (bundled): backbone."""
    from terratim.model.backbone import build_backbone

    return build_backbone(SIZE, img_size=img_size, ckpt_path=_checkpoint(pretrained, ckpt_path), **kwargs)


@register("terramind_sim_micro_generate")
def terramind_sim_micro_generate(
    modalities: Any = ("S1GRD",), output_modalities: Any = ("LULC",), pretrained: bool = False,
    ckpt_path: str | os.PathLike | None = None, img_size: int = IMG_SIZE,
    tokenizers: Mapping[str, nn.Module] | None = None, **kwargs: Any,
) -> nn.Module:  # fmt: skip
    """Small TerraMind pretrained on simulated data (bundled): any-to-any generation."""
    from terratim.generation.generate import build_generate

    checkpoint = _checkpoint(pretrained, ckpt_path)
    if checkpoint is not None and pretrained and tokenizers is None:
        tokenizers = _default_tokenizers([*modalities, *output_modalities], None)
    return build_generate(SIZE, list(modalities), list(output_modalities), img_size=img_size, ckpt_path=checkpoint,
                          tokenizers=tokenizers, build_tokenizers_for_outputs=False, **kwargs)  # fmt: skip


@register("terramind_sim_micro_tim")
def terramind_sim_micro_tim(
    modalities: Any = ("S1GRD",), tim_modalities: Any = ("LULC",), pretrained: bool = False,
    ckpt_path: str | os.PathLike | None = None, img_size: int = IMG_SIZE, **kwargs: Any,
) -> nn.Module:  # fmt: skip
    """Small TerraMind pretrained on simulated data (bundled): Thinking-in-Modalities backbone."""
    from terratim.tim import build_tim

    return build_tim(SIZE, list(modalities), list(tim_modalities), img_size=img_size,
                     ckpt_path=_checkpoint(pretrained, ckpt_path), **kwargs)  # fmt: skip


def _register_tokenizers() -> None:
    for modality in TOKENIZER_MODALITIES:

        def builder(modality: str = modality, **kwargs: Any) -> nn.Module:
            return build_sim_tokenizer(modality, **kwargs)

        builder.__doc__ = f"{modality} tokenizer of the simulated-data TerraMind (bundled)."
        register(f"terramind_sim_micro_tokenizer_{modality.lower()}")(builder)


_register_tokenizers()
