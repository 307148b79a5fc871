"""Shared test setup: fp32 without TF32, and the regenerated official-layout parity weights."""

from __future__ import annotations

import pytest
import torch

import fixture_weights

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


@pytest.fixture(scope="session")
def tiny_checkpoint():
    """Path of the regenerated ``TerraMind_v1_tiny.pt``-layout parity weights (hash-checked)."""
    return fixture_weights.materialize("tiny_v1_seed1001")


@pytest.fixture(scope="session")
def tiny_state(tiny_checkpoint):
    from terratim.weights import read_state_dict

    return read_state_dict(tiny_checkpoint)
