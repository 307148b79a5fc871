"""The learning-rate schedule shared by masked pretraining and tokenizer training."""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch.utilities.types import LRSchedulerConfigType


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int
) -> LRSchedulerConfigType:
    """Lightning's ``lr_scheduler`` entry: linear warm-up over ``warmup_steps``, then cosine decay to 0 at
    ``max_steps``, stepped every optimizer step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}


def schedule_length(max_steps: int | None, trainer: Any) -> int:
    """Steps of the schedule: ``max_steps`` when given, else the trainer's ``max_steps`` (or, without one, the
    optimizer steps it estimates from epochs and batches)."""
    if max_steps is not None:
        return max_steps
    if trainer.max_steps > 0:
        return int(trainer.max_steps)
    estimated = trainer.estimated_stepping_batches
    if not math.isfinite(estimated):
        raise ValueError("the learning-rate schedule needs a length: set trainer.max_steps or model.max_steps")
    return int(estimated)
