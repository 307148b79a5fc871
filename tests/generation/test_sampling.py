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
    greedy, confidence = sample_tokens(logits, 0.0)
    assert torch.equal(greedy, logits.argmax(-1))
    torch.testing.assert_close(confidence, logits.softmax(-1).amax(-1))
    ids_only, skipped = sample_tokens(logits, 0.0, confidence=False)  # ROAR steps skip the normalisation
    assert torch.equal(ids_only, greedy) and skipped is None


def test_sampling_follows_the_filtered_distribution():
    """Empirical frequencies match softmax(filtered logits / T) over many draws."""
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]]).expand(20000, -1)
    ids, probs = sample_tokens(logits, 0.7, top_p=0.9, generator=torch.Generator().manual_seed(0))
    expected = (top_p_filter(logits[:1], 0.9) / 0.7).softmax(-1)[0]
    counts = torch.bincount(ids, minlength=5).float() / len(ids)
    assert counts[expected == 0].sum() == 0  # nothing outside the nucleus
    torch.testing.assert_close(counts, expected, atol=0.015, rtol=0)
    torch.testing.assert_close(probs, expected[ids])


def test_peaked_rows_use_a_prefix_and_give_the_same_nucleus():
    from terratim.generation.sampling import nucleus_keep, sorted_nucleus_candidates

    logits = torch.randn(6, 4375, generator=torch.Generator().manual_seed(0))
    logits[:, :20] += 12.0  # peaked: the nucleus lies in the first 128 sorted entries
    values, order, log_total = sorted_nucleus_candidates(logits, 0.8)
    assert values.shape[-1] == 128
    full_values, full_order = torch.sort(logits, descending=True)
    prefix = nucleus_keep(values, 0.8, log_total)
    full = nucleus_keep(full_values, 0.8)
    assert torch.equal(prefix, full[:, :128]) and not full[:, 128:].any()
    kept = torch.isfinite(top_p_filter(logits, 0.8))
    assert torch.equal(kept.sum(-1), prefix.sum(-1))
    flat = torch.randn(3, 4375)
    assert sorted_nucleus_candidates(flat, 0.8)[0].shape[-1] == 4375  # falls back to the full sort
