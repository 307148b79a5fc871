"""Small generated GeoTIFF scenes for the inference tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

CRS_UTM = CRS.from_epsg(32632)
TRANSFORM = from_origin(500000.0, 4650000.0, 10.0, 10.0)


def write_scene(
    path: Path, data: np.ndarray, nodata: float | None = None, transform=TRANSFORM, crs=CRS_UTM, tiled: bool = True
) -> Path:
    """Write (C, H, W) float32 as a GeoTIFF with UTM georeferencing."""
    count, height, width = data.shape
    profile = {
        "driver": "GTiff",
        "count": count,
        "height": height,
        "width": width,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "compress": "deflate",
    }
    if tiled:
        profile.update(tiled=True, blockxsize=64, blockysize=64)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture
def make_scene(tmp_path):
    """``make_scene(name, bands, height, width, seed=0, nodata=None)`` -> (path, data)."""

    def make(name: str, bands: int, height: int, width: int, seed: int = 0, **kwargs):
        data = np.random.default_rng(seed).standard_normal((bands, height, width)).astype(np.float32)
        return write_scene(tmp_path / f"{name}.tif", data, **kwargs), data

    return make
