"""Fixtures for the inference tests."""

from __future__ import annotations

import numpy as np
import pytest

from rasters import write_tif


@pytest.fixture
def make_scene(tmp_path):
    """``make_scene(name, bands, height, width, seed=0, nodata=None)`` -> (path, data)."""

    def make(name: str, bands: int, height: int, width: int, seed: int = 0, **kwargs):
        data = np.random.default_rng(seed).standard_normal((bands, height, width)).astype(np.float32)
        return write_tif(tmp_path / f"{name}.tif", data, **kwargs, tiled=True), data

    return make
