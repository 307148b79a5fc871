"""Fixtures for the data-module tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from dm_rasters import make_sample


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for i, sid in enumerate(["a_1", "b_2", "c_3"]):
        make_sample(tmp_path, sid, seed=i)
    return tmp_path
