"""Token-count and temperature schedules for iterative decoding (cosine / linear token schedules, linear /
constant / ``onex`` temperatures, as in TerraTorch's terratorch/models/backbones/terramind/model/generate.py)."""

from __future__ import annotations

import math

import torch


def linear_schedule(steps: int, total: int) -> list[int]:
    """Counts per step from an integer linspace(0, total, steps+1), largest first, zeros dropped.

    (1, 196) -> [196]; (3, 196) -> [66, 65, 65].
    """
    if steps < 1:
        raise ValueError(f"decoding steps must be >= 1, got {steps}")
    cuts = torch.linspace(0, total, steps + 1).round().long().tolist()
    counts = sorted((b - a for a, b in zip(cuts, cuts[1:])), reverse=True)
    return [c for c in counts if c > 0]


def cosine_schedule(steps: int, total: int) -> list[int]:
    """MaskGIT's cosine schedule: few tokens first, more later; counts sum to ``total``."""
    if steps < 1:
        raise ValueError(f"decoding steps must be >= 1, got {steps}")
    s = [0.5 * (1 + math.cos(math.pi * i / steps)) for i in range(steps + 1)]
    counts = [round(total * (s[i] - s[i + 1])) for i in range(steps - 1)]
    counts.append(total - sum(counts))
    return [c for c in counts if c > 0]


TOKEN_SCHEDULES = {"linear": linear_schedule, "cosine": cosine_schedule}


def temperature_schedule(kind: str, temperature: float, counts: list[int]) -> list[float]:
    """Temperature per step: ``constant``, ``linear`` (T * remaining / total) or ``onex:{min_t}:{power}``."""
    total = sum(counts)
    remaining = [total - sum(counts[:i]) for i in range(len(counts))]
    if kind == "constant":
        temps = [temperature] * len(counts)
    elif kind == "linear":
        temps = [temperature * r / total for r in remaining]
    elif kind.startswith("onex"):
        _, min_t, power = kind.split(":")
        done = [total - r + 1 for r in remaining]  # tokens decoded before this step, 1-based
        curve = [1.0 / d ** float(power) for d in done]
        lo, hi = min(curve), max(curve)
        span = (hi - lo) or 1.0
        temps = [float(min_t) + (temperature - float(min_t)) * (c - lo) / span for c in curve]
    else:
        raise ValueError(f"unknown temperature schedule {kind!r}; use constant, linear or onex:MIN:POWER")
    return [max(t, 1e-9) if temperature > 0 else 0.0 for t in temps]
