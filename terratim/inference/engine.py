"""The streaming loop: read a band of rows, cut chips, predict in batches, blend, write finished rows.

The model is any callable ``predict({modality: (B, C, chip, chip)}) -> (B, K, chip, chip)``; the heads say how
the K blended channels become output files. Memory holds the input rows of the chip rows in flight, one batch of
chips and the blend sums of the output rows those chips touch, whatever the scene size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from terratim.inference.fingerprint import FORMAT, file_record
from terratim.inference.heads import Head
from terratim.inference.scene import BLOCK, SceneReader, SceneWriter, block_cache, check_output
from terratim.inference.tiling import (
    BlendAccumulator,
    Chip,
    ChipGrid,
    blend_weights,
    panel_ranges,
    reflect_pad_strip,
)

Predict = Callable[[dict[str, torch.Tensor]], torch.Tensor]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TilingConfig:
    """Chip grid and blending settings.

    Attributes:
        chip: chip side in pixels.
        overlap: pixels shared by neighbouring chips (stride = chip - overlap).
        delta: margin cropped off each chip output (as TerraTorch's tiled inference; lowered to overlap // 2
            when larger).
        batch_size: chips per forward pass.
        blend: ``"cosine"`` (reference raised-cosine ramps) or ``"average"``.
        panel: columns done at a time (rounded down to a multiple of 256; 0 = the whole width). Memory grows
            with the panel width, not with the scene; chips on a panel edge run twice.
    """

    chip: int = 224
    overlap: int = 32
    delta: int = 8
    batch_size: int = 16
    blend: str = "cosine"
    panel: int = 2048

    @property
    def stride(self) -> int:
        return self.chip - self.overlap

    def grid(self, height: int, width: int) -> ChipGrid:
        if not 0 <= self.overlap < self.chip:
            raise ValueError(f"overlap must be in [0, chip) = [0, {self.chip}), got {self.overlap}")
        return ChipGrid(height, width, self.chip, self.stride, self.delta)


DEFAULT_TILING = TilingConfig()


@dataclass
class _Pending:
    chip: Chip
    inputs: dict[str, np.ndarray]  # {name: (C, chip, chip)} with NaN filled
    valid: np.ndarray  # (core, core) bool


class SceneEngine:
    """Runs ``predict`` over one scene, streaming.

    Args:
        predict: the model callable (see module docstring); called under ``torch.inference_mode``.
        heads: output files, in the order of the model's output channels.
        tiling: grid and blend settings.
        device: device the batches are moved to.
        fill: value replacing NaN (nodata) input pixels per modality, scalar or per band; default 0.
        fingerprint: extra settings recorded for resume checks (model, ``"weights"``: a
            :func:`~terratim.inference.fingerprint.file_record` of the checkpoint, statistics).
    """

    def __init__(
        self,
        predict: Predict,
        heads: Sequence[Head],
        tiling: TilingConfig = DEFAULT_TILING,
        device: str | torch.device = "cpu",
        fill: dict[str, float | Sequence[float]] | None = None,
        fingerprint: dict | None = None,
    ) -> None:
        self.predict, self.heads, self.tiling = predict, list(heads), tiling
        self.device = torch.device(device)
        self.fill = fill or {}
        self.extra = fingerprint or {}
        self.channels = sum(h.channels for h in self.heads)
        self._fingerprint: dict | None = None

    def fingerprint(self, reader: SceneReader) -> dict:
        """What a resumed run must share: inputs by content, tiling, heads, fill values and the caller's extras
        (model, weights by content, statistics; see :mod:`terratim.inference.fingerprint`). Computed once."""
        if self._fingerprint is None:
            inputs = {n: file_record(p) for n, p in reader.paths.items()}
            heads = [[str(h.path), h.channels, h.kind, h.confidence] for h in self.heads]
            fill = {n: np.asarray(v, np.float64).tolist() for n, v in sorted(self.fill.items())}
            self._fingerprint = {
                "format": FORMAT,
                "inputs": inputs,
                "tiling": asdict(self.tiling),
                "heads": heads,
                "fill": fill,
                **self.extra,
            }
        return self._fingerprint

    def run(
        self,
        reader: SceneReader,
        resume: bool = False,
        rows: tuple[int, int] | None = None,
        targets: Sequence[Path] | None = None,
        progress: Progress | None = None,
    ) -> list[SceneWriter]:
        """Predict output rows ``rows`` (default all) and write them; returns the writers (complete).

        The columns are done panel by panel (``tiling.panel`` wide), each panel top to bottom, so memory depends
        on the panel width, not on the scene. Chips overlapping a panel edge run for both panels; each panel
        keeps only its own columns, so the result equals one pass over the whole width.

        Args:
            reader: the opened inputs.
            resume: continue partial outputs left by an interrupted run with the same settings.
            rows: the share of output rows to compute (distributed ranks); writers hold only these rows.
            targets: files to write instead of each head's ``<path>.partial`` (distributed part files).
            progress: called with (chips done, chips total) after every batch.
        """
        info = reader.info
        grid = self.tiling.grid(info.height, info.width)
        start, stop = rows if rows is not None else (0, info.height)
        panels = panel_ranges(info.width, self.tiling.panel)
        fingerprint = self.fingerprint(reader)
        writers = [
            SceneWriter(
                h.output_band(), info, fingerprint, panels, resume, (start, stop), targets[i] if targets else None
            )
            for i, h in enumerate(self.heads)
        ]
        todo = []  # (panel, chip rows, chip columns) still to do
        for p, (col0, col1) in enumerate(panels):
            first = min(w.first_row(p) for w in writers)
            if first < stop:
                todo.append((p, grid.rows_for(first, stop), grid.cols_for(col0, col1)))
        total = sum(len(r) * len(c) for _, r, c in todo)
        loop = _Loop(self, reader, grid, writers, progress, total)
        for p, chip_rows, chip_cols in todo:
            loop.run_panel(panels[p], chip_rows, chip_cols, stop)
        return writers

    def fill_values(self, name: str, bands: int) -> np.ndarray:
        value = np.asarray(self.fill.get(name, 0.0), dtype=np.float32)
        return np.broadcast_to(value.reshape(-1, 1, 1) if value.ndim else value, (bands, 1, 1))


class _Loop:
    """State of one pass over a scene: chips in flight, progress, the blend accumulator of the current panel."""

    def __init__(
        self,
        engine: SceneEngine,
        reader: SceneReader,
        grid: ChipGrid,
        writers: list[SceneWriter],
        progress: Progress | None,
        total: int,
    ) -> None:
        self.engine, self.reader, self.grid, self.writers = engine, reader, grid, writers
        self.progress, self.total, self.done = progress, total, 0
        self.pending: list[_Pending] = []
        self.weights = blend_weights(grid.chip, grid.stride, grid.delta, engine.tiling.blend)
        self.dtype = np.float64 if engine.channels <= 64 else np.float32  # float64 keeps identity exact

    def run_panel(self, panel: tuple[int, int], chip_rows: range, chip_cols: range, stop: int) -> None:
        """Chip rows ``chip_rows`` x columns ``chip_cols``; write output columns ``panel`` down to ``stop``."""
        offsets = self.grid.col_offsets
        self.panel, self.xs = panel, [offsets[c] for c in chip_cols]
        self.x0 = self.xs[0]  # accumulator column 0 = scene column x0
        width = self.xs[-1] + self.grid.core - self.x0
        start_row = self.grid.row_offsets[chip_rows[0]]
        self.acc = BlendAccumulator(self.engine.channels, width, self.weights, start_row, self.dtype)
        batch = self.engine.tiling.batch_size
        for row in chip_rows:
            strips, valid = self._read_chip_row(row)
            for x in self.xs:
                self._queue(Chip(row, self.grid.row_offsets[row], x), strips, valid)
                if len(self.pending) >= batch:
                    self._run_batch()
                    self._flush(row, stop)  # chips of this row may still come
            # Rows above the oldest chip still waiting for a batch are final.
            self._flush(min((p.chip.row for p in self.pending), default=row + 1), stop)
        self._run_batch()
        self._flush(chip_rows[-1] + 1, stop)

    def _read_chip_row(self, row: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Inputs of one chip row over the panel's chip columns, reflect-padded at the scene edges."""
        d, chip, height, width = self.grid.delta, self.grid.chip, self.grid.height, self.grid.width
        top, left = self.grid.row_offsets[row] - d, self.x0 - d  # first scene row / column the chips read
        right = self.xs[-1] - d + chip
        data = self.reader.read_rows(top, top + chip, left, right)
        pads = (max(0, -top), max(0, top + chip - height), max(0, -left), max(0, right - width))
        strips: dict[str, np.ndarray] = {}
        valid: np.ndarray | None = None
        for name, strip in data.items():
            strip = reflect_pad_strip(strip, *pads)  # (C, chip, right - left)
            has = ~np.isnan(strip).all(axis=0)
            valid = has if valid is None else valid | has
            strips[name] = strip
        if valid is None:
            raise ValueError("the scene has no input modality")
        return strips, valid

    def _queue(self, chip: Chip, strips: dict[str, np.ndarray], valid: np.ndarray) -> None:
        d, size, x = self.grid.delta, self.grid.chip, chip.x - self.x0
        core_valid = valid[d : size - d, x + d : x + size - d]
        if not core_valid.any():  # nodata chip: skipped, its pixels stay nodata
            self._tick(1)
            return
        inputs = {}
        for name, strip in strips.items():
            window = strip[:, :, x : x + size]
            nan = np.isnan(window)
            if nan.any():
                window = np.where(nan, self.engine.fill_values(name, window.shape[0]), window)
            inputs[name] = np.ascontiguousarray(window, dtype=np.float32)
        self.pending.append(_Pending(chip, inputs, core_valid.copy()))

    def _run_batch(self) -> None:
        if not self.pending:
            return
        engine, d, core = self.engine, self.grid.delta, self.grid.core
        batch = {
            n: torch.from_numpy(np.stack([p.inputs[n] for p in self.pending])).to(engine.device)
            for n in self.pending[0].inputs
        }
        with torch.inference_mode():
            out = engine.predict(batch)
        expected = (len(self.pending), engine.channels, self.grid.chip, self.grid.chip)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the model returned {got}; the engine expects (B, K, chip, chip) = {expected}")
        blocks = out.detach().to("cpu", torch.float64 if self.dtype == np.float64 else torch.float32).numpy()
        for p, o in zip(self.pending, blocks):
            self.acc.add(o[:, d : d + core, d : d + core], p.chip.y, p.chip.x - self.x0, p.valid)
        self._tick(len(self.pending))
        self.pending = []

    def _tick(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)

    def _flush(self, next_row: int, stop: int) -> None:
        until = min(self.grid.finished_before(next_row), stop)
        if until <= self.acc.base:
            return
        row0 = self.acc.base
        blended, covered, valid = self.acc.pop(until)
        cols = slice(self.panel[0] - self.x0, self.panel[1] - self.x0)
        mask = covered[:, cols] & valid[:, cols]
        offset = 0
        for head, writer in zip(self.engine.heads, self.writers):
            part = blended[offset : offset + head.channels, :, cols]
            offset += head.channels
            writer.write(row0, head.finalise(part, mask))


def steady_heap() -> bool:
    """Keep glibc's heap from creeping up over a long streaming run; returns whether it applied.

    glibc raises its mmap threshold each time a large block is freed, after which the engine's repeated
    multi-megabyte buffers come from the heap and fragment it: peak RSS then creeps up with the scene (about
    35 MiB from 4,096² to 8,192² in benchmarks/bench_scene.py). Fixing the threshold at 128 KiB returns those
    buffers to the system on free. This is process-wide, so only entry points (``terratim infer``, the benchmark)
    call it. Elsewhere than glibc it does nothing.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        return False
    m_mmap_threshold = -3  # <malloc.h>
    return bool(mallopt and mallopt(m_mmap_threshold, 128 * 1024))


def rank_rows(height: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous, block-aligned share of output rows for ``rank`` of ``world_size``."""
    blocks = -(-height // BLOCK)
    lo, hi = blocks * rank // world_size, blocks * (rank + 1) // world_size
    return min(lo * BLOCK, height), min(hi * BLOCK, height)


def infer_scene(
    predict: Predict,
    inputs: Mapping[str, str | os.PathLike],
    heads: Sequence[Head],
    tiling: TilingConfig = DEFAULT_TILING,
    *,
    bands: dict[str, int] | None = None,
    device: str | torch.device = "cpu",
    fill: dict | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
    fingerprint: dict | None = None,
) -> list[Path]:
    """Run a model over a scene and write every head's output (single process).

    Args:
        predict: ``{modality: (B, C, chip, chip)} -> (B, K, chip, chip)``.
        inputs: ``{modality: GeoTIFF path}``, co-registered.
        heads: output files (see :class:`Head`), in output-channel order.
        tiling: chip, overlap, delta, batch size, blend.
        bands: expected band count per modality (checked).
        device: where batches go.
        fill: NaN replacement per modality.
        overwrite: replace existing outputs (and discard an unfinished run).
        resume: continue an unfinished run of the same settings.
        progress: ``(chips done, chips total)`` callback.
        fingerprint: extra settings that a resumed run must share.

    Returns:
        the written output paths.
    """
    for head in heads:
        check_output(head.path, overwrite, resume)
    engine = SceneEngine(predict, heads, tiling, device, fill, fingerprint)
    with SceneReader(inputs, bands) as reader, block_cache(reader, engine.channels, tiling.panel):
        writers = engine.run(reader, resume=resume, progress=progress)
    return [w.finish() for w in writers]
