"""The shared learning-rate schedule of pretraining and tokenizer training."""

from __future__ import annotations

import math

import torch

from terratim.pretraining.schedule import warmup_cosine_schedule


def test_linear_warmup_then_cosine_to_zero():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    entry = warmup_cosine_schedule(optimizer, warmup_steps=4, max_steps=12)
    assert entry["interval"] == "step"
    factors = [entry["scheduler"].lr_lambdas[0](step) for step in range(14)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert math.isclose(factors[8], 0.5) and factors[12] == factors[13] == 0.0
