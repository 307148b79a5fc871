"""Fixtures for the fine-tuning tests (one torch thread, a session-wide Sen1Floods11-style tree)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finetune_data import make_flood_tree


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and far faster than two threads on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def flood_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide tree; tests must not modify it."""
    root = tmp_path_factory.mktemp("flood")
    make_flood_tree(root)
    return root
