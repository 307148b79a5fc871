"""Small generated GeoTIFF scenes for the inference tests (helpers; fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
