"""``terramind_sim_micro*``: the small TerraMind the project pretrained itself, on SIMULATED data only.

The official weights need a download; this model ships inside the package (``terratim/assets/sim_micro``) so
that pretraining, generation, TiM and fine-tuning can be shown end to end on any machine, offline. It was
trained with ``terratim train-tokenizer`` and ``terratim pretrain`` on :mod:`terratim.data.sim` with the
configs in ``configs/pretrain/sim_micro*.yaml`` (see docs/pretraining.md). It knows the simulated world, not
the real one: use it to learn and test the tools, never for real-world results.

Registered names (same arguments as the ``terramind_v1_*`` builders, ``pretrained=True`` loads the bundle):

* ``terramind_sim_micro`` - backbone;
* ``terramind_sim_micro_generate`` - generation (inputs S1GRD, DEM, LULC; output LULC);
* ``terramind_sim_micro_tim`` - Thinking-in-Modalities backbone (imagines LULC);
* ``terramind_sim_micro_tokenizer_{lulc,dem}`` - its tokenizers.

DEM is an input and a pretraining target, but not an output: the weights have a decoder head for DEM tokens and
no encoder embedding of them, and generation feeds the tokens it decodes back through the encoder (decoding in
several steps, chained outputs, TiM). :func:`generatable` reads what a checkpoint can generate from its keys;
asking for anything else is a ``ValueError`` that lists it.

With ``pretrained=True`` the builders use the bundled tokenizers for every output and token input that the
caller did not pass: nothing is downloaded.

The architecture is read from the bundled ``terramind_sim_micro.json`` (or from the JSON next to a ``ckpt_path``
that has one) and handed to the regular creation paths (backbone, generation, TiM), which build and load it
strictly. No size table is extended. Each builder declares the keyword arguments it takes (those of the creation
path it hands over to), so ``terratim.build`` and the fine-tuning factory refuse any other by name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.nn as nn

from terratim import modalities as mods
from terratim.generation.generate import build_generate
from terratim.model.backbone import build_backbone
from terratim.model.config import TerraMindConfig
from terratim.registry import named_parameters, register
from terratim.tim import build_tim
from terratim.tokenizers.build import build_tokenizer

ASSETS = Path(__file__).resolve().parent / "assets" / "sim_micro"
CHECKPOINT = ASSETS / "terramind_sim_micro.safetensors"
TOKENIZER_MODALITIES = ("LULC", "DEM")
# The keyword arguments each builder takes: those of the creation path it hands over to, less what it sets itself.
BACKBONE_PARAMETERS = named_parameters(build_backbone, skip=1)
GENERATE_PARAMETERS = named_parameters(build_generate, skip=1) - {"build_tokenizers_for_outputs"}
TIM_PARAMETERS = named_parameters(build_tim, skip=1)
TOKENIZER_PARAMETERS = named_parameters(build_tokenizer, skip=1)


def bundled_architecture() -> TerraMindConfig:
    """The bundled model's architecture, from the JSON next to its weights."""
    from terratim.weights import checkpoint_config

    saved = checkpoint_config(_bundled(CHECKPOINT))
    if saved is None:
        raise FileNotFoundError(f"the bundled model's config {CHECKPOINT.with_suffix('.json')} is missing")
    return saved.architecture


def __getattr__(name: str) -> Any:
    """``SIM_MICRO`` (the architecture) and ``IMG_SIZE`` (its training image size), read when first asked for."""
    if name == "SIM_MICRO":
        return bundled_architecture()
    if name == "IMG_SIZE":
        return bundled_architecture().img_size
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tokenizer_path(modality: str) -> Path:
    """The bundled tokenizer file of ``modality``."""
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


def _architecture(checkpoint: str | None, img_size: int | None) -> tuple[TerraMindConfig, int]:
    """The bundled architecture (which a ``ckpt_path``'s own JSON must agree with) and the image size to build."""
    from terratim.weights import terramind_architecture

    architecture = terramind_architecture(bundled_architecture(), checkpoint)
    return architecture, img_size or architecture.img_size


def build_sim_tokenizer(
    modality: str,
    pretrained: bool = True,
    ckpt_path: str | os.PathLike | None = None,
    decoder: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """A tokenizer of the bundled model (architecture from the ``.json`` next to the weights), read once.

    ``decoder=False`` builds it encode-only (the token inputs of a backbone or TiM model).
    """
    if ckpt_path is None and not pretrained:
        raise ValueError("the simulated-data tokenizers exist only as trained files; use pretrained=True or ckpt_path")
    path = ckpt_path if ckpt_path is not None else _bundled(tokenizer_path(modality))
    return build_tokenizer(modality, ckpt_path=path, decoder=decoder, **kwargs)


def _default_tokenizers(
    decoded: list[str], encoded: list[str], given: Mapping[str, nn.Module] | None
) -> dict[str, nn.Module]:
    """``given`` completed with the bundled tokenizer of every name in ``decoded`` (built with its decoder) and
    ``encoded`` (encode-only) that it lacks."""
    tokenizers = dict(given or {})
    have = {mods.resolve(n).name for n in tokenizers}
    outputs = {mods.resolve(n).name for n in decoded}
    for name in [*decoded, *encoded]:
        canonical = mods.resolve(name).name
        if canonical in TOKENIZER_MODALITIES and canonical not in have:
            tokenizers[canonical] = build_sim_tokenizer(canonical, decoder=canonical in outputs)
            have.add(canonical)
    return tokenizers


def _token_inputs(modalities: Any) -> list[str]:
    """The inputs read as tokens (class maps): their tokenizers only encode."""
    from terratim.model.backbone import parse_modalities

    return [n for n, (key, _) in parse_modalities(list(modalities)).items() if mods.is_image_token_key(key)]


def generatable(checkpoint: str | os.PathLike) -> list[str]:
    """Modalities a ``.safetensors`` TerraMind checkpoint can generate: those with a decoder token head *and* an
    encoder token embedding (generation feeds decoded tokens back through the encoder)."""
    from safetensors import safe_open

    with safe_open(str(checkpoint), "pt") as f:
        keys = list(f.keys())
    heads = {k.split(".")[1] for k in keys if k.startswith("decoder_embeddings.tok_")}
    embedded = {k.split(".")[1] for k in keys if k.startswith("encoder_embeddings.tok_")}
    return sorted(mods.key_modality(key).name for key in heads & embedded if key in mods.KEY_OWNERS)


def check_outputs(model: str, checkpoint: str | None, outputs: Any) -> None:
    """Refuse outputs the checkpoint's weights cannot generate, listing those it can."""
    if checkpoint is None or not str(checkpoint).endswith(".safetensors"):
        return  # random weights build anything; other files are checked by the strict loader
    can = generatable(checkpoint)
    cannot = [mods.resolve(n).name for n in outputs if mods.resolve(n).name not in can]
    if cannot:
        raise ValueError(
            f"{model} cannot generate {', '.join(cannot)}: its weights ({Path(checkpoint).name}) have no encoder "
            f"embedding of {', '.join(cannot)} tokens, which generation feeds its decoded tokens back through. "
            f"It can generate: {', '.join(can) or 'nothing'}"
        )


@register("terramind_sim_micro", parameters=BACKBONE_PARAMETERS)
def terramind_sim_micro(
    pretrained: bool = False, ckpt_path: str | os.PathLike | None = None, img_size: int | None = None, **kwargs: Any
) -> nn.Module:
    """Small TerraMind pretrained on simulated data (bundled): backbone."""
    checkpoint = _checkpoint(pretrained, ckpt_path)
    architecture, img_size = _architecture(checkpoint, img_size)
    return build_backbone(architecture, img_size=img_size, ckpt_path=checkpoint, **kwargs)


@register("terramind_sim_micro_generate", parameters=GENERATE_PARAMETERS)
def terramind_sim_micro_generate(
    modalities: Any = ("S1GRD",),
    output_modalities: Any = ("LULC",),
    pretrained: bool = False,
    ckpt_path: str | os.PathLike | None = None,
    img_size: int | None = None,
    tokenizers: Mapping[str, nn.Module] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Small TerraMind pretrained on simulated data (bundled): any-to-any generation."""
    checkpoint = _checkpoint(pretrained, ckpt_path)
    architecture, img_size = _architecture(checkpoint, img_size)
    check_outputs("terramind_sim_micro_generate", checkpoint, output_modalities)
    if pretrained:
        tokenizers = _default_tokenizers(list(output_modalities), _token_inputs(modalities), tokenizers)
    return build_generate(
        architecture,
        list(modalities),
        list(output_modalities),
        img_size=img_size,
        ckpt_path=checkpoint,
        tokenizers=tokenizers,
        build_tokenizers_for_outputs=False,
        **kwargs,
    )


@register("terramind_sim_micro_tim", parameters=TIM_PARAMETERS)
def terramind_sim_micro_tim(
    modalities: Any = ("S1GRD",),
    tim_modalities: Any = ("LULC",),
    pretrained: bool = False,
    ckpt_path: str | os.PathLike | None = None,
    img_size: int | None = None,
    tokenizers: Mapping[str, nn.Module] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Small TerraMind pretrained on simulated data (bundled): Thinking-in-Modalities backbone."""
    checkpoint = _checkpoint(pretrained, ckpt_path)
    architecture, img_size = _architecture(checkpoint, img_size)
    inputs = {mods.resolve(n).name for n in modalities}
    imagined = [n for n in tim_modalities if mods.resolve(n).name not in inputs]
    check_outputs("terramind_sim_micro_tim", checkpoint, imagined)
    if pretrained:
        tokenizers = _default_tokenizers([], _token_inputs(modalities), tokenizers)
    return build_tim(
        architecture,
        list(modalities),
        list(tim_modalities),
        img_size=img_size,
        ckpt_path=checkpoint,
        tokenizers=tokenizers,
        **kwargs,
    )


def _register_tokenizers() -> None:
    for modality in TOKENIZER_MODALITIES:

        def builder(modality: str = modality, **kwargs: Any) -> nn.Module:
            return build_sim_tokenizer(modality, **kwargs)

        builder.__doc__ = f"{modality} tokenizer of the simulated-data TerraMind (bundled)."
        register(f"terramind_sim_micro_tokenizer_{modality.lower()}", parameters=TOKENIZER_PARAMETERS)(builder)


_register_tokenizers()
