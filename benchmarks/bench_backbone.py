"""Backbone throughput, and the same-run ratio against TerraTorch's TerraMind when the reference is installed.

    python benchmarks/bench_backbone.py                       # CPU, fp32, tiny b1/b8, base b2/b8
    python benchmarks/bench_backbone.py --reference-site DIR  # + TerraTorch 1.2.13 in this process
    python benchmarks/bench_backbone.py --device cuda --dtype bf16 --sizes tiny base --batch-sizes 8 64

Inputs are S2L2A + S1GRD at 224 x 224 (392 tokens), random weights, eval mode, no_grad. With the reference
(``pip install --no-deps --target DIR terratorch==1.2.13 timm einops diffusers``, or TERRATIM_REFERENCE_SITE=DIR;
only its TerraMind model code is imported, see reference.py) both models run in alternation in this process,
and the script prints each side's median and spread (min-max) over the repeats and the ratio of the medians
(reference / terratim: above 1 means terratim is faster). The script asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Callable, Mapping

import torch
from common import DTYPES, device_line, flops

import terratim

INPUTS = ("S2L2A", "S1GRD")
DEFAULT_CASES = {"tiny": (1, 8), "base": (2, 8)}


def make_inputs(batch: int, size: int, device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"S2L2A": torch.randn(batch, 12, size, size, generator=g).to(device),
            "S1GRD": torch.randn(batch, 2, size, size, generator=g).to(device)}


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (KiB on Linux)


def alternate(fns: Mapping[str, Callable[[], object]], device: str, repeats: int, warmup: int,
              dtype: str = "fp32", autograd: bool = False) -> dict[str, list[float]]:
    """Seconds of each ``fn`` over ``repeats`` rounds; each round runs every fn once, in turn (same-run
    comparison: load from other processes hits all sides alike). no_grad unless ``autograd`` (graphs recorded, as
    for a model called without ``torch.no_grad()``), and autocast for bf16/fp16."""
    autocast = torch.autocast(device.split(":")[0], dtype=DTYPES[dtype], enabled=dtype != "fp32")
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.set_grad_enabled(autograd), autocast:
        for round_index in range(warmup + repeats):
            for name, fn in fns.items():
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                fn()
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                if round_index >= warmup:
                    times[name].append(time.perf_counter() - start)
    return times


def spread(seconds: list[float]) -> str:
    """'median ms (min-max)'."""
    return f"{statistics.median(seconds) * 1000:.1f} ({min(seconds) * 1000:.0f}-{max(seconds) * 1000:.0f})"


def ratio_text(other: list[float], ours: list[float]) -> str:
    """Ratio of medians, and the median (min-max) of the per-round ratios (robust to load that drifts between
    rounds on a shared machine)."""
    paired = sorted(o / t for o, t in zip(other, ours, strict=True))
    return (f"{statistics.median(other) / statistics.median(ours):.2f}x "
            f"(per round {statistics.median(paired):.2f}x, {paired[0]:.2f}-{paired[-1]:.2f})")


def load_reference_register(site: str | None):  # noqa: ANN201 (a module of the reference)
    """The reference's TerraMind register module, or None when no reference folder is given."""
    if not (site or os.environ.get("TERRATIM_REFERENCE_SITE")):
        print("no reference: pass --reference-site DIR or set TERRATIM_REFERENCE_SITE=DIR for same-run ratios")
        return None
    from reference import installed_version, load_reference, resolve_site

    root = resolve_site(site)
    register = load_reference(root)
    print(f"reference: TerraTorch {installed_version(root)} (TerraMind model code only), same process")
    return register


def reference_backbone(register, size: str, img_size: int, device: str) -> torch.nn.Module:  # noqa: ANN001
    from reference import build_reference

    model, _ = build_reference(register, f"terramind_v1_{size}", None, modalities=list(INPUTS),
                               merge_method="mean", img_size=img_size)
    return model.to(device)


def compare(size: str, batch: int, device: str = "cpu", dtype: str = "fp32", img_size: int = 224,
            repeats: int = 5, warmup: int = 2, register=None,  # noqa: ANN001
            autograd: bool = False) -> dict[str, list[float]]:
    """Seconds per batch of terratim (and the reference when given), run in alternation."""
    model = terratim.build(f"terramind_v1_{size}", modalities=list(INPUTS), img_size=img_size).eval().to(device)
    inputs = make_inputs(batch, img_size, device)
    fns: dict[str, Callable[[], object]] = {"terratim": lambda: model(inputs)}
    if register is not None:
        reference = reference_backbone(register, size, img_size, device).eval()
        fns["reference"] = lambda: reference(dict(inputs))
    return alternate(fns, device, repeats, warmup, dtype, autograd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, help="default: tiny 1 8, base 2 8")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--reference-site", help="folder with TerraTorch 1.2.13 (or TERRATIM_REFERENCE_SITE)")
    parser.add_argument("--flops", action="store_true", help="also count FLOPs (one extra call per case)")
    parser.add_argument("--autograd", action="store_true",
                        help="record autograd graphs (eval-mode models called without torch.no_grad())")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    register = load_reference_register(args.reference_site)
    grad_note = ", autograd on" if args.autograd else ""
    print(f"{device_line(args.device)}, {args.dtype}{grad_note}, {'+'.join(INPUTS)} {args.img_size}x{args.img_size}, "
          f"torch {torch.__version__}, median (min-max) of {args.repeats} alternating runs, ms per batch")
    for size in args.sizes:
        for batch in args.batch_sizes or DEFAULT_CASES.get(size, (1, 8)):
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            times = compare(size, batch, args.device, args.dtype, args.img_size, args.repeats, args.warmup,
                            register, args.autograd)
            ours = statistics.median(times["terratim"])
            line = f"{size:<5} b{batch:<3} terratim {spread(times['terratim'])}, {batch / ours:.1f} images/s"
            for other in ("reference",):
                if other in times:
                    line += f" | {other} {spread(times[other])} -> {ratio_text(times[other], times['terratim'])}"
            if args.flops:
                model = terratim.build(f"terramind_v1_{size}", modalities=list(INPUTS)).eval().to(args.device)
                inputs = make_inputs(batch, args.img_size, args.device)
                line += f" | {flops(lambda: model(inputs)) / 1e9:.1f} GFLOP"
            print(line + f" | peak {peak_memory_mb(args.device):.0f} MB", flush=True)


if __name__ == "__main__":
    main()
