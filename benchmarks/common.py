"""Small timing and FLOP helpers shared by the benchmark scripts."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, repeats: int, warmup: int, dtype: str = "fp32") -> float:
    """Median seconds of ``fn()`` under no_grad (and autocast for bf16/fp16)."""
    autocast = torch.autocast(device.split(":")[0], dtype=DTYPES[dtype], enabled=dtype != "fp32")
    times = []
    with torch.no_grad(), autocast:
        for i in range(warmup + repeats):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call (matrix products and attention, as torch counts them)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s "Model name"), else the platform's description."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_line(device: str) -> str:
    """The device the figures are for: the GPU's name, or the CPU model and thread count."""
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name()})"
    return f"cpu {cpu_model()} ({torch.get_num_threads()} threads)"
