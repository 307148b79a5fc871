"""Inference precision that fits the hardware: ``fp32``, ``bf16`` or ``auto``.

``auto`` picks bf16 where the hardware computes it natively (CPUs with AVX512-BF16 or AMX, CUDA devices with
bf16 support) and fp32 elsewhere. bf16 runs the model under :func:`torch.autocast`: matrix products and
convolutions in bf16, reductions and normalisations as autocast decides; outputs come back as float32::

    from terratim.precision import autocast, resolve_precision

    precision = resolve_precision("auto", "cpu")      # "bf16" or "fp32"
    with torch.no_grad(), autocast(precision, "cpu"):
        layers = model(inputs)

Parity tests and training stay fp32.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

PRECISIONS = ("fp32", "bf16", "auto")
CPUINFO = Path("/proc/cpuinfo")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty where that file does not exist)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), from its flags or PyTorch's capability."""
    if cpu_flags() & set(BF16_CPU_FLAGS):
        return True
    return "AMX" in torch.backends.cpu.get_cpu_capability().upper()


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether the CUDA device computes bf16 natively (compute capability 8.0 and later)."""
    if not torch.cuda.is_available():
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index)[0] >= 8


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes bf16 natively."""
    device = torch.device(device)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    if device.type == "cuda":
        return cuda_has_native_bf16(device)
    return False


def resolve_precision(precision: str, device: str | torch.device = "cpu", report: bool = False) -> str:
    """``fp32``/``bf16`` as given; ``auto`` -> ``bf16`` where ``device`` computes it natively, else ``fp32``.

    With ``report`` an ``auto`` choice is printed (``precision auto -> bf16 (cpu has native bf16)``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    chosen = "bf16" if native_bf16(device) else "fp32"
    if report:
        why = "has native bf16" if chosen == "bf16" else "has no native bf16"
        print(f"precision auto -> {chosen} ({device.type} {why})")
    return chosen


def autocast(precision: str, device: str | torch.device = "cpu") -> contextlib.AbstractContextManager[Any]:
    """A context running the model in ``precision`` (``fp32``: nothing changes; ``bf16``: torch.autocast).

    ``precision`` must already be resolved (see :func:`resolve_precision`).
    """
    if precision == "auto":
        raise ValueError("resolve precision 'auto' first with resolve_precision(precision, device)")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be fp32 or bf16; got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


@contextlib.contextmanager
def precision_context(precision: str, device: str | torch.device = "cpu", report: bool = True) -> Iterator[str]:
    """Resolve ``precision`` (``auto`` included) and run the block under it; yields the resolved name."""
    chosen = resolve_precision(precision, device, report)
    with autocast(chosen, device):
        yield chosen


def with_precision(
    predict: Callable[..., torch.Tensor], precision: str, device: str | torch.device = "cpu"
) -> Callable[..., torch.Tensor]:
    """``predict`` run under the resolved ``precision``, its tensor output returned as float32."""
    if precision == "fp32":
        return predict

    @functools.wraps(predict)
    def run(*args: Any, **kwargs: Any) -> torch.Tensor:
        with autocast(precision, device):
            out = predict(*args, **kwargs)
        return out.float() if out.is_floating_point() else out

    return run
