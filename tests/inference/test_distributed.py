"""Two CPU processes (gloo) split one scene and still write one exact, georeferenced output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from terratim.inference.distributed import part_path, rank_rows, scenes_for_rank, torch_distributed_context
from terratim.inference.engine import TilingConfig
from terratim.inference.heads import Head


def identity(batch):
    return batch["S1GRD"]


def worker(rank: int, world_size: int, init_file: str, scene: str, out: str) -> None:
    from terratim.inference.distributed import infer_scene_distributed

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        rank_, world, barrier = torch_distributed_context()

        chips = []

        def counting(batch):
            chips.append(batch["S1GRD"].shape[0])
            return identity(batch)

        infer_scene_distributed(
            counting,
            {"S1GRD": scene},
            [Head(out, 2)],
            TilingConfig(64, 16, 8, 8),
            rank=rank_,
            world_size=world,
            barrier=barrier,
        )
        (Path(out).parent / f"chips{rank}").write_text(str(sum(chips)))
    finally:
        dist.destroy_process_group()


def test_two_ranks_write_one_consistent_output(tmp_path):
    # Imported here, not at the top: the spawned ranks import this module, and in a full test run the first
    # `conftest` on their sys.path may be another directory's.
    from rasters import TRANSFORM, write_tif

    data = np.random.default_rng(3).standard_normal((2, 700, 150)).astype(np.float32)
    scene = write_tif(tmp_path / "s1.tif", data, tiled=True)
    out = tmp_path / "pred.tif"
    torch.set_num_threads(1)
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(scene), str(out)), nprocs=2, join=True)
    with rasterio.open(out) as src:
        assert np.array_equal(src.read(), data)
        assert src.transform == TRANSFORM
    assert not any(part_path(out, r, 2).exists() for r in range(2))
    chips = [int((tmp_path / f"chips{r}").read_text()) for r in range(2)]
    grid = TilingConfig(64, 16, 8, 8).grid(700, 150)
    # Both ranks worked; only one chip row (the blend overlap at rank 1's top edge) ran twice.
    assert min(chips) > 0 and sum(chips) == len(grid) + len(grid.col_offsets)


def test_rank_rows_are_block_aligned_and_cover_the_scene():
    shares = [rank_rows(1000, r, 3) for r in range(3)]
    assert shares[0][0] == 0 and shares[-1][1] == 1000
    assert all(a[1] == b[0] and a[1] % 256 == 0 for a, b in zip(shares, shares[1:]))
    assert {rank_rows(100, r, 2) for r in range(2)} == {(0, 0), (0, 100)}  # one block: one rank has it all
    assert scenes_for_rank(["a", "b", "c"], 1, 2) == ["b"]
