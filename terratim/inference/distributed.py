"""Splitting a scene (or a list of scenes) across processes, e.g. Lightning DDP ranks, with one output file.

A scene is cut into contiguous, block-aligned shares of output rows, one per rank (contiguous rather than
interleaved strips, because neighbouring chip rows share blend overlap: a contiguous share recomputes that overlap
once, at its top edge, where interleaved strips would recompute it at every strip). Each rank writes its rows to
its own part file (a GeoTIFF with the share's own transform) with its own progress file, so ranks never write to
the same file and each can resume. After a barrier rank 0 copies the parts, block row by block row, into the one
output and removes them.

With Lightning Fabric::

    fabric = Fabric(accelerator="cuda", devices=4, strategy="ddp"); fabric.launch()
    infer_scene_distributed(predict, inputs, heads, tiling, rank=fabric.global_rank,
                            world_size=fabric.world_size, barrier=fabric.barrier, device=fabric.device)

Inside a LightningModule use ``self.global_rank``, ``self.trainer.world_size`` and ``self.trainer.strategy.barrier``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from terratim.inference.engine import DEFAULT_TILING, Predict, Progress, SceneEngine, TilingConfig, rank_rows
from terratim.inference.heads import Head
from terratim.inference.scene import BLOCK, SceneReader, SceneWriter, block_cache, partial_path, progress_path
from terratim.inference.tiling import panel_ranges


def torch_distributed_context() -> tuple[int, int, Callable[[], None]]:
    """(rank, world size, barrier) from an initialised ``torch.distributed`` process group, else (0, 1, no-op)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), dist.barrier
    return 0, 1, lambda: None


def part_path(path: Path, rank: int, world_size: int) -> Path:
    """The part file rank ``rank`` writes for output ``path``."""
    return path.with_name(f"{path.name}.part{rank}of{world_size}.tif")


def infer_scene_distributed(
    predict: Predict,
    inputs: dict[str, str | os.PathLike],
    heads: Sequence[Head],
    tiling: TilingConfig = DEFAULT_TILING,
    *,
    rank: int,
    world_size: int,
    barrier: Callable[[], None],
    bands: dict[str, int] | None = None,
    device: str | torch.device = "cpu",
    fill: dict | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
    fingerprint: dict | None = None,
) -> list[Path]:
    """Run this rank's share of a scene; rank 0 then assembles one output per head.

    Every rank must call this with the same arguments (apart from ``progress``). Arguments as in
    :func:`terratim.inference.engine.infer_scene`, plus the rank, the world size and a barrier callable.

    Returns:
        the output paths (on every rank, once rank 0 has assembled them).
    """
    for head in heads:
        if head.path.exists() and not overwrite:
            raise FileExistsError(f"{head.path} exists; pass --overwrite to replace it")
        _check_part(part_path(head.path, rank, world_size), overwrite, resume)
    engine = SceneEngine(predict, heads, tiling, device, fill, fingerprint)
    with SceneReader(inputs, bands) as reader, block_cache(reader, engine.channels, tiling.panel):
        rows = rank_rows(reader.info.height, rank, world_size)
        targets = [part_path(h.path, rank, world_size) for h in heads]
        if rows[1] > rows[0]:
            engine.run(reader, resume=resume, rows=rows, targets=targets, progress=progress)
        info, fingerprint_all = reader.info, engine.fingerprint(reader)
    barrier()
    if rank == 0:
        panels = panel_ranges(info.width, tiling.panel)
        for head in heads:
            _assemble(head, info, fingerprint_all, panels, world_size)
    barrier()
    return [h.path for h in heads]


def _check_part(part: Path, overwrite: bool, resume: bool) -> None:
    leftovers = [p for p in (part, progress_path(part)) if p.exists()]
    if leftovers and not (overwrite or resume):
        raise FileExistsError(
            f"an unfinished run left {part}; pass --resume to continue it or --overwrite to start again"
        )
    if overwrite and not resume:
        for leftover in leftovers:
            leftover.unlink()


def _assemble(head: Head, info, fingerprint: dict, panels: list[tuple[int, int]], world_size: int) -> None:
    """Copy the ranks' part files, panel by panel and block row by block row, into ``head.path``."""
    import rasterio
    from rasterio.windows import Window

    spec = head.output_band()
    partial_path(spec.path).unlink(missing_ok=True)
    writer = SceneWriter(spec, info, fingerprint, panels)
    shares = [rank_rows(info.height, rank, world_size) for rank in range(world_size)]
    sources = {r: rasterio.open(part_path(head.path, r, world_size)) for r, (a, b) in enumerate(shares) if b > a}
    try:
        for col0, col1 in panels:
            for rank, src in sources.items():
                start, stop = shares[rank]
                for top in range(0, stop - start, BLOCK):
                    n = min(BLOCK, stop - start - top)
                    writer.write(start + top, src.read(window=Window(col0, top, col1 - col0, n)))
    finally:
        for src in sources.values():
            src.close()
    for rank in sources:
        part = part_path(head.path, rank, world_size)
        part.unlink()
        progress_path(part).unlink(missing_ok=True)
    writer.finish()


def scenes_for_rank(scenes: Sequence, rank: int, world_size: int) -> list:
    """Round-robin share of a list of scenes (use when there are at least as many scenes as ranks)."""
    return list(scenes[rank::world_size])
