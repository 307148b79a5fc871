"""Necks: turn the backbone's per-layer token sequences into image-like feature maps for a decoder.

Each neck maps ``(features, grid)`` to new features, where ``grid = (h, w)`` is the token grid of the input
(H/16, W/16), and ``out_channels(in_channels)`` tells the next stage its channel counts. Config entries are
``{name: SelectIndices, indices: [...]}``, applied in order, as TerraTorch's necks
(``terratorch/models/necks.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn


class Neck(nn.Module):
    """Base class: ``forward(features, grid)`` and ``out_channels(in_channels)``."""

    def out_channels(self, in_channels: list[int]) -> list[int]:
        return list(in_channels)


class SelectIndices(Neck):
    """Keep the outputs of the given encoder layers (negative indices count from the end)."""

    def __init__(self, channel_list: list[int], indices: Sequence[int] = (-1,)) -> None:
        super().__init__()
        n = len(channel_list)
        bad = [i for i in indices if not -n <= i < n]
        if bad:
            raise ValueError(f"SelectIndices: indices {bad} out of range for a backbone with {n} layers")
        self.indices = [i % n for i in indices]

    def forward(self, features: list[Tensor], grid: tuple[int, int]) -> list[Tensor]:
        return [features[i] for i in self.indices]

    def out_channels(self, in_channels: list[int]) -> list[int]:
        return [in_channels[i] for i in self.indices]


class ReshapeTokensToImage(Neck):
    """(B, N, D) row-major tokens -> (B, D, h, w) maps, for square and rectangular token grids."""

    def __init__(self, channel_list: list[int], remove_cls_token: bool = False, effective_time_dim: int = 1) -> None:
        super().__init__()
        if effective_time_dim != 1:
            raise ValueError("ReshapeTokensToImage: effective_time_dim > 1 (temporal inputs) is not supported")
        self.remove_cls_token = remove_cls_token

    def _reshape(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        if x.ndim == 4:  # already a map
            return x
        h, w = grid
        if self.remove_cls_token:
            x = x[:, 1:]
        b, n, d = x.shape
        if n != h * w:
            raise ValueError(f"ReshapeTokensToImage: {n} tokens do not fill the {h}x{w} token grid of the input")
        return x.transpose(1, 2).reshape(b, d, h, w)  # (B, D, h, w)

    def forward(self, features: list[Tensor], grid: tuple[int, int]) -> list[Tensor]:
        return [self._reshape(x, grid) for x in features]


def _upsample2(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)


class LearnedInterpolateToPyramidal(Neck):
    """Four same-scale maps -> a pyramid at x4, x2, x1 and x1/2 of the token grid (TerraTorch's neck of that name).

    fpn1 = ConvT(D, D/2) -> BN -> GELU -> ConvT(D/2, D/4); fpn2 = ConvT(D, D/2); fpn3 = identity;
    fpn4 = max-pool 2x2. Output channels [D/4, D/2, D, D].
    """

    def __init__(self, channel_list: list[int]) -> None:
        super().__init__()
        if len(channel_list) != 4:
            raise ValueError(
                f"LearnedInterpolateToPyramidal needs exactly 4 feature maps, got {len(channel_list)} "
                "(select 4 layers with SelectIndices first)"
            )
        c0, c1, c2, c3 = channel_list
        self.fpn1 = nn.Sequential(
            _upsample2(c0, c0 // 2), nn.BatchNorm2d(c0 // 2), nn.GELU(), _upsample2(c0 // 2, c0 // 4)
        )
        self.fpn2 = _upsample2(c1, c1 // 2)
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.channels = [c0 // 4, c1 // 2, c2, c3]

    def forward(self, features: list[Tensor], grid: tuple[int, int]) -> list[Tensor]:
        if len(features) != 4 or features[0].ndim != 4:
            raise ValueError(
                "LearnedInterpolateToPyramidal expects 4 (B, D, h, w) maps; "
                "put SelectIndices and ReshapeTokensToImage before it"
            )
        return [
            self.fpn1(features[0]),
            self.fpn2(features[1]),
            self.fpn3(features[2]),
            self.fpn4(features[3]),
        ]

    def out_channels(self, in_channels: list[int]) -> list[int]:
        return list(self.channels)


NECKS: dict[str, type[Neck]] = {
    cls.__name__: cls for cls in (SelectIndices, ReshapeTokensToImage, LearnedInterpolateToPyramidal)
}


class NeckSequence(nn.Module):
    """The configured necks in order, with the channel bookkeeping done once at build time."""

    def __init__(self, specs: Sequence[dict[str, Any]] | None, in_channels: list[int]) -> None:
        super().__init__()
        self.necks = nn.ModuleList()
        channels = list(in_channels)
        for spec in specs or []:
            spec = dict(spec)
            name = spec.pop("name", None)
            if name not in NECKS:
                raise ValueError(f"unknown neck {name!r}; available: {sorted(NECKS)}")
            neck = NECKS[name](channel_list=channels, **spec)
            channels = neck.out_channels(channels)
            self.necks.append(neck)
        self.out_channels = channels

    def forward(self, features: list[Tensor], grid: tuple[int, int]) -> list[Tensor]:
        for neck in self.necks:
            features = neck(features, grid)
        return features
