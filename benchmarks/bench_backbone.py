"""Backbone throughput: images/s, ms per batch, FLOPs and peak memory per size and batch size.

    python benchmarks/bench_backbone.py                       # CPU, fp32, tiny+base, batch 1 and 8
    python benchmarks/bench_backbone.py --device cuda --dtype bf16 --sizes tiny base --batch-sizes 8 64

Inputs are S2L2A + S1GRD at 224 x 224 (392 tokens), as in the reference figures the issue quotes
(2 CPU cores, fp32: tiny batch 8 0.437 s, base batch 8 4.46 s; H200 bf16: base batch 64 16.6 ms, tiny batch 8
4.0 ms). The script prints our numbers next to those and the ratio; it asserts nothing.
"""

from __future__ import annotations

import argparse
import resource

import torch
from common import DTYPES, device_line, flops, timed

import terratim

REFERENCE_SECONDS = {("cpu", "fp32", "tiny", 8): 0.437, ("cpu", "fp32", "base", 8): 4.46,
                     ("cuda", "bf16", "base", 64): 0.0166, ("cuda", "bf16", "tiny", 8): 0.0040,
                     ("cuda", "fp32", "tiny", 8): 0.0040}  # fmt: skip


def make_inputs(batch: int, size: int, device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"S2L2A": torch.randn(batch, 12, size, size, generator=g).to(device),
            "S1GRD": torch.randn(batch, 2, size, size, generator=g).to(device)}  # fmt: skip


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (KiB on Linux)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    device_kind = args.device.split(":")[0]
    print(f"{device_line(args.device)}, {args.dtype}, S2L2A+S1GRD {args.img_size}x{args.img_size}, "
          f"torch {torch.__version__}")
    header = (f"{'size':<6}{'batch':>6}{'ms/batch':>11}{'images/s':>10}{'GFLOP/batch':>13}"
              f"{'TFLOP/s':>9}{'peak MB':>9}{'reference':>11}{'speed-up':>9}")  # fmt: skip
    print(header)
    for size in args.sizes:
        model = terratim.build(f"terramind_v1_{size}", modalities=["S2L2A", "S1GRD"],
                               img_size=args.img_size).eval().to(args.device)  # fmt: skip
        if args.compile:
            model = torch.compile(model)
        for batch in args.batch_sizes:
            if device_kind == "cuda":
                torch.cuda.reset_peak_memory_stats()
            inputs = make_inputs(batch, args.img_size, args.device)
            flop_count = flops(lambda: model(inputs))
            median = timed(lambda: model(inputs), args.device, args.repeats, args.warmup, args.dtype)
            reference = REFERENCE_SECONDS.get((device_kind, args.dtype, size, batch))
            ref_text = f"{reference * 1000:.1f} ms" if reference else "-"
            speedup = f"{reference / median:.2f}x" if reference else "-"
            print(f"{size:<6}{batch:>6}{median * 1000:>11.1f}{batch / median:>10.1f}"
                  f"{flop_count / 1e9:>13.1f}{flop_count / median / 1e12:>9.2f}{peak_memory_mb(args.device):>9.0f}"
                  f"{ref_text:>11}{speedup:>9}")  # fmt: skip


if __name__ == "__main__":
    main()
