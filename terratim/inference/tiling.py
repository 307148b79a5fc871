"""Chip grid, blend weights and a streaming blend accumulator: pure array maths, no file I/O.

The grid and the weights follow the reference's tiled inference (TerraTorch's terratorch/tasks/tiled_inference.py):

1. ``delta`` (the margin cropped off every chip output) is lowered to ``(chip - stride) // 2`` when larger.
2. The scene is reflect-padded by ``delta`` on every side, so a chip at padded offset ``(y, x)`` reads original
   rows ``y - delta .. y - delta + chip`` and its cropped core lands on original rows ``y .. y + core``.
3. Offsets per axis: ``0, stride, 2 stride, ...`` below ``padded - chip - 1``, then the edge offset
   ``padded - chip``. (The reference starts at ``range(0, padded - chip - 1, stride)``, which is empty when
   ``padded - chip == 1`` and then leaves row 0 uncovered; we always start at 0.)
4. Weights per axis: ones with raised-cosine ramps of length ``min(chip // 2, chip - stride) - delta`` at both
   ends; the 2-D mask is the outer product plus 1e-6, so no pixel has zero weight.
5. Output = sum(out * w) / sum(w). Sums are kept in float64 so that an identity model gives back its float32
   input bit for bit.

The accumulator holds only the output rows that chips in flight touch. Rows above the first chip row still
to come are final and are handed out (``pop``) to be written and dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

BLEND_FLOOR = 1e-6


@dataclass(frozen=True)
class Chip:
    """One chip of the grid.

    Attributes:
        row: chip-row index (0 is the top row of chips).
        y: top of the chip's core in original scene rows (the chip reads rows ``y - delta .. y - delta + chip``).
        x: left of the chip's core in original scene columns.
    """

    row: int
    y: int
    x: int


def _offsets(padded: int, chip: int, stride: int) -> list[int]:
    offsets = list(range(0, padded - chip - 1, stride)) or [0]
    if offsets[-1] != padded - chip:
        offsets.append(padded - chip)
    return offsets


@dataclass(frozen=True)
class ChipGrid:
    """The chips covering a ``height`` x ``width`` scene.

    Args:
        height: scene rows.
        width: scene columns.
        chip: chip side in pixels (what the model sees).
        stride: step between chips; ``chip - stride`` is the overlap.
        delta: margin cropped off each chip output (lowered to ``(chip - stride) // 2`` when larger).
    """

    height: int
    width: int
    chip: int
    stride: int
    delta: int = 8

    def __post_init__(self) -> None:
        if self.chip <= 0 or self.stride <= 0:
            raise ValueError(f"chip ({self.chip}) and stride ({self.stride}) must be positive")
        if self.stride > self.chip:
            raise ValueError(f"stride {self.stride} is larger than the chip {self.chip}: pixels would be missed")
        object.__setattr__(self, "delta", max(0, min(self.delta, (self.chip - self.stride) // 2)))
        smallest = self.chip - 2 * self.delta
        if self.height < smallest or self.width < smallest:
            raise ValueError(
                f"the scene ({self.height} x {self.width} pixels) is smaller than one chip ({self.chip} px, "
                f"{self.delta} px of it reflect padding per side); use a chip of at most "
                f"{min(self.height, self.width) + 2 * self.delta} px"
            )

    @property
    def core(self) -> int:
        """Side of the part of each chip output that is kept."""
        return self.chip - 2 * self.delta

    @property
    def row_offsets(self) -> list[int]:
        """Top of each chip row's core, in original rows (= padded offsets)."""
        return _offsets(self.height + 2 * self.delta, self.chip, self.stride)

    @property
    def col_offsets(self) -> list[int]:
        """Left of each chip column's core, in original columns."""
        return _offsets(self.width + 2 * self.delta, self.chip, self.stride)

    def __len__(self) -> int:
        return len(self.row_offsets) * len(self.col_offsets)

    def chips(self, rows: range | None = None) -> Iterator[Chip]:
        """Chips row by row, left to right; ``rows`` limits the chip rows."""
        offsets = self.row_offsets
        for row in rows if rows is not None else range(len(offsets)):
            for x in self.col_offsets:
                yield Chip(row, offsets[row], x)

    def rows_for(self, start: int, stop: int) -> range:
        """Chip rows whose cores touch output rows ``start .. stop``."""
        return _touching(self.row_offsets, self.core, start, stop)

    def cols_for(self, start: int, stop: int) -> range:
        """Chip columns whose cores touch output columns ``start .. stop``."""
        return _touching(self.col_offsets, self.core, start, stop)

    def finished_before(self, row: int) -> int:
        """Output rows that are final once every chip row before ``row`` has been added."""
        offsets = self.row_offsets
        return self.height if row >= len(offsets) else offsets[row]


def _touching(offsets: list[int], core: int, start: int, stop: int) -> range:
    first = next(i for i, o in enumerate(offsets) if o + core > start)
    last = max(i for i, o in enumerate(offsets) if o < stop)
    return range(first, last + 1)


def panel_ranges(width: int, panel: int, block: int = 256) -> list[tuple[int, int]]:
    """Split columns ``0 .. width`` into panels of about ``panel`` columns, cut at multiples of ``block``.

    ``panel <= 0`` gives one full-width panel.
    """
    if panel <= 0 or panel >= width:
        return [(0, width)]
    step = max(block, panel // block * block)
    cuts = list(range(0, width, step)) + [width]
    return list(zip(cuts[:-1], cuts[1:]))


def ramp_weights(chip: int, stride: int, delta: int) -> np.ndarray:
    """Per-axis blend weights of length ``chip - 2 delta`` (step 4 of the module docstring), float64."""
    size = chip - 2 * delta
    weights = np.ones(size, dtype=np.float64)
    ramp_len = min(chip // 2, chip - stride) - delta
    if ramp_len > 0:
        k = np.arange(ramp_len, dtype=np.float64)
        falling = 0.5 + 0.5 * np.cos(math.pi * (k + 1) / (ramp_len + 1))
        weights[:ramp_len] = falling[::-1]
        weights[size - ramp_len :] = falling
    return weights


def blend_weights(chip: int, stride: int, delta: int, mode: str = "cosine") -> np.ndarray:
    """2-D weights (core, core) for one chip output.

    Args:
        chip: chip side.
        stride: chip step.
        delta: cropped margin (already lowered, see :class:`ChipGrid`).
        mode: ``"cosine"`` (the reference's raised-cosine ramps + 1e-6) or ``"average"`` (plain mean).
    """
    core = chip - 2 * delta
    if mode == "average":
        return np.ones((core, core), dtype=np.float64)
    if mode != "cosine":
        raise ValueError(f"unknown blend mode {mode!r}; use 'cosine' or 'average'")
    axis = ramp_weights(chip, stride, delta)
    return np.outer(axis, axis) + BLEND_FLOOR


def reflect_pad_strip(strip: np.ndarray, top: int, bottom: int, left: int, right: int | None = None) -> np.ndarray:
    """Reflect-pad a (C, rows, cols) strip by ``top``/``bottom`` rows and ``left``/``right`` columns.

    ``right`` defaults to ``left``.
    """
    right = left if right is None else right
    if top == bottom == left == right == 0:
        return strip
    return np.pad(strip, ((0, 0), (top, bottom), (left, right)), mode="reflect")


class BlendAccumulator:
    """Weighted sums of chip outputs over a moving band of output rows.

    Args:
        channels: output channels K.
        width: scene width.
        weights: (core, core) blend weights.
        start_row: first output row held.
        dtype: sum dtype; float64 keeps identity exact.
    """

    def __init__(
        self, channels: int, width: int, weights: np.ndarray, start_row: int = 0, dtype: np.dtype | type = np.float64
    ) -> None:
        self.channels, self.width, self.weights = channels, width, weights.astype(dtype)
        self.core = weights.shape[0]
        self.base = start_row
        self.dtype = np.dtype(dtype)
        self.held = 0  # rows in use, from ``base``
        self.sums = np.zeros((channels, 0, width), dtype=self.dtype)  # (K, capacity, W) weighted sums
        self.counts = np.zeros((0, width), dtype=self.dtype)  # (capacity, W) sums of weights
        self.valid = np.zeros((0, width), dtype=bool)  # (capacity, W) input had data there
        self._allocate(self.core)

    def _allocate(self, capacity: int) -> None:
        sums = np.zeros((self.channels, capacity, self.width), dtype=self.dtype)  # (K, capacity, W)
        counts = np.zeros((capacity, self.width), dtype=self.dtype)  # (capacity, W)
        valid = np.zeros((capacity, self.width), dtype=bool)  # input had data there
        if self.held:
            sums[:, : self.held], counts[: self.held] = self.sums[:, : self.held], self.counts[: self.held]
            valid[: self.held] = self.valid[: self.held]
        self.sums, self.counts, self.valid = sums, counts, valid

    @property
    def rows_held(self) -> int:
        return self.held

    @property
    def capacity(self) -> int:
        return self.counts.shape[0]

    def _grow(self, rows: int) -> None:
        if rows > self.capacity:  # rare: a batch reached a chip row further down
            self._allocate(max(rows, self.capacity + self.core // 2))
        self.held = max(self.held, rows)

    def add(self, output: np.ndarray, y: int, x: int, valid: np.ndarray | None = None) -> None:
        """Add one cropped chip output (K, core, core) whose core starts at scene row ``y``, column ``x``."""
        if y < self.base:
            raise ValueError(f"chip at row {y} is above the rows still held (from {self.base})")
        top = y - self.base
        self._grow(top + self.core)
        rows, cols = slice(top, top + self.core), slice(x, x + self.core)
        self.sums[:, rows, cols] += output * self.weights
        self.counts[rows, cols] += self.weights
        if valid is not None:
            self.valid[rows, cols] |= valid

    def pop(self, until: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hand out final rows ``base .. until`` and drop them.

        Returns:
            (blended (K, rows, W) in the sum dtype, covered (rows, W) bool, valid (rows, W) bool). Pixels no
            chip covered (all their chips were nodata) are 0 in ``blended`` and False in ``covered``.
        """
        n = until - self.base
        if n < 0:
            raise ValueError(f"rows before {self.base} were already handed out")
        self._grow(n)
        sums, counts = self.sums[:, :n], self.counts[:n]
        covered = counts > 0
        blended = np.divide(sums, counts, out=np.zeros_like(sums), where=covered[None])
        valid = self.valid[:n].copy()
        rest = self.held - n  # rows still in flight move to the top; the freed rows are zeroed
        self.sums[:, :rest], self.counts[:rest], self.valid[:rest] = (
            self.sums[:, n : self.held].copy(),
            self.counts[n : self.held].copy(),
            self.valid[n : self.held].copy(),
        )
        self.sums[:, rest : self.held], self.counts[rest : self.held], self.valid[rest : self.held] = 0, 0, False
        self.held, self.base = rest, until
        return blended, covered, valid


def blend_image(image: np.ndarray, predict, grid: ChipGrid, mode: str = "cosine") -> np.ndarray:
    """Tile, predict and blend a whole in-memory (C, H, W) image; a small reference for the streaming engine.

    Args:
        image: (C, H, W) array.
        predict: maps a (N, C, chip, chip) array to (N, K, chip, chip).
        grid: chip grid of the image.
        mode: blend mode.
    """
    d = grid.delta
    padded = reflect_pad_strip(image, d, d, d)
    weights = blend_weights(grid.chip, grid.stride, d, mode)
    acc: BlendAccumulator | None = None
    for chip in grid.chips():
        window = padded[None, :, chip.y : chip.y + grid.chip, chip.x : chip.x + grid.chip]
        out = np.asarray(predict(window))[0, :, d : d + grid.core, d : d + grid.core]
        if acc is None:
            acc = BlendAccumulator(out.shape[0], grid.width, weights)
        acc.add(out, chip.y, chip.x)
    assert acc is not None
    return acc.pop(grid.height)[0]
