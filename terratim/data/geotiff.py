"""GeoTIFF reading and writing with rasterio: nodata as NaN, georeferencing kept, no silent overwrites."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Raster:
    """Pixels and georeferencing of one GeoTIFF.

    Attributes:
        data: (C, H, W) float32, nodata pixels set to NaN.
        profile: rasterio profile of the source (crs, transform, width, height, dtype, nodata, ...).
        path: where it was read from.
    """

    data: np.ndarray
    profile: dict
    path: Path

    @property
    def crs(self):
        return self.profile.get("crs")

    @property
    def transform(self):
        return self.profile.get("transform")


def _rasterio():
    try:
        import rasterio
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("GeoTIFF I/O needs rasterio: pip install rasterio") from err
    return rasterio


def read_geotiff(path: str | os.PathLike, expected_bands: int | None = None, what: str = "") -> Raster:
    """Read a GeoTIFF as float32 (C, H, W) with nodata -> NaN.

    Args:
        path: file to read.
        expected_bands: if given, the band count the caller needs; a different count raises ``ValueError``.
        what: a label for error messages, e.g. the modality name.
    """
    rasterio = _rasterio()
    path = Path(path)
    label = f"{what} " if what else ""
    if not path.is_file():
        raise FileNotFoundError(f"{label}file not found: {path}")
    try:
        with rasterio.open(path) as src:
            data = src.read(masked=True)
            profile = dict(src.profile)
    except rasterio.errors.RasterioIOError as err:
        raise ValueError(f"{label}file {path} is not a readable GeoTIFF: {err}") from err
    if expected_bands is not None and data.shape[0] != expected_bands:
        raise ValueError(f"{label}file {path} has {data.shape[0]} bands, expected {expected_bands}")
    array = np.ma.filled(data.astype(np.float32), np.nan)
    return Raster(array, profile, path)


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to replace an existing file unless ``overwrite``; create the parent folder."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_geotiff(
    path: str | os.PathLike,
    data: np.ndarray,
    like: dict | None = None,
    nodata: float | int | None = None,
    overwrite: bool = False,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
) -> Path:
    """Write (C, H, W) or (H, W) pixels as a tiled, deflate-compressed GeoTIFF.

    Args:
        path: output file.
        data: pixels; the dtype is kept (use uint8 for class maps, float32 for continuous values).
        like: a source profile whose CRS and transform are copied (None writes without georeferencing).
        nodata: nodata value to record.
        overwrite: replace an existing file.
        colormap: optional colour table for single-band uint8 class maps.
    """
    rasterio = _rasterio()
    path = check_writable(path, overwrite)
    if data.ndim == 2:
        data = data[None]
    count, height, width = data.shape
    profile = {"driver": "GTiff", "count": count, "height": height, "width": width, "dtype": data.dtype.name,
               "compress": "deflate"}  # fmt: skip
    if height >= 256 and width >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if like is not None:
        profile.update(crs=like.get("crs"), transform=like.get("transform"))
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if colormap is not None:
            dst.write_colormap(1, colormap)
    return path
