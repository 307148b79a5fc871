"""``terratim compute-statistics``: per-band means and standard deviations of a dataset, in the YAML form the data
modules take (``means:`` / ``stds:``, or per modality key).

Files are read window by window, so a file of any size costs one window of memory. Nodata pixels (the file's
nodata value or mask, ``--nodata``, NaN and infinities) are left out band by band. The sums are float64 and merged
window by window with Chan et al.'s pairwise update of the mean and the sum of squared deviations, which stays
accurate where a running sum of squares would cancel (large offsets, billions of pixels). ``stds`` are population
standard deviations (divisor n).

Examples::

    terratim compute-statistics hls_burn_scars/data --glob "*_merged.tif"
    terratim compute-statistics S2L2A=train/S2L2A S1GRD=train/S1GRD --output stats.yaml
    terratim compute-statistics "training_chips/*_merged.tif" --time-steps 3   # 18 bands = 3 dates x 6 bands
"""

from __future__ import annotations

import argparse
import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GLOB_CHARS = "*?["


@dataclass
class BandStatistics:
    """Count, mean and sum of squared deviations (M2) per band, float64, mergeable."""

    count: np.ndarray  # (C,) valid pixels
    mean: np.ndarray  # (C,)
    m2: np.ndarray  # (C,) sum of squared deviations from the mean

    @classmethod
    def empty(cls, bands: int) -> BandStatistics:
        return cls(np.zeros(bands), np.zeros(bands), np.zeros(bands))

    @classmethod
    def of(cls, values: np.ndarray, valid: np.ndarray) -> BandStatistics:
        """Statistics of (C, N) values where ``valid`` (C, N) is True."""
        count = valid.sum(axis=1).astype(np.float64)
        mean = np.where(valid, values, 0.0).sum(axis=1) / np.maximum(count, 1.0)
        deviation = np.where(valid, values - mean[:, None], 0.0)
        return cls(count, mean, (deviation * deviation).sum(axis=1))

    def merge(self, other: BandStatistics) -> BandStatistics:
        """Statistics of both sets (Chan et al.'s parallel update)."""
        total = self.count + other.count
        share = np.divide(other.count, total, out=np.zeros_like(total), where=total > 0)
        delta = other.mean - self.mean
        mean = self.mean + delta * share
        m2 = self.m2 + other.m2 + delta * delta * self.count * share
        return BandStatistics(total, mean, m2)

    def fold(self, groups: Sequence[Sequence[int]]) -> BandStatistics:
        """Merge bands into channels: channel i gathers the bands ``groups[i]`` (e.g. one band of every date)."""
        out = BandStatistics.empty(len(groups))
        for i, members in enumerate(groups):
            merged = BandStatistics.empty(1)
            for b in members:
                merged = merged.merge(BandStatistics(self.count[b : b + 1], self.mean[b : b + 1], self.m2[b : b + 1]))
            out.count[i], out.mean[i], out.m2[i] = merged.count[0], merged.mean[0], merged.m2[0]
        return out

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / np.maximum(self.count, 1.0))


# ------------------------------------------------------------------------------------------------- inputs
def expand_input(spec: str, pattern: str) -> list[Path]:
    """Files of one input: a file, a folder (files matching ``pattern`` below it) or a glob."""
    if any(c in spec for c in GLOB_CHARS) and not Path(spec).exists():
        files = sorted(Path(f) for f in glob.glob(spec, recursive=True) if os.path.isfile(f))
        if not files:
            raise FileNotFoundError(f"no file matches {spec!r}")
        return files
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(Path(f) for f in glob.glob(os.path.join(glob.escape(str(path)), pattern), recursive=True))
        files = [f for f in files if f.is_file()]
        if not files:
            raise FileNotFoundError(f"no file in {path} matches {pattern!r}")
        return files
    raise FileNotFoundError(f"input not found: {spec}")


def group_inputs(specs: Sequence[str], modality: str | None) -> dict[str | None, list[str]]:
    """``NAME=PATH`` inputs grouped by modality (canonical name); unkeyed inputs under ``modality`` (or None)."""
    from terratim.modalities import resolve

    groups: dict[str | None, list[str]] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if sep and name and not Path(spec).exists():
            key: str | None = resolve(name).name
        else:
            key, path = (resolve(modality).name if modality else None), spec
        groups.setdefault(key, []).append(path)
    if None in groups and len(groups) > 1:
        raise ValueError("give every input as NAME=PATH, or none (then --modality names them all)")
    return groups


# ------------------------------------------------------------------------------------------------ reading
def windows(height: int, width: int, size: int) -> Iterator[tuple[int, int, int, int]]:
    """(row, col, rows, cols) of the ``size`` x ``size`` windows covering a raster."""
    for row in range(0, height, size):
        for col in range(0, width, size):
            yield row, col, min(size, height - row), min(size, width - col)


def file_statistics(path: Path, window: int, nodata: float | None, scale: float = 1.0) -> BandStatistics:
    """Statistics of every band of one file, read ``window`` x ``window`` pixels at a time."""
    import rasterio
    from rasterio.windows import Window

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as err:
        raise ValueError(f"{path} is not a readable raster: {err}") from err
    with src:
        stats = BandStatistics.empty(src.count)
        for row, col, rows, cols in windows(src.height, src.width, window):
            block = src.read(window=Window(col, row, cols, rows), masked=True)  # (C, rows, cols)
            values = np.ma.getdata(block).astype(np.float64).reshape(src.count, -1)
            valid = ~np.ma.getmaskarray(block).reshape(src.count, -1) & np.isfinite(values)
            if nodata is not None:
                valid &= values != nodata
            stats = stats.merge(BandStatistics.of(values * scale, valid))
    return stats


def dataset_statistics(
    files: Sequence[Path], window: int = 1024, nodata: float | None = None, scale: float = 1.0
) -> BandStatistics:
    """Statistics over every file (all must have the same band count)."""
    import rasterio

    total: BandStatistics | None = None
    for path in files:
        with rasterio.open(path) as src:
            count = src.count
        if total is not None and count != total.count.size:
            raise ValueError(f"{path} has {count} bands but {files[0]} has {total.count.size}")
        stats = file_statistics(path, window, nodata, scale)
        total = stats if total is None else total.merge(stats)
    assert total is not None
    return total


def temporal_groups(bands: int, time_steps: int, channel_major: bool, where: str) -> list[list[int]]:
    """Band indices of each channel in a stack of ``time_steps`` dates (date by date unless ``channel_major``)."""
    if bands % time_steps:
        raise ValueError(f"{where}: {bands} bands do not split into --time-steps {time_steps} dates")
    channels = bands // time_steps
    if channel_major:
        return [[c * time_steps + t for t in range(time_steps)] for c in range(channels)]
    return [[t * channels + c for t in range(time_steps)] for c in range(channels)]


# ------------------------------------------------------------------------------------------------- output
def _yaml_list(values: np.ndarray, indent: str) -> list[str]:
    return [f"{indent}- {float(v)!r}" for v in values]


def to_yaml(stats: dict[str | None, BandStatistics], files: dict[str | None, int]) -> str:
    """``means:`` / ``stds:`` lists (or per-modality mappings of lists), with a comment on what was counted."""
    lines = []
    for key, s in stats.items():
        label = f"{key}: " if key else ""
        lines.append(f"# {label}{files[key]} files; valid pixels per band: {[int(c) for c in s.count]}")
    for field in ("means", "stds"):
        lines.append(f"{field}:")
        for key, s in stats.items():
            values = s.mean if field == "means" else s.std
            if key is None:
                lines += _yaml_list(values, "  ")
            else:
                lines.append(f"  {key}:")
                lines += _yaml_list(values, "    ")
    return "\n".join(lines) + "\n"


def compute(
    inputs: Sequence[str],
    pattern: str = "*.tif",
    modality: str | None = None,
    nodata: float | None = None,
    window: int = 1024,
    time_steps: int | None = None,
    channel_major: bool = False,
    scale: float = 1.0,
) -> tuple[dict[str | None, BandStatistics], dict[str | None, int]]:
    """Statistics per input group (see :func:`group_inputs`) and the number of files of each."""
    if window < 1:
        raise ValueError(f"--window must be positive, got {window}")
    if time_steps is not None and time_steps < 1:
        raise ValueError(f"--time-steps must be positive, got {time_steps}")
    results, counts = {}, {}
    for key, specs in group_inputs(inputs, modality).items():
        files = [f for spec in specs for f in expand_input(spec, pattern)]
        stats = dataset_statistics(files, window, nodata, scale)
        where = key or ", ".join(specs)
        if time_steps is not None:
            stats = stats.fold(temporal_groups(stats.count.size, time_steps, channel_major, where))
        empty = [i for i, c in enumerate(stats.count) if c == 0]
        if empty:
            raise ValueError(f"{where}: band(s) {empty} (0-based) have no valid pixel in any of {len(files)} files")
        results[key], counts[key] = stats, len(files)
    return results, counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="file, folder or glob; NAME=INPUT: files of a modality (keys the output)",
    )
    parser.add_argument("--glob", default="*.tif", help="file pattern inside folders (default *.tif; ** recurses)")
    parser.add_argument("--modality", help="key the output by this modality name (inputs without NAME=)")
    parser.add_argument("--nodata", type=float, help="a pixel value to leave out besides each file's nodata and NaN")
    parser.add_argument("--window", type=int, default=1024, help="window side in pixels read at a time (1024)")
    parser.add_argument("--time-steps", type=int, help="files stack this many dates: statistics per band over dates")
    parser.add_argument(
        "--temporal-channel-major",
        action="store_true",
        help="with --time-steps: the dates of each band are adjacent (b1t1, b1t2, ...)",
    )
    parser.add_argument(
        "--constant-scale",
        type=float,
        default=1.0,
        help="factor applied to the pixels first, as the data modules' constant_scale",
    )
    parser.add_argument("--output", help="also write the YAML to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")


def run(args: argparse.Namespace) -> int:
    from terratim.data.geotiff import check_writable

    output = check_writable(args.output, args.overwrite) if args.output else None
    stats, counts = compute(
        args.inputs,
        args.glob,
        args.modality,
        args.nodata,
        args.window,
        args.time_steps,
        args.temporal_channel_major,
        args.constant_scale,
    )
    text = to_yaml(stats, counts)
    print(text, end="")
    if output is not None:
        output.write_text(text)
    return 0
