"""The projections alone: terratim's fused ``Linear`` (oneDNN) against ``F.linear`` (``addmm``, the BLAS), GFLOP/s.

    python benchmarks/bench_linear.py                 # the tiny backbone's projections at batch 8, and 2048^3
    python benchmarks/bench_linear.py --tokens 392    # batch 1

Each row times the two forms in alternation (``--repeats`` rounds after ``--warmup``), fp32, no_grad, and prints
their medians as GFLOP/s and the ratio (BLAS time / terratim time: above 1 means the fused form is faster). The
forms match what the blocks compute: ``qkv`` and ``proj`` plain and with the residual added, ``fc1`` with exact
GELU, ``fc2`` with the residual; the plain side adds the same operations after ``addmm``. On x86-64 CPUs PyTorch's
BLAS is MKL; which kernels MKL and oneDNN pick depends on the processor, so the figures belong to the machine they
run on. Large outputs would otherwise come from fresh ``mmap`` pages on every call (page faults the model's own
forward does not pay once its buffers are reused), so the script first asks glibc to keep freed memory
(``mallopt``; the header says whether it could). The script asserts nothing.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from bench_backbone import alternate, ratio_text
from common import device_line

from terratim.layers import Linear
from terratim.layers.linear import fused_inference_available

TINY = 192  # width of TerraMind tiny


def keep_freed_memory() -> bool:
    """glibc: serve allocations up to 32 MiB from the heap and never trim it, so timings leave out page faults."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


def cases(tokens: int) -> list[tuple[str, int, int, int, str]]:
    """(name, rows, in, out, form) with form one of 'plain', 'gelu', 'add'."""
    return [
        ("qkv", tokens, TINY, 3 * TINY, "plain"),
        ("proj + residual", tokens, TINY, TINY, "add"),
        ("fc1 + GELU", tokens, TINY, 4 * TINY, "gelu"),
        ("fc2 + residual", tokens, 4 * TINY, TINY, "add"),
        ("2048^3", 2048, 2048, 2048, "plain"),
    ]


def forms(layer: Linear, x: torch.Tensor, residual: torch.Tensor, form: str) -> tuple[Callable, Callable]:
    """(terratim's fused call, the same result through F.linear and separate ops)."""
    weight, bias = layer.weight, layer.bias
    if form == "gelu":
        return lambda: layer.activated(x, "gelu"), lambda: F.gelu(F.linear(x, weight, bias))
    if form == "add":
        return lambda: layer.combined(x, residual, "add"), lambda: F.linear(x, weight, bias) + residual
    return lambda: layer(x), lambda: F.linear(x, weight, bias)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=8 * 392, help="rows of each product (default 3136: b8)")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steady = keep_freed_memory()
    print(f"{device_line('cpu')}, torch {torch.__version__}, fp32; fused path available: "
          f"{fused_inference_available()}; freed memory kept: {steady}; median of {args.repeats} alternating runs")
    print("| product (rows x in -> out) | terratim Linear GFLOP/s | F.linear GFLOP/s | ratio |")
    print("|---|---|---|---|")
    generator = torch.Generator().manual_seed(0)
    for name, rows, fan_in, fan_out, form in cases(args.tokens):
        layer = Linear(fan_in, fan_out).eval()
        x = torch.randn(rows, fan_in, generator=generator)
        residual = torch.randn(rows, fan_out, generator=generator)
        fused, plain = forms(layer, x, residual, form)
        times = alternate({"fused": fused, "plain": plain}, "cpu", args.repeats, args.warmup)
        gflop = 2 * rows * fan_in * fan_out / 1e9
        ours, blas = statistics.median(times["fused"]), statistics.median(times["plain"])
        print(f"| {name} ({rows} x {fan_in} -> {fan_out}) | {gflop / ours:.0f} | {gflop / blas:.0f} | "
              f"{ratio_text(times['plain'], times['fused'])} |", flush=True)


if __name__ == "__main__":
    main()
