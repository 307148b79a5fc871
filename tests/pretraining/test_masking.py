"""Dirichlet token budgets: exact totals, caps, disjoint input/target positions, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terratim.pretraining.masking import MaskingConfig, select_tokens, split_budget

INPUTS = {"untok_sen1grd@224": 16, "untok_dem@224": 16, "tok_lulc@224": 16}
TARGETS = {"tok_lulc@224": 16, "tok_dem@224": 16}
SOURCE = {"untok_sen1grd@224": "S1GRD", "untok_dem@224": "DEM", "tok_lulc@224": "LULC", "tok_dem@224": "DEM"}


def test_split_budget_sums_exactly_and_respects_capacity() -> None:
    counts = split_budget(np.array([0.7, 0.2, 0.1]), 10, np.array([3, 10, 10]))
    assert counts.sum() == 10 and counts[0] == 3  # the overflow of the capped modality went elsewhere
    np.testing.assert_array_equal(split_budget(np.array([0.5, 0.5]), 4, np.array([4, 4])), [2, 2])
    with pytest.raises(ValueError, match="exceeds"):
        split_budget(np.array([1.0]), 5, np.array([4]))


def test_selection_budgets_positions_and_disjointness() -> None:
    config = MaskingConfig(input_tokens=20, target_tokens=12, alpha=1.0)
    sel = select_tokens(64, INPUTS, TARGETS, SOURCE, config, torch.Generator().manual_seed(0))
    assert sel.input_index.shape == (64, 20) and sel.target_index.shape == (64, 12)
    assert (sel.input_counts.sum(1) == 20).all() and (sel.target_counts.sum(1) == 12).all()
    for b in range(64):
        inputs, targets = sel.input_index[b].tolist(), sel.target_index[b].tolist()
        assert len(set(inputs)) == 20 and len(set(targets)) == 12  # no token chosen twice
        # Same-modality positions: DEM input (offset 16) vs DEM target (offset 16), LULC (32 vs 0).
        dem_in = {i - 16 for i in inputs if 16 <= i < 32}
        dem_out = {i - 16 for i in targets if 16 <= i < 32}
        lulc_in = {i - 32 for i in inputs if i >= 32}
        lulc_out = {i for i in targets if i < 16}
        assert not dem_in & dem_out and not lulc_in & lulc_out


def test_dirichlet_spreads_budgets_and_is_seeded() -> None:
    config = MaskingConfig(input_tokens=24, target_tokens=16, alpha=0.2)
    a = select_tokens(200, INPUTS, TARGETS, SOURCE, config, torch.Generator().manual_seed(3))
    b = select_tokens(200, INPUTS, TARGETS, SOURCE, config, torch.Generator().manual_seed(3))
    assert torch.equal(a.input_index, b.input_index) and torch.equal(a.target_index, b.target_index)
    # Small alpha: many samples draw most inputs from one modality; every modality gets used somewhere.
    share = a.input_counts.max(1).values.float() / 24
    assert (share >= 0.6).float().mean() > 0.5
    assert (a.input_counts > 0).any(0).all() and (a.target_counts > 0).any(0).all()
    c = select_tokens(200, INPUTS, TARGETS, SOURCE, config, torch.Generator().manual_seed(4))
    assert not torch.equal(a.input_index, c.input_index)


def test_impossible_budgets_and_duplicate_inputs_raise() -> None:
    with pytest.raises(ValueError, match="too large"):
        select_tokens(2, INPUTS, TARGETS, SOURCE, MaskingConfig(40, 12))
    with pytest.raises(ValueError, match="once"):
        select_tokens(2, {"untok_dem@224": 4, "tok_dem@224": 4}, {"tok_lulc@224": 4},
                      {**SOURCE, "tok_lulc@224": "LULC"}, MaskingConfig(2, 2))
