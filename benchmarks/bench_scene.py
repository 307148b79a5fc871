"""Streaming tiled inference over generated scenes: throughput and peak memory against scene size.

Usage::

    python benchmarks/bench_scene.py                       # 1024, 4096, 8192 px on CPU
    python benchmarks/bench_scene.py --sizes 1024 2048 --device cuda --batch-size 64

Each scene is made in one process and run in another, fresh one, so the peak RSS reported (``resource.getrusage``,
the process high-water mark) is that run's alone. The scene is a 2-band float32 S1GRD-like GeoTIFF (tiled,
deflate). The model is a tiny 2-layer conv net (2 -> 8 -> 3 channels): the figures
measure the engine (reads, chipping, blending, writing), not a network. Expect seconds per megapixel to stay
constant (time linear in area) and peak RSS to stay flat.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_scene(path: Path, size: int) -> None:
    """A smooth 2-band scene with a little noise, written 256 rows at a time."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = {"driver": "GTiff", "count": 2, "height": size, "width": size, "dtype": "float32",
               "crs": "EPSG:32631", "transform": from_origin(600000, 5000000, 10, 10), "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate", "BIGTIFF": "IF_SAFER"}
    rng = np.random.default_rng(0)
    cols = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, size, 256):
            rows = np.arange(top, min(top + 256, size), dtype=np.float32)[:, None]
            base = np.sin(rows / 97.0) * np.cos(cols / 61.0) * 5 - 12
            noise = rng.normal(0, 0.1, (2, len(rows), size)).astype(np.float32)
            dst.write((base[None] + noise).astype(np.float32), window=Window(0, top, size, len(rows)))


def run_one(size: int, device: str, chip: int, overlap: int, batch_size: int, panel: int, steady: bool,
            workdir: Path) -> dict:
    """Time one scene in this process and report its peak RSS."""
    import torch

    from terratim.inference.engine import TilingConfig, infer_scene, steady_heap
    from terratim.inference.heads import Head

    heap = steady_heap() if steady else False  # what `terratim infer` does

    scene, out = workdir / f"scene_{size}.tif", workdir / f"pred_{size}.tif"
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 1))
    model = model.to(device).eval()

    def predict(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(batch["S1GRD"])

    tiling = TilingConfig(chip, overlap, 8, batch_size, panel=panel)
    chips = len(tiling.grid(size, size))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    infer_scene(predict, {"S1GRD": scene}, [Head(out, 3)], tiling, device=device, overwrite=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": size, "chips": chips, "seconds": round(seconds, 2),
            "megapixels_per_s": round(size * size / seconds / 1e6, 3),
            "seconds_per_megapixel": round(seconds / (size * size / 1e6), 3),
            "peak_rss_mib": round(peak), "rss_before_run_mib": round(rss_before),
            "output_mib": round(out.stat().st_size / 2**20, 1), "steady_heap": heap}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chip", type=int, default=224)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--panel", type=int, default=2048, help="columns at a time (0 = whole width)")
    parser.add_argument("--glibc-default-heap", action="store_true",
                        help="leave glibc's dynamic mmap threshold on (terratim infer turns it off)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size, print JSON
    parser.add_argument("--make", type=int, help=argparse.SUPPRESS)  # internal: write one scene
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        make_scene(args.workdir / f"scene_{args.make}.tif", args.make)
        return 0
    if args.one:
        result = run_one(args.one, args.device, args.chip, args.overlap, args.batch_size, args.panel,
                         not args.glibc_default_heap, args.workdir)
        print(json.dumps(result))
        return 0
    print(f"device={args.device} chip={args.chip} overlap={args.overlap} batch={args.batch_size} panel={args.panel} "
          f"steady_heap={not args.glibc_default_heap}")
    print(f"{'size':>6} {'chips':>6} {'seconds':>8} {'Mpx/s':>7} {'s/Mpx':>6} {'peak RSS MiB':>13} {'out MiB':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            subprocess.run([sys.executable, __file__, "--make", str(size), "--workdir", tmp], check=True)
            cmd = [sys.executable, __file__, "--one", str(size), "--workdir", tmp, "--device", args.device,
                   "--chip", str(args.chip), "--overlap", str(args.overlap),
                   "--batch-size", str(args.batch_size), "--panel", str(args.panel)]
            cmd += ["--glibc-default-heap"] if args.glibc_default_heap else []
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            r = json.loads(line)
            print(f"{r['size']:>6} {r['chips']:>6} {r['seconds']:>8} {r['megapixels_per_s']:>7} "
                  f"{r['seconds_per_megapixel']:>6} {r['peak_rss_mib']:>13} {r['output_mib']:>8}",
                  flush=True)
            for name in (f"scene_{size}.tif", f"pred_{size}.tif"):
                (Path(tmp) / name).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
