"""Sampling filters and schedules."""

from __future__ import annotations

import torch

from terratim.generation.sampling import sample_tokens, top_k_filter, top_p_filter
from terratim.generation.schedules import cosine_schedule, linear_schedule, temperature_schedule


def test_linear_schedule_examples_from_the_spec():
    assert linear_schedule(1, 196) == [196]
    assert linear_schedule(3, 196) == [66, 65, 65]
    assert sum(linear_schedule(7, 256)) == 256


def test_cosine_schedule_sums_and_grows():
    counts = cosine_schedule(4, 196)
    assert sum(counts) == 196 and counts[0] < counts[-1] or counts[0] <= counts[1]


def test_temperature_schedules():
    assert temperature_schedule("constant", 0.7, [2, 2]) == [0.7, 0.7]
    assert temperature_schedule("linear", 1.0, [2, 2]) == [1.0, 0.5]
    onex = temperature_schedule("onex:0.1:1", 1.0, [1, 1, 2])
    assert onex[0] == 1.0 and abs(onex[-1] - 0.1) < 1e-9


def test_top_k_keeps_k_best():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    kept = torch.isfinite(top_k_filter(logits, 2))
    assert kept.tolist() == [[False, True, True, False]]
    assert torch.isfinite(top_k_filter(logits, 0.5)).sum() == 2


def test_top_p_keeps_the_first_entry_crossing_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(top_p_filter(probs.log(), 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(probs.log(), 0.1)).tolist() == [[True, False, False, False]]


def test_sampling_is_reproducible_with_a_generator_and_argmax_at_zero():
    logits = torch.randn(3, 5, 50, generator=torch.Generator().manual_seed(0))
    a, _ = sample_tokens(logits, 1.0, generator=torch.Generator().manual_seed(1))
    b, _ = sample_tokens(logits, 1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    greedy, _ = sample_tokens(logits, 0.0)
    assert torch.equal(greedy, logits.argmax(-1))
