"""Small generated GeoTIFFs for the tests (importable as ``rasters``: tests/ is on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

CRS_UTM = CRS.from_epsg(32632)
TRANSFORM = from_origin(500000.0, 4650000.0, 10.0, 10.0)  # 10 m pixels, north up
TILE = 64  # pixels per tile side of tiled files


def write_tif(
    path: Path,
    data: np.ndarray,
    nodata: float | None = None,
    *,
    crs: CRS | str = CRS_UTM,
    transform=TRANSFORM,
    tiled: bool = False,
) -> Path:
    """Write (C, H, W) pixels (dtype kept) as a GeoTIFF, creating missing folders.

    Args:
        path: output file.
        data: pixels.
        nodata: nodata value to record (NaN allowed for floats).
        crs: coordinate reference system (default UTM zone 32N).
        transform: pixel-to-CRS affine transform.
        tiled: TILE x TILE deflate-compressed tiles (as scenes are stored) instead of uncompressed strips.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    profile = {"driver": "GTiff", "count": count, "height": height, "width": width, "dtype": data.dtype.name,
               "crs": crs, "transform": transform, "nodata": nodata}
    if tiled:
        profile.update(tiled=True, blockxsize=TILE, blockysize=TILE, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path
