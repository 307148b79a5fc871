"""Model assembly from TerraTorch-style ``model_args``: backbone -> necks -> decoder -> head.

``model_args`` keys: ``backbone`` (a registry name or a module), ``backbone_<arg>`` (passed to
``terratim.build`` as ``<arg>``), ``necks`` (list of ``{name: ..., ...}``), ``decoder`` (name),
``decoder_<arg>``, ``head_<arg>`` (``head_dropout``), ``num_classes``, ``rescale`` and ``padding``. An unknown
key raises an error instead of being dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch.nn.functional as F
from torch import Tensor, nn

from terratim.tasks.decoders import DECODERS
from terratim.tasks.necks import NeckSequence
from terratim.tasks.temporal import apply_temporal, split_temporal_kwargs

PATCH = 16  # TerraMind patch size: inputs are padded to a multiple of it
# TerraTorch keys we accept and ignore because they change nothing here.
HARMLESS = {"rescale": "outputs are always resized to the input size"}
UNSUPPORTED = {
    "aux_decoders": "auxiliary decoders are not supported",
}


class SegmentationHead(nn.Module):
    """Dropout then a 1x1 conv to the output channels (optionally after extra conv-BN-ReLU layers)."""

    def __init__(
        self, in_channels: int, num_classes: int, dropout: float = 0.0, channel_list: list[int] | None = None
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for ch in channel_list or []:
            layers += [nn.Conv2d(in_channels, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
            in_channels = ch
        layers += [nn.Dropout(dropout), nn.Conv2d(in_channels, num_classes, 1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class ClassificationHead(nn.Module):
    """Global average pool ((B, D, h, w) maps or (B, N, D) tokens), dropout, linear."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean(dim=(2, 3)) if x.ndim == 4 else x.mean(dim=1)  # (B, D)
        return self.linear(self.dropout(pooled))


def _first(x: dict[str, Tensor] | Tensor) -> Tensor:
    return next(iter(x.values())) if isinstance(x, dict) else x


def _pad(x: Tensor, ph: int, pw: int, mode: str) -> Tensor:
    if ph == 0 and pw == 0:
        return x
    h, w = x.shape[-2:]
    mode = mode if (mode != "reflect" or (ph < h and pw < w)) else "replicate"
    pad = (0, pw, 0, ph) + (0, 0) * (x.ndim - 4)  # (B, C, T, H, W) time series: T is not padded
    return F.pad(x, pad, mode=mode) if x.is_floating_point() else F.pad(x, (0, pw, 0, ph))


class EncoderDecoderModel(nn.Module):
    """Backbone, necks, decoder and head. Pixel-wise tasks resize the output to the input size.

    Inputs are standardized ``{modality: (B, C, H, W)}`` dicts (or one tensor); H and W are padded to a
    multiple of 16 (reflect) and the output is cropped back.
    """

    def __init__(
        self,
        backbone: nn.Module,
        necks: NeckSequence,
        decoder: nn.Module,
        head: nn.Module,
        pixel_wise: bool = True,
        padding: str = "reflect",
    ) -> None:
        super().__init__()
        self.backbone, self.necks, self.decoder, self.head = backbone, necks, decoder, head
        self.pixel_wise, self.padding = pixel_wise, padding

    def forward(self, x: dict[str, Tensor] | Tensor) -> Tensor:
        h, w = _first(x).shape[-2:]
        ph, pw = (-h) % PATCH, (-w) % PATCH
        if isinstance(x, dict):
            x = {m: _pad(t, ph, pw, self.padding) for m, t in x.items()}
        else:
            x = _pad(x, ph, pw, self.padding)
        grid = ((h + ph) // PATCH, (w + pw) // PATCH)
        features = self.necks(list(self.backbone(x)), grid)
        out = self.head(self.decoder(features))
        if not self.pixel_wise:
            return out  # (B, K)
        if out.shape[-2:] != (h + ph, w + pw):
            out = F.interpolate(out, size=(h + ph, w + pw), mode="bilinear", align_corners=False)
        return out[..., :h, :w]  # (B, K, H, W)


def backbone_kwargs(model_args: Mapping[str, Any]) -> dict[str, Any]:
    """``backbone_<arg>`` entries as ``{<arg>: value}``."""
    return {k[len("backbone_") :]: v for k, v in model_args.items() if k.startswith("backbone_")}


def build_backbone(backbone: str | nn.Module, kwargs: dict[str, Any]) -> nn.Module:
    """Build a registry backbone, refusing keyword arguments its builder does not take."""
    if isinstance(backbone, nn.Module):
        if kwargs:
            raise ValueError(f"backbone is a module, so backbone_* arguments {sorted(kwargs)} cannot apply")
        return backbone
    from terratim import registry

    if backbone not in registry.list_models():
        raise KeyError(f"unknown backbone {backbone!r}; available: {', '.join(registry.list_models())}")
    unknown = registry.unknown_arguments(backbone, kwargs)
    if unknown:
        takes = ", ".join(f"backbone_{k}" for k in sorted(registry.parameters(backbone) or ()))
        raise ValueError(
            f"model_args: backbone {backbone!r} does not take {['backbone_' + k for k in unknown]}; it takes {takes}"
        )
    return registry.build(backbone, **kwargs)


def _check_keys(model_args: Mapping[str, Any]) -> None:
    known = {"backbone", "necks", "decoder", "num_classes", "padding", "task", "peft_config", *HARMLESS}
    for key in model_args:
        if key in UNSUPPORTED:
            raise ValueError(f"model_args.{key}: {UNSUPPORTED[key]}")
        if key not in known and not key.startswith(("backbone_", "decoder_", "head_")):
            raise ValueError(
                f"unknown model_args key {key!r}; expected backbone, backbone_*, necks, decoder, "
                "decoder_*, head_*, num_classes, padding"
            )


def build_encoder_decoder(model_args: Mapping[str, Any], task: str) -> EncoderDecoderModel:
    """Assemble the model for ``task`` (``segmentation``, ``regression`` or ``classification``)."""
    _check_keys(model_args)
    if "backbone" not in model_args:
        raise ValueError("model_args needs a 'backbone' (e.g. terramind_v1_base)")
    kwargs, temporal = split_temporal_kwargs(backbone_kwargs(model_args))  # backbone_use_temporal, ...
    backbone = apply_temporal(build_backbone(model_args["backbone"], kwargs), temporal)
    channels = list(getattr(backbone, "out_channels", []))
    if not channels:
        raise ValueError("the backbone has no out_channels list; cannot wire the necks")
    pixel_wise = task != "classification"
    default_necks = None if pixel_wise else [{"name": "SelectIndices", "indices": [-1]}]
    necks = NeckSequence(model_args.get("necks", default_necks), channels)
    decoder_name = model_args.get("decoder", "UNetDecoder" if pixel_wise else "IdentityDecoder")
    if decoder_name not in DECODERS:
        raise ValueError(f"unknown decoder {decoder_name!r}; available: {sorted(DECODERS)}")
    dec_kwargs = {k[len("decoder_") :]: v for k, v in model_args.items() if k.startswith("decoder_")}
    decoder = DECODERS[decoder_name](necks.out_channels, **dec_kwargs)
    head_kwargs = {k[len("head_") :]: v for k, v in model_args.items() if k.startswith("head_")}
    decoder_channels = cast(int, decoder.out_channels)  # every decoder states its output width
    head: nn.Module
    if task == "regression":
        head = SegmentationHead(decoder_channels, 1, **head_kwargs)
    else:
        if "num_classes" not in model_args:
            raise ValueError(f"model_args needs num_classes for {task}")
        head_cls = SegmentationHead if pixel_wise else ClassificationHead
        head = head_cls(decoder_channels, int(model_args["num_classes"]), **head_kwargs)
    model = EncoderDecoderModel(backbone, necks, decoder, head, pixel_wise, model_args.get("padding", "reflect"))
    if model_args.get("peft_config") is not None:  # adapters on the backbone (terratim.tasks.peft)
        from terratim.tasks.peft import apply_peft

        apply_peft(model, model_args["peft_config"])
    return model


MODEL_FACTORIES = {"EncoderDecoderFactory": build_encoder_decoder}


def build_model(model_factory: str, model_args: Mapping[str, Any], task: str) -> EncoderDecoderModel:
    """Build with a named factory (only ``EncoderDecoderFactory`` exists)."""
    if model_factory not in MODEL_FACTORIES:
        raise ValueError(f"unknown model_factory {model_factory!r}; available: {sorted(MODEL_FACTORIES)}")
    return MODEL_FACTORIES[model_factory](model_args, task)


def freeze(module: nn.Module) -> None:
    """Stop gradients to every parameter of ``module``."""
    for p in module.parameters():
        p.requires_grad_(False)
