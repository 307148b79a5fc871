"""Tiled forward passes for a task's ``tiled_inference_parameters`` (TerraTorch's option of the same name).

The image batch is reflect-padded by ``delta``, cut into ``h_crop`` x ``w_crop`` chips on the chip grid of
:mod:`terratim.inference.tiling` (its offsets per axis), the model runs on ``batch_size`` chips at a time, each
output loses its ``delta`` margin and the cores are blended with that module's raised-cosine weights
(``average_patches``; ``blend_overlaps: false`` gives a plain mean), or each later chip overwrites the earlier ones
(``average_patches: false``). Sums are kept in float64 (float32 on devices without it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from terratim.inference.tiling import BLEND_FLOOR, ChipGrid, ramp_weights

Inputs = dict[str, Tensor] | Tensor
IGNORED = ("verbose",)  # TerraTorch keys that change nothing here


@dataclass(frozen=True)
class TiledInferenceParameters:
    """Chip sizes, strides and blending of tiled inference (TerraTorch's keys and defaults).

    Attributes:
        h_crop: chip height.
        h_stride: step between chip rows.
        w_crop: chip width.
        w_stride: step between chip columns.
        delta: margin cut off every chip output (lowered to half the smaller overlap when larger).
        average_patches: blend overlapping chips (else each later chip overwrites).
        blend_overlaps: raised-cosine weights towards chip edges (else equal weights).
        batch_size: chips per forward pass.
        padding: ``"reflect"`` (the only padding supported).
    """

    h_crop: int = 224
    h_stride: int = 192
    w_crop: int = 224
    w_stride: int = 192
    delta: int = 8
    average_patches: bool = True
    blend_overlaps: bool = True
    batch_size: int = 16
    padding: str = "reflect"

    @classmethod
    def from_config(cls, params: Mapping[str, Any]) -> TiledInferenceParameters:
        """From a config dict; ``crop``/``stride`` set both axes unless ``h_``/``w_`` keys are given."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known - {"crop", "stride", *IGNORED})
        if unknown:
            raise ValueError(
                f"tiled_inference_parameters: unknown keys {unknown}; accepted: {sorted(known)}, crop, stride"
            )
        values = {k: v for k, v in params.items() if k in known}
        for axis in ("h", "w"):
            for what in ("crop", "stride"):
                if f"{axis}_{what}" not in values and what in params:
                    values[f"{axis}_{what}"] = params[what]
        made = cls(**values)
        made.check()
        return made

    def check(self) -> None:
        for axis in ("h", "w"):
            crop, stride = getattr(self, f"{axis}_crop"), getattr(self, f"{axis}_stride")
            if not (isinstance(crop, int) and isinstance(stride, int) and 0 < stride <= crop):
                raise ValueError(
                    f"tiled_inference_parameters: {axis}_stride ({stride}) must be a positive integer "
                    f"no larger than {axis}_crop ({crop}), or pixels would be missed"
                )
        if self.delta < 0 or self.batch_size < 1:
            raise ValueError(
                f"tiled_inference_parameters: delta ({self.delta}) must be >= 0 and batch_size ({self.batch_size}) >= 1"
            )
        if self.padding != "reflect":
            raise ValueError(f"tiled_inference_parameters: padding {self.padding!r} is not supported; use 'reflect'")

    @property
    def margin(self) -> int:
        """The ``delta`` actually cut: at most half of the smaller overlap, so that chips still cover every pixel."""
        return max(0, min(self.delta, (self.h_crop - self.h_stride) // 2, (self.w_crop - self.w_stride) // 2))

    def weights(self) -> np.ndarray:
        """(h_crop - 2 delta, w_crop - 2 delta) float64 blend weights of a chip's core."""
        d = self.margin
        if not self.blend_overlaps:
            return np.ones((self.h_crop - 2 * d, self.w_crop - 2 * d))
        rows, cols = ramp_weights(self.h_crop, self.h_stride, d), ramp_weights(self.w_crop, self.w_stride, d)
        return np.outer(rows, cols) + BLEND_FLOOR

    def offsets(self, height: int, width: int) -> tuple[list[int], list[int]]:
        """Chip-row and chip-column offsets (padded coordinates = top-left of each core in the image)."""
        d = self.margin
        for axis, size, crop in (("h", height, self.h_crop), ("w", width, self.w_crop)):
            if size + 2 * d < crop:
                raise ValueError(
                    f"tiled_inference_parameters: {axis}_crop {crop} is larger than the image "
                    f"({height} x {width} pixels) plus the {d}-pixel margin on both sides"
                )
        rows = ChipGrid(height, height, self.h_crop, self.h_stride, d).row_offsets
        cols = ChipGrid(width, width, self.w_crop, self.w_stride, d).col_offsets
        return rows, cols


def _first(x: Inputs) -> Tensor:
    return next(iter(x.values())) if isinstance(x, dict) else x


def _chips(padded: Inputs, windows: list[tuple[int, int, int]], h: int, w: int) -> Inputs:
    """Stack the (b, y, x) windows of the padded batch: (N, C, h, w) per modality."""

    def cut(t: Tensor) -> Tensor:
        return torch.stack([t[b, :, y : y + h, x : x + w] for b, y, x in windows])

    return {m: cut(t) for m, t in padded.items()} if isinstance(padded, dict) else cut(padded)


def tiled_forward(forward: Callable[[Inputs], Tensor], x: Inputs, params: TiledInferenceParameters) -> Tensor:
    """Run ``forward`` chip by chip over ``x`` ({modality: (B, C, H, W)} or (B, C, H, W)) and blend the outputs.

    ``forward`` maps chips to pixel-wise outputs (N, K, h_crop, w_crop). Returns (B, K, H, W).
    """
    first = _first(x)
    batch, (height, width) = first.shape[0], first.shape[-2:]
    d = params.margin
    rows, cols = params.offsets(height, width)
    pad = (d, d, d, d)
    padded: Inputs = (
        {m: F.pad(t, pad, mode="reflect") for m, t in x.items()}
        if isinstance(x, dict)
        else F.pad(x, pad, mode="reflect")
    )
    core_h, core_w = params.h_crop - 2 * d, params.w_crop - 2 * d
    dtype = torch.float32 if first.device.type == "mps" else torch.float64
    weights = torch.as_tensor(params.weights(), dtype=dtype, device=first.device)  # (core_h, core_w)
    sums: Tensor | None = None  # (B, K, H, W)
    out_dtype = torch.float32
    counts = torch.zeros(batch, height, width, dtype=dtype, device=first.device)  # (B, H, W)
    windows = [(b, y, x0) for b in range(batch) for y in rows for x0 in cols]
    for start in range(0, len(windows), params.batch_size):
        part = windows[start : start + params.batch_size]
        out = forward(_chips(padded, part, params.h_crop, params.w_crop))  # (N, K, h_crop, w_crop)
        out_dtype = out.dtype
        out = out[..., d : d + core_h, d : d + core_w].to(dtype)  # (N, K, core_h, core_w)
        if sums is None:
            sums = torch.zeros(batch, out.shape[1], height, width, dtype=dtype, device=first.device)
        for (b, y, x0), chip in zip(part, out, strict=True):
            where = (b, slice(None), slice(y, y + core_h), slice(x0, x0 + core_w))
            if params.average_patches:
                sums[where] += chip * weights
            else:
                sums[where] = chip
            counts[b, y : y + core_h, x0 : x0 + core_w] += weights
    assert sums is not None  # the grid has at least one chip
    if bool((counts == 0).any()):
        raise RuntimeError("tiled inference left pixels without a chip; this is a bug in the chip grid")
    result = sums / counts[:, None] if params.average_patches else sums
    return result.to(out_dtype)
