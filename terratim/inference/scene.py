"""Windowed GeoTIFF/COG reading of co-registered inputs and window-by-window output writing, with resume state.

Nothing here holds a whole scene: :class:`SceneReader` reads full-width row bands, :class:`SceneWriter` writes
whole block rows of a tiled, deflate-compressed GeoTIFF (reopening the file for each, so that what the progress
file records is on disk), and an interrupted run can continue from the rows it had written.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine
from rasterio.windows import Window

from terratim.data.geotiff import check_same_grid, require_valid_pixels
from terratim.inference.fingerprint import describe_changes

BLOCK = 256


@dataclass(frozen=True)
class SceneInfo:
    """Georeferencing shared by every input of a scene."""

    height: int
    width: int
    crs: object
    transform: object


class SceneReader:
    """Co-registered multi-modal inputs, read in full-width row windows as float32 with nodata as NaN.

    Args:
        inputs: ``{modality: path}``.
        bands: ``{modality: expected band count}`` (a modality missing here is not checked).
    """

    def __init__(self, inputs: Mapping[str, str | os.PathLike], bands: dict[str, int] | None = None) -> None:
        if not inputs:
            raise ValueError("no inputs given; pass at least one MODALITY=path")
        self.paths = {name: Path(p) for name, p in inputs.items()}
        self.datasets = {}
        try:
            for name, path in self.paths.items():
                self.datasets[name] = _open_checked(name, path, (bands or {}).get(name))
            grid = check_same_grid(self.datasets)  # CRS, transform, size: the check every command shares
            self.info = SceneInfo(grid.height, grid.width, grid.crs, grid.transform)
            for name, ds in self.datasets.items():  # block by block, stopping at the first valid pixel
                require_valid_pixels(ds, name)
        except Exception:
            self.close()
            raise

    def band_counts(self) -> dict[str, int]:
        return {name: ds.count for name, ds in self.datasets.items()}

    def read_rows(self, start: int, stop: int, col0: int = 0, col1: int | None = None) -> dict[str, np.ndarray]:
        """Rows ``start .. stop`` and columns ``col0 .. col1`` (clipped to the scene) of every input.

        Returns:
            ``{name: (C, rows, cols) float32}`` with nodata as NaN.
        """
        start, stop = max(start, 0), min(stop, self.info.height)
        col0, col1 = max(col0, 0), min(self.info.width if col1 is None else col1, self.info.width)
        window = Window(col0, start, col1 - col0, stop - start)
        out = {}
        for name, ds in self.datasets.items():
            try:
                data = ds.read(window=window, masked=True)
            except Exception as err:
                raise ValueError(
                    f"{name} input {self.paths[name]} could not be read at rows {start}-{stop} "
                    f"(corrupt or truncated GeoTIFF?): {err}"
                ) from err
            out[name] = np.ma.filled(data.astype(np.float32), np.nan)
        return out

    def close(self) -> None:
        for ds in self.datasets.values():
            ds.close()
        self.datasets = {}

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_checked(name: str, path: Path, bands: int | None):
    if not path.is_file():
        raise FileNotFoundError(f"{name} input not found: {path}")
    try:
        ds = rasterio.open(path)
    except Exception as err:
        raise ValueError(f"{name} input {path} is not a readable GeoTIFF: {err}") from err
    try:
        if bands is not None and ds.count != bands:
            raise ValueError(f"{name} input {path} has {ds.count} bands, expected {bands}")
        # Touch the first and the last block: a truncated file fails here rather than hours into a run.
        ds.read(window=Window(0, 0, 1, 1))
        ds.read(window=Window(ds.width - 1, ds.height - 1, 1, 1))
    except ValueError:
        ds.close()
        raise
    except Exception as err:
        ds.close()
        raise ValueError(f"{name} input {path} is corrupt or truncated: {err}") from err
    return ds


@dataclass
class OutputBand:
    """How one output file is written.

    Attributes:
        path: final output path.
        count: bands.
        dtype: numpy dtype name (``uint8`` class maps, ``float32`` values).
        nodata: value written where there is no prediction.
        colormap: colour table for band 1 (class maps).
        descriptions: band descriptions.
    """

    path: Path
    count: int
    dtype: str
    nodata: float | int
    colormap: dict[int, tuple[int, int, int, int]] | None = None
    descriptions: tuple[str, ...] = ()
    cog: bool = False
    tags: dict[str, str] = field(default_factory=dict)


def block_cache(reader: SceneReader, out_bands: int, panel: int = 0):
    """A ``rasterio.Env`` whose GDAL block cache holds two block rows of a panel of every input and output band.

    GDAL's default cache (5 % of RAM) would otherwise fill up with blocks of rows already done, so the resident
    memory would grow with the scene. Two block rows cover the rows a chip row reads and the rows written.
    """
    bands = sum(reader.band_counts().values()) + out_bands
    columns = reader.info.width if panel <= 0 else min(reader.info.width, panel + 2 * BLOCK)
    size = 2 * BLOCK * columns * 4 * bands
    return rasterio.Env(GDAL_CACHEMAX=int(min(max(size, 32 * 2**20), 1024 * 2**20)))


def partial_path(path: Path) -> Path:
    """Where an unfinished output is written before it is renamed into place."""
    return path.with_name(path.name + ".partial")


def progress_path(path: Path) -> Path:
    """The JSON sidecar that records how far an unfinished output got."""
    return path.with_name(path.name + ".progress.json")


@contextmanager
def interrupts_deferred():
    """Hold Ctrl-C (SIGINT) until the block ends, then raise ``KeyboardInterrupt``.

    A block row and the progress record that counts it are written together, so an interrupted run never leaves
    a half-closed file or a record that claims rows the file lacks. Only in the main thread, and only while
    Python's default handler is installed (a caller's own SIGINT handler is left alone).
    """
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


class SceneWriter:
    """Writes output rows in order, panel by panel, whole 256-row block rows at a time, to a tiled GeoTIFF.

    The scene's columns are cut into panels (multiples of 256 wide, see :func:`panel_ranges`). Within the current
    panel, rows arrive in order and are buffered until a full block row is complete, so no compressed block is
    written twice. After each write the file is closed and the progress sidecar records ``(panel, rows_done)``,
    which makes the state durable.

    Args:
        spec: what to write.
        info: scene georeferencing.
        fingerprint: settings that must match for a resumed run (inputs, chip, model...).
        panels: column ranges, in processing order.
        resume: continue a partial output of an earlier run instead of starting one.
        rows: ``(start, stop)`` output rows this writer owns (a distributed rank's share); default all.
        target: file to write (default: ``partial_path(spec.path)``).
    """

    def __init__(
        self,
        spec: OutputBand,
        info: SceneInfo,
        fingerprint: dict,
        panels: list[tuple[int, int]] | None = None,
        resume: bool = False,
        rows: tuple[int, int] | None = None,
        target: Path | None = None,
    ) -> None:
        self.spec, self.info = spec, info
        self.panels = panels or [(0, info.width)]
        self.start, self.stop = rows if rows is not None else (0, info.height)
        self.target = target or partial_path(spec.path)
        self.progress = progress_path(self.target if target else spec.path)
        self.fingerprint = {**fingerprint, "rows": [self.start, self.stop], "panels": [list(p) for p in self.panels]}
        state = self._resume_state() if resume else None
        self.panel, self.rows_done = state or (0, self.start)
        if state is None:
            with interrupts_deferred():
                self._create()
                self._save_progress()
        self.buffer: list[np.ndarray] = []
        self.buffer_start = self.rows_done

    def _resume_state(self) -> tuple[int, int] | None:
        if not (self.target.exists() and self.progress.exists()):
            return None
        try:
            state = json.loads(self.progress.read_text())
            recorded, panel, rows_done = state["fingerprint"], int(state["panel"]), int(state["rows_done"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"cannot resume {self.spec.path}: {self.progress} is unreadable ({err}); rerun "
                "without --resume and with --overwrite to start again"
            ) from err
        if recorded != json.loads(json.dumps(self.fingerprint)):
            changes = describe_changes(recorded, self.fingerprint) or ["the recorded settings differ"]
            raise ValueError(
                f"cannot resume {self.spec.path}: since the interrupted run, {'; '.join(changes)}. "
                f"To start again, rerun without --resume and with --overwrite (this discards "
                f"{self.target.name} and {self.progress.name})"
            )
        return panel, rows_done

    def _save_progress(self) -> None:
        state = {"panel": self.panel, "rows_done": self.rows_done, "fingerprint": self.fingerprint}
        tmp = self.progress.with_name(self.progress.name + ".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.progress)

    def _create(self) -> None:
        height = self.stop - self.start
        transform = self.info.transform @ Affine.translation(0, self.start) if self.info.transform else None
        profile = {
            "driver": "GTiff",
            "count": self.spec.count,
            "height": height,
            "width": self.info.width,
            "dtype": self.spec.dtype,
            "nodata": self.spec.nodata,
            "compress": "deflate",
            "tiled": True,
            "blockxsize": BLOCK,
            "blockysize": BLOCK,
            "BIGTIFF": "IF_SAFER",
            "crs": self.info.crs,
            "transform": transform,
        }
        if self.spec.dtype.startswith("float"):
            profile["predictor"] = 3
        self.target.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(self.target, "w", **profile) as dst:
            if self.spec.colormap:
                dst.write_colormap(1, self.spec.colormap)
            for i, text in enumerate(self.spec.descriptions, start=1):
                dst.set_band_description(i, text)
            if self.spec.tags:
                dst.update_tags(**self.spec.tags)

    def first_row(self, panel: int) -> int:
        """First row of ``panel`` still to write (``stop`` when the panel is done)."""
        if panel < self.panel:
            return self.stop
        return self.rows_done if panel == self.panel else self.start

    def write(self, row: int, data: np.ndarray) -> None:
        """Rows ``row .. row + data.shape[1]`` of the current panel, (C, rows, panel width).

        Rows outside this writer's share or already written are dropped.
        """
        held = sum(b.shape[1] for b in self.buffer)
        if row > self.buffer_start + held:
            raise ValueError(f"rows {self.buffer_start + held}..{row} were skipped")
        lo, hi = max(row, self.buffer_start + held), min(row + data.shape[1], self.stop)
        if hi <= lo:
            return
        self.buffer.append(data[:, lo - row : hi - row])
        end = self.buffer_start + held + hi - lo
        aligned = end if end == self.stop else self.start + (end - self.start) // BLOCK * BLOCK
        if aligned > self.buffer_start:
            self._flush(aligned)

    def _flush(self, until: int) -> None:
        data = np.concatenate(self.buffer, axis=1) if len(self.buffer) > 1 else self.buffer[0]
        n = until - self.buffer_start
        col0, col1 = self.panels[self.panel]
        with interrupts_deferred():  # the rows and the record that counts them, or neither
            with rasterio.open(self.target, "r+") as dst:
                dst.write(data[:, :n], window=Window(col0, self.buffer_start - self.start, col1 - col0, n))
            rest = data[:, n:]
            self.buffer = [rest] if rest.shape[1] else []
            self.buffer_start = self.rows_done = until
            if until == self.stop:  # panel done: the next one starts at the top of the share
                self.panel, self.rows_done, self.buffer_start, self.buffer = self.panel + 1, self.start, self.start, []
            self._save_progress()

    @property
    def complete(self) -> bool:
        return self.panel >= len(self.panels)

    def finish(self) -> Path:
        """Move the finished file into place (converting it to a COG if asked) and drop the progress file."""
        if not self.complete:
            raise RuntimeError(f"{self.spec.path}: unfinished (panel {self.panel}, rows up to {self.rows_done})")
        finalize(self.target, self.spec)
        self.progress.unlink(missing_ok=True)
        return self.spec.path


def finalize(source: Path, spec: OutputBand) -> None:
    """Rename ``source`` to ``spec.path`` or, with ``spec.cog``, copy it into a Cloud-Optimized GeoTIFF."""
    if spec.cog:
        from rasterio.shutil import copy

        copy(source, spec.path, driver="COG", compress="deflate", blocksize=BLOCK, BIGTIFF="IF_SAFER")
        source.unlink()
    else:
        os.replace(source, spec.path)


def check_output(path: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber an existing output or an unfinished run unless asked."""
    partial, progress = partial_path(path), progress_path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    if (partial.exists() or progress.exists()) and not (overwrite or resume):
        raise FileExistsError(
            f"an unfinished run left {partial}; pass --resume to continue it or --overwrite to start again"
        )
    if overwrite and not resume:
        for leftover in (partial, progress):
            leftover.unlink(missing_ok=True)
