"""GeoTIFF reading and writing with rasterio: nodata as NaN, georeferencing kept, no silent overwrites."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from terratim import modalities as mods


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


CLASS_NODATA = 255  # the nodata value of uint8 class maps


def color_table(colors: Sequence[str]) -> dict[int, tuple[int, int, int, int]]:
    """``["#rrggbb", ...]`` -> a GeoTIFF colour table ``{class: (r, g, b, 255)}``; class 255 (nodata) transparent."""
    table = {i: (int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16), 255) for i, c in enumerate(colors)}
    table[CLASS_NODATA] = (0, 0, 0, 0)
    return table


def read_geotiff(path: str | os.PathLike, expected_bands: int | None = None, what: str = "") -> Raster:
    """Read a GeoTIFF as float32 (C, H, W) with nodata -> NaN.

    Args:
        path: file to read.
        expected_bands: if given, the band count the caller needs; a different count raises ``ValueError``.
        what: a label for error messages, e.g. the modality name.
    """
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
    """Check, before any work, that ``path`` can be written: refuse to replace an existing file unless
    ``overwrite``, create the parent folder, and create (then remove) a probe file in it.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        IsADirectoryError: ``path`` is a folder.
        NotADirectoryError: a folder on the way is an existing file.
        PermissionError: the folder cannot be created or written (read-only, no such file system entry, ...).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder; give a file name")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"cannot replace {path}: the file is read-only")
    make_folder(path.parent, for_file=path)
    _probe(path.parent, path)
    return path


def make_folder(folder: Path, for_file: Path | None = None) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the folders created (outermost first).

    Raises:
        NotADirectoryError: a component of ``folder`` is an existing file.
        PermissionError: a folder cannot be created.
    """
    target = for_file if for_file is not None else folder
    missing = []
    existing = folder
    while not existing.exists() and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write {target}: {existing} is a file, not a folder")
    for created in reversed(missing):
        try:
            created.mkdir()
        except FileExistsError:
            continue  # made meanwhile by someone else
        except OSError as err:
            raise PermissionError(f"cannot write {target}: cannot create folder {created} ({err.strerror})") from err
    return list(reversed(missing))


def _probe(folder: Path, target: Path) -> None:
    """Create and remove an empty file in ``folder``: the only check that also holds for root and odd mounts."""
    import tempfile

    try:
        handle, name = tempfile.mkstemp(dir=folder, prefix=".terratim-write-check-")
    except OSError as err:
        raise PermissionError(f"cannot write {target}: folder {folder} is not writable ({err.strerror})") from err
    os.close(handle)
    os.unlink(name)


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
    path = check_writable(path, overwrite)
    if data.ndim == 2:
        data = data[None]
    count, height, width = data.shape
    profile = {
        "driver": "GTiff",
        "count": count,
        "height": height,
        "width": width,
        "dtype": data.dtype.name,
        "compress": "deflate",
    }
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


# -------------------------------------------------------------------------------------- model inputs
def read_modality_rasters(files: Mapping[str, str | os.PathLike]) -> dict[str, Raster]:
    """Read one GeoTIFF per modality, checked for the modality's band count, at least one valid pixel each
    (:func:`require_valid_pixels`) and one common grid (:func:`check_same_grid`).

    Args:
        files: ``{modality name: path}``, e.g. ``{"S2L2A": "s2.tif", "S1RTC": "s1.tif"}``.

    Returns:
        ``{modality name: Raster}`` in the order of ``files``.
    """
    rasters = {}
    for name, path in files.items():
        rasters[name] = read_geotiff(path, expected_bands=mods.resolve(name).num_bands, what=name)
        require_valid_pixels(rasters[name], name)
    check_same_grid(rasters)
    return rasters


def raster_tensors(rasters: Mapping[str, Raster]) -> dict[str, torch.Tensor]:
    """``{name: Raster}`` -> ``{name: (1, C, H, W) tensor}``: image modalities standardized with the modality
    statistics (:meth:`terratim.modalities.Modality.standardize`), other modalities (class maps) as read."""
    tensors = {}
    for name, raster in rasters.items():
        modality = mods.resolve(name)
        x = torch.from_numpy(raster.data)[None]  # (1, C, H, W)
        tensors[name] = modality.standardize(x) if modality.kind == "image" else x
    return tensors


# ----------------------------------------------------------------------------------------- input checks
@dataclass(frozen=True)
class Grid:
    """The pixel grid of a raster: size, CRS and affine transform."""

    height: int
    width: int
    crs: object
    transform: object


def _grid_and_path(source) -> tuple[Grid, str]:
    """Grid and file name of a :class:`Raster`, a ``(path, profile)`` pair or an open rasterio dataset."""
    if isinstance(source, Raster):
        profile, path = source.profile, source.path
    elif isinstance(source, tuple):
        path, profile = source
    else:  # an open rasterio dataset
        profile, path = source.profile, source.name
    grid = Grid(int(profile["height"]), int(profile["width"]), profile.get("crs"), profile.get("transform"))
    return grid, str(path)


def _same_transform(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return a.almost_equals(b)


def grid_differences(grid: Grid, reference: Grid) -> list[str]:
    """What differs between two grids, as readable phrases (empty when they are the same)."""
    problems = []
    if (grid.height, grid.width) != (reference.height, reference.width):
        problems.append(f"size {grid.height}x{grid.width} vs {reference.height}x{reference.width}")
    if grid.crs != reference.crs:
        problems.append(f"CRS {grid.crs} vs {reference.crs}")
    if not _same_transform(grid.transform, reference.transform):
        show = [_six(t) for t in (grid.transform, reference.transform)]
        problems.append(f"transform {show[0]} vs {show[1]}")
    return problems


def check_same_grid(sources: dict) -> Grid:
    """Check that several rasters cover the same place on the same pixel grid (CRS, transform, size).

    Args:
        sources: ``{modality: source}``, each a :class:`Raster`, a ``(path, rasterio profile)`` pair or an open
            rasterio dataset.

    Returns:
        the common grid.

    Raises:
        ValueError: naming both files and modalities and what differs.
    """
    if not sources:
        raise ValueError("no inputs given; pass at least one MODALITY=path")
    (first, source), *others = sources.items()
    reference, reference_path = _grid_and_path(source)
    for name, other in others:
        grid, path = _grid_and_path(other)
        problems = grid_differences(grid, reference)
        if problems:
            raise ValueError(
                f"inputs are not co-registered: {name} ({path}) and {first} ({reference_path}) differ in "
                f"{'; '.join(problems)}. Reproject/resample them onto one grid first (e.g. gdalwarp)."
            )
    return reference


def no_valid_pixel_error(path: str | os.PathLike, what: str) -> ValueError:
    """The one error for an input whose every pixel is nodata or NaN."""
    label = f"{what} input" if what else "input"
    return ValueError(
        f"{label} {path} has no valid pixel: every pixel is nodata or NaN in every band; check the "
        "file, its nodata value and the window you cut"
    )


def _six(transform: Any) -> tuple[float, ...] | None:
    """The six coefficients of an affine transform, for messages."""
    return None if transform is None else tuple(transform)[:6]


def spread_order(n: int) -> list[int]:
    """``0 .. n-1`` coarse to fine: the middle, then the quarters, the eighths, ... (van der Corput positions)."""
    order: list[int] = []
    seen: set[int] = set()
    k = 0
    while len(order) < n:
        fraction, denominator, i = 0.0, 1.0, k
        while i:
            denominator *= 2
            fraction += (i & 1) / denominator
            i >>= 1
        position = int((fraction + 0.5) % 1.0 * n)  # start in the middle
        if position not in seen:
            seen.add(position)
            order.append(position)
        k += 1
    return order


def require_valid_pixels(source, what: str = "") -> None:
    """Refuse an input with no valid pixel (all nodata/NaN); a partly-nodata input passes.

    Args:
        source: a :class:`Raster` (checked in memory) or an open rasterio dataset (read block by block in
            :func:`spread_order`, stopping at the first block with a valid pixel: a normal scene costs one block).
        what: the modality, for the message.

    Raises:
        ValueError: from :func:`no_valid_pixel_error`.
    """
    if isinstance(source, Raster):
        if not np.isfinite(source.data).any():
            raise no_valid_pixel_error(source.path, what)
        return
    windows = [window for _, window in source.block_windows(1)]
    for index in spread_order(len(windows)):
        block = np.ma.filled(source.read(window=windows[index], masked=True).astype(np.float32), np.nan)
        if np.isfinite(block).any():
            return
    raise no_valid_pixel_error(source.name, what)
