"""Decoders: a list of feature maps (finest first) -> one map with ``out_channels`` channels.

``UNetDecoder`` reproduces segmentation_models_pytorch's U-Net decoder as TerraTorch wires it
(``terratorch/models/decoders/unet_decoder.py``);
``UperNetDecoder`` is the PPM + FPN decoder of UPerNet; ``FCNDecoder`` is a light conv stack on the last map;
``IdentityDecoder`` passes the last map through (classification heads pool it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    """Convolution (same padding, no bias), batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def init_decoder(module: nn.Module) -> None:
    """Kaiming-uniform convs (fan-in, ReLU), BN weight 1 / bias 0, Xavier linears (smp's decoder init)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class UNetBlock(nn.Module):
    """Nearest upsample to the next size, concatenate the skip, two conv-BN-ReLU."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(cin + skip, cout)
        self.conv2 = conv_bn_relu(cout, cout)

    def forward(self, x: Tensor, size: tuple[int, int], skip: Tensor | None) -> Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UNetDecoder(nn.Module):
    """U-Net decoder over a 4-level pyramid (finest first), as TerraTorch wires smp's ``UnetDecoder``.

    The finest map is used twice, so the blocks run 1/2 -> 1 (+skip), 1 -> 2 (+skip), 2 -> 4 (+skip) and
    4 -> 4 (no skip) times the token grid; the output has ``channels[-1]`` channels at 4x the token grid.
    """

    def __init__(self, embed_dim: list[int], channels: Sequence[int] = (256, 128, 64, 32)) -> None:
        super().__init__()
        if len(embed_dim) < 2:
            raise ValueError(f"UNetDecoder needs at least 2 feature maps, got channels {embed_dim}")
        encoder = [embed_dim[0], *embed_dim]  # duplicate the finest map (smp drops the first skip)
        rev = encoder[1:][::-1]  # [head, skips..., finest]
        head, skips = rev[0], rev[1:]
        channels = list(channels)
        skip_ch = (skips + [0] * len(channels))[: len(channels)]  # blocks past the finest map have no skip
        cins = [head, *channels[:-1]]
        self.blocks = nn.ModuleList(UNetBlock(ci, s, co) for ci, s, co in zip(cins, skip_ch, channels, strict=True))
        self.out_channels = channels[-1]
        init_decoder(self)

    def forward(self, features: list[Tensor]) -> Tensor:
        feats = [features[0], *features][1:][::-1]  # [head, skip1, skip2, ..., finest]
        sizes = [f.shape[-2:] for f in [features[0], *features]][::-1]  # target sizes per block
        x = feats[0]
        for i, block in enumerate(self.blocks):
            skip = feats[i + 1] if i + 1 < len(feats) else None
            size = tuple(sizes[i + 1]) if i + 1 < len(sizes) else tuple(s * 2 for s in x.shape[-2:])
            x = block(x, size, skip)
        return x


class PPM(nn.Module):
    """Pyramid pooling: adaptive average pools at several scales, 1x1 conv, bilinear upsample back."""

    def __init__(self, cin: int, channels: int, scales: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), conv_bn_relu(cin, channels, 1)) for s in scales
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        size = x.shape[-2:]
        return [F.interpolate(b(x), size=size, mode="bilinear", align_corners=True) for b in self.branches]


class UperNetDecoder(nn.Module):
    """UPerNet: PPM on the coarsest map, FPN top-down fusion, concatenation at the finest scale, 3x3 fuse."""

    def __init__(self, embed_dim: list[int], channels: int = 256, pool_scales: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.ppm = PPM(embed_dim[-1], channels, pool_scales)
        self.bottleneck = conv_bn_relu(embed_dim[-1] + len(pool_scales) * channels, channels)
        self.lateral = nn.ModuleList(conv_bn_relu(c, channels, 1) for c in embed_dim[:-1])
        self.fpn = nn.ModuleList(conv_bn_relu(channels, channels) for _ in embed_dim[:-1])
        self.fuse = conv_bn_relu(len(embed_dim) * channels, channels)
        self.out_channels = channels

    def forward(self, features: list[Tensor]) -> Tensor:
        top = self.bottleneck(torch.cat([features[-1], *self.ppm(features[-1])], dim=1))
        laterals = [conv(f) for conv, f in zip(self.lateral, features[:-1], strict=True)] + [top]
        for i in range(len(laterals) - 1, 0, -1):  # top-down
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="bilinear", align_corners=False
            )
        outs = [conv(x) for conv, x in zip(self.fpn, laterals[:-1], strict=True)] + [laterals[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs[1:]]
        return self.fuse(torch.cat(outs, dim=1))


class FCNDecoder(nn.Module):
    """A light decoder: ``num_convs`` conv-BN-ReLU on the last feature map."""

    def __init__(self, embed_dim: list[int], channels: int = 256, num_convs: int = 2) -> None:
        super().__init__()
        layers = [conv_bn_relu(embed_dim[-1] if i == 0 else channels, channels) for i in range(num_convs)]
        self.convs = nn.Sequential(*layers)
        self.out_channels = channels if num_convs else embed_dim[-1]
        init_decoder(self)

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.convs(features[-1])


class IdentityDecoder(nn.Module):
    """The last feature map, unchanged."""

    def __init__(self, embed_dim: list[int]) -> None:
        super().__init__()
        self.out_channels = embed_dim[-1]

    def forward(self, features: list[Tensor]) -> Tensor:
        return features[-1]


DECODERS: dict[str, type[nn.Module]] = {
    cls.__name__: cls for cls in (UNetDecoder, UperNetDecoder, FCNDecoder, IdentityDecoder)
}
