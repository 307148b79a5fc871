"""Datasets of single-raster samples: one GeoTIFF per sample holding every band (and every date), as TerraTorch's
generic non-geo datasets read them.

A sample is ``{"image": {"image": float32 (C, H, W) or (C, T, H, W)}, "valid": {"image": bool (H, W)}, "mask":
label, "meta": {...}}``, the layout :mod:`terratim.data.transforms` works on; the data modules hand the model the
image tensor alone. Files are found by a glob (``img_grep``) in a folder, optionally filtered by a split file of
name fragments; a label file belongs to the image whose name it shares once the patterns' fixed endings are
removed (``a_merged.tif`` and ``a.mask.tif`` are sample ``a``).

Band lists (``dataset_bands``, ``output_bands``) name the bands of a file in order: band names, integers for
unnamed bands, or ``[first, last]`` integer ranges (inclusive), as in TerraTorch. ``output_bands`` selects and
orders the bands the model gets. With ``expand_temporal_dimension`` a file holds T dates of the
``dataset_bands``, stacked date by date (all bands of date 1, then date 2, ...; ``temporal_channel_major``: all
dates of band 1, then band 2, ...), and images become (C, T, H, W).
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from torch.utils.data import Dataset

from terratim.data.datasets import band_positions, check_band_count, expand_band_list, split_file_lines
from terratim.data.geotiff import read_geotiff

PixelTask = Literal["segmentation", "regression"]
IMAGE_KEY = "image"  # the one entry of a sample's image dict
BandSpec = str | int | Sequence[int]


# ------------------------------------------------------------------------------------------------- bands
def expand_bands(bands: Sequence[Any] | None, option: str = "dataset_bands") -> list[str | int] | None:
    """Band identifiers with ``[first, last]`` ranges expanded (inclusive), as TerraTorch's band intervals
    (:func:`terratim.data.datasets.expand_band_list`, shared with the multimodal data)."""
    return None if bands is None else expand_band_list(bands, option)


def output_indices(
    dataset_bands: Sequence[str | int] | None, output_bands: Sequence[str | int] | None
) -> list[int] | None:
    """Positions of ``output_bands`` within ``dataset_bands`` (None: keep every band in file order)."""
    if output_bands is None:
        return None
    if dataset_bands is None:
        raise ValueError("output_bands needs dataset_bands, the names of the bands the files hold")
    return band_positions(dataset_bands, output_bands)


@dataclass(frozen=True)
class BandLayout:
    """How a file's bands become the model's channels (and dates).

    Attributes:
        dataset_bands: bands of one date, in file order (None: unnamed, count taken from the file).
        indices: channels kept, as positions in ``dataset_bands`` (None: all).
        temporal: a file holds several dates of ``dataset_bands`` (images become (C, T, H, W)).
        channel_major: dates of a band are adjacent in the file (b0t0, b0t1, ...) rather than bands of a date.
    """

    dataset_bands: tuple[str | int, ...] | None
    indices: tuple[int, ...] | None
    temporal: bool = False
    channel_major: bool = False
    warned: set[int] = field(default_factory=set, compare=False, repr=False)  # band counts already warned about

    def kept(self) -> tuple[int, ...] | None:
        """Positions of the channels kept: ``indices``, else every band of ``dataset_bands`` (None: unnamed)."""
        if self.indices is not None:
            return self.indices
        return tuple(range(len(self.dataset_bands))) if self.dataset_bands is not None else None

    def file_channels(self, file_bands: int, path: str | os.PathLike) -> int:
        """Bands per date in a file of ``file_bands`` bands. A single-date file with another band count than
        ``dataset_bands`` is read by position (:func:`~terratim.data.datasets.check_band_count`: a warning naming
        the file, or an error when a kept band lies past its last band)."""
        per_date = len(self.dataset_bands) if self.dataset_bands is not None else None
        if not self.temporal:
            if self.dataset_bands is not None and per_date is not None and file_bands != per_date:
                kept = self.kept() or ()
                output = [self.dataset_bands[i] for i in kept]
                check_band_count(str(path), file_bands, self.dataset_bands, output, kept, self.warned)
                return per_date
            return file_bands
        if per_date is None:
            raise ValueError("expand_temporal_dimension needs dataset_bands, the bands of one date")
        if file_bands % per_date:
            raise ValueError(
                f"{path} has {file_bands} bands, not a whole number of dates of the {per_date} dataset_bands"
            )
        return per_date

    def num_outputs(self, file_bands: int, path: str | os.PathLike) -> int:
        per_date = self.file_channels(file_bands, path)
        return len(self.indices) if self.indices is not None else per_date

    def arrange(self, data: np.ndarray, path: str | os.PathLike) -> np.ndarray:
        """(bands, H, W) file pixels -> (C, H, W), or (C, T, H, W) with the temporal dimension expanded."""
        per_date = self.file_channels(data.shape[0], path)
        if self.temporal:
            dates = data.shape[0] // per_date
            if self.channel_major:
                data = data.reshape(per_date, dates, *data.shape[1:])  # (C, T, H, W)
            else:
                data = data.reshape(dates, per_date, *data.shape[1:]).swapaxes(0, 1)  # (T, C, H, W) -> (C, T, H, W)
        if self.indices is not None:
            data = data[list(self.indices)]
        elif data.shape[0] != per_date:  # a single-date file with more bands than dataset_bands: keep those
            data = data[:per_date]
        return np.ascontiguousarray(data)


def band_layout(
    dataset_bands: Sequence[Any] | None,
    output_bands: Sequence[Any] | None,
    expand_temporal_dimension: bool = False,
    temporal_channel_major: bool = False,
) -> BandLayout:
    """The :class:`BandLayout` of TerraTorch's band arguments (ranges expanded, names checked)."""
    dataset = expand_bands(dataset_bands, "dataset_bands")
    output = expand_bands(output_bands, "output_bands")
    if expand_temporal_dimension and dataset is None:
        if output is None:
            raise ValueError("expand_temporal_dimension needs dataset_bands, the bands of one date")
        dataset = output  # older TerraTorch configs name the bands of one date in output_bands only
    indices = output_indices(dataset, output)
    return BandLayout(
        tuple(dataset) if dataset is not None else None,
        tuple(indices) if indices is not None else None,
        temporal=expand_temporal_dimension,
        channel_major=temporal_channel_major,
    )


# ------------------------------------------------------------------------------------------------- files
def _fixed_ending(grep: str) -> str:
    """The literal end of a glob pattern (after its last wildcard): what distinguishes images from labels."""
    cut = max(grep.rfind(c) for c in "*?]")
    return grep[cut + 1 :]


def sample_id(path: str | os.PathLike, grep: str) -> str:
    """File name without the pattern's fixed ending: ``a_merged.tif`` with ``*_merged.tif`` is ``a``."""
    name = Path(path).name
    ending = _fixed_ending(grep)
    return name[: len(name) - len(ending)] if ending and name.endswith(ending) else name


def glob_files(root: str | os.PathLike, grep: str, what: str) -> list[str]:
    """Sorted files under ``root`` matching ``grep`` (a glob relative to ``root``, ``**`` allowed)."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{what} folder not found: {root}")
    files = sorted(
        f for f in glob.glob(os.path.join(glob.escape(str(root)), grep), recursive=True) if os.path.isfile(f)
    )
    return files


def read_split_entries(path: str | os.PathLike, ignore_extensions: bool = True) -> list[str]:
    """Name fragments listed in a split file, one per line (extension dropped with ``ignore_extensions``)."""
    return [os.path.splitext(e)[0] if ignore_extensions else e for e in split_file_lines(path)]


def filter_by_split(
    files: Sequence[str], entries: Sequence[str], ignore_extensions: bool, allow_substring: bool
) -> list[str]:
    """Files whose name (extension dropped with ``ignore_extensions``) contains (or, without
    ``allow_substring``, equals) an entry of the split file."""
    wanted = set(entries)
    kept = []
    for f in files:
        name = Path(f).name
        stem = os.path.splitext(name)[0] if ignore_extensions else name
        if stem in wanted or (allow_substring and any(e in stem for e in entries)):
            kept.append(f)
    return kept


@dataclass
class RasterSample:
    """One sample's image file, its label file (pixel-wise tasks) or class index (classification)."""

    sample_id: str
    image: str
    label: str | None = None
    target: int | None = None


def pair_labels(
    images: Sequence[str], labels: Sequence[str], img_grep: str, label_grep: str, where: str
) -> list[RasterSample]:
    """Pair each image with the label of the same sample id; refuse images without one, naming them.

    When no id is shared at all but the counts agree (patterns without fixed endings, e.g. ``*`` in two folders
    with differently named files), images and labels are paired in sorted order as TerraTorch does, with a
    warning.
    """
    by_id: dict[str, str] = {}
    for path in labels:
        by_id.setdefault(sample_id(path, label_grep), path)
    ids = [sample_id(p, img_grep) for p in images]
    if not any(i in by_id for i in ids) and len(images) == len(labels):
        warnings.warn(
            f"{where}: no label file shares a name with its image; pairing {len(images)} images and labels "
            "in sorted order",
            stacklevel=3,
        )
        return [RasterSample(i, p, lab) for i, p, lab in zip(ids, images, labels, strict=True)]
    lost = [p for p, i in zip(images, ids, strict=True) if i not in by_id]
    if lost:
        raise FileNotFoundError(
            f"{where}: {len(lost)} images have no label matching {label_grep!r}, e.g. {lost[0]} "
            f"(sample id {sample_id(lost[0], img_grep)!r})"
        )
    return [RasterSample(i, p, by_id[i]) for i, p in zip(ids, images, strict=True)]


def find_pixel_samples(
    data_root: str | os.PathLike,
    img_grep: str = "*",
    label_data_root: str | os.PathLike | None = None,
    label_grep: str = "*",
    split: str | os.PathLike | None = None,
    ignore_split_file_extensions: bool = True,
    allow_substring_split_file: bool = True,
    with_labels: bool = True,
) -> list[RasterSample]:
    """Samples of a folder (labels from ``label_data_root``, default the same folder), split-filtered."""
    images = glob_files(data_root, img_grep, "data")
    entries = read_split_entries(split, ignore_split_file_extensions) if split is not None else None
    if entries is not None:
        images = filter_by_split(images, entries, ignore_split_file_extensions, allow_substring_split_file)
    if not images:
        raise FileNotFoundError(
            f"no file in {data_root} matches {img_grep!r}" + (f" and split file {split}" if split is not None else "")
        )
    if not with_labels:
        return [RasterSample(sample_id(p, img_grep), p) for p in images]
    label_root = label_data_root if label_data_root is not None else data_root
    image_set = set(images)
    labels = [f for f in glob_files(label_root, label_grep, "label") if f not in image_set]
    if entries is not None:
        labels = filter_by_split(labels, entries, ignore_split_file_extensions, allow_substring_split_file)
    return pair_labels(images, labels, img_grep, label_grep, f"{data_root} ({img_grep!r})")


def find_class_samples(
    data_root: str | os.PathLike,
    split: str | os.PathLike | None = None,
    ignore_split_file_extensions: bool = True,
    allow_substring_split_file: bool = True,
    classes: Sequence[str] | None = None,
    require_label: bool = True,
) -> tuple[list[RasterSample], list[str]]:
    """Scene-labelled samples in the image-folder layout ``data_root/<class name>/<file>``.

    Class indices follow the sorted class folder names (or ``classes``). Without ``require_label`` (predict), every
    file under ``data_root`` is a sample and folders are not classes.
    """
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    entries = read_split_entries(split, ignore_split_file_extensions) if split is not None else None

    def keep(files: list[str]) -> list[str]:
        files = [f for f in files if not Path(f).name.startswith(".")]
        return (
            files
            if entries is None
            else filter_by_split(files, entries, ignore_split_file_extensions, allow_substring_split_file)
        )

    if not require_label:
        files = keep(glob_files(root, "**/*", "data"))
        if not files:
            raise FileNotFoundError(f"no file in {root}" + (f" listed in split file {split}" if split else ""))
        return [RasterSample(Path(f).stem, f) for f in files], list(classes or [])
    names = list(classes) if classes is not None else sorted(p.name for p in root.iterdir() if p.is_dir())
    if not names:
        raise FileNotFoundError(f"{root} has no class folders (expected {root}/<class name>/<image files>)")
    samples = []
    for index, name in enumerate(names):
        if not (root / name).is_dir():
            raise FileNotFoundError(f"class folder not found: {root / name}")
        samples += [RasterSample(Path(f).stem, f, target=index) for f in keep(glob_files(root / name, "**/*", "class"))]
    if not samples:
        raise FileNotFoundError(
            f"no image files in the class folders of {root}" + (f" listed in {split}" if split else "")
        )
    return samples, names


def file_band_count(path: str | os.PathLike) -> int:
    """Band count from a raster's header (no pixels read)."""
    try:
        with rasterio.open(path) as src:
            return int(src.count)
    except rasterio.errors.RasterioIOError as err:
        raise ValueError(f"{path} is not a readable raster: {err}") from err


# ----------------------------------------------------------------------------------------------- datasets
class SingleRasterDataset(Dataset):
    """Samples of one raster each, with a label raster (segmentation, regression) or a class index.

    Args:
        samples: the files (:func:`find_pixel_samples` or :func:`find_class_samples`).
        layout: bands kept and the temporal arrangement.
        fill: per-output-channel value (after ``constant_scale``) for nodata pixels.
        task: ``segmentation``, ``regression`` or ``classification``.
        constant_scale: factor applied to the pixels.
        no_label_replace: label value for label nodata (segmentation; required when a label has nodata);
            regression keeps nodata as NaN (left out of losses) unless it is given.
        reduce_zero_label: subtract 1 from labels (not from ``no_label_replace`` pixels): class 0 becomes -1.
        transform: callable on the sample dict (:func:`terratim.data.transforms.build_transforms`).
        num_classes: segmentation classes; other label values (besides ``no_label_replace``) raise, naming the file.
    """

    def __init__(
        self,
        samples: Sequence[RasterSample],
        layout: BandLayout,
        fill: np.ndarray,
        task: str = "segmentation",
        constant_scale: float = 1.0,
        no_label_replace: float | None = None,
        reduce_zero_label: bool = False,
        transform: Callable | None = None,
        num_classes: int | None = None,
    ) -> None:
        self.samples, self.layout = list(samples), layout
        self.num_classes = num_classes
        self.fill = np.asarray(fill, dtype=np.float32)
        self.task, self.constant_scale = task, float(constant_scale)
        self.no_label_replace, self.reduce_zero_label = no_label_replace, reduce_zero_label
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def read_image(self, sample: RasterSample) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """(C[, T], H, W) pixels with nodata filled, the (H, W) mask of pixels valid in every band and date,
        and the georeferencing."""
        raster = read_geotiff(sample.image, what=f"sample {sample.sample_id!r} image")
        data = self.layout.arrange(raster.data, sample.image) * np.float32(self.constant_scale)
        finite = np.isfinite(data)
        fill = self.fill.reshape((-1,) + (1,) * (data.ndim - 1))
        if fill.shape[0] != data.shape[0]:
            raise ValueError(
                f"{sample.image} gives {data.shape[0]} channels but means/stds have {fill.shape[0]} values"
            )
        image = np.where(finite, data, fill).astype(np.float32)
        valid = np.asarray(finite.reshape(-1, *data.shape[-2:]).all(axis=0))  # (H, W)
        meta: dict[str, Any] = {
            "sample_id": sample.sample_id,
            "crs": raster.profile.get("crs"),
            "transform": raster.profile.get("transform"),
            "nodata": raster.profile.get("nodata"),
            "path": str(sample.image),
        }
        return image, valid, meta

    def read_label(self, sample: RasterSample, size: tuple[int, ...]) -> np.ndarray:
        """(H, W) label: int64 classes (nodata -> ``no_label_replace``) or float32 values (nodata NaN)."""
        assert sample.label is not None
        data = read_geotiff(sample.label, 1, what=f"sample {sample.sample_id!r} label").data[0]
        if data.shape != tuple(size):
            raise ValueError(
                f"label {sample.label} is {data.shape[0]}x{data.shape[1]} pixels but its image {sample.image} is "
                f"{size[0]}x{size[1]}"
            )
        nodata = ~np.isfinite(data)
        if self.task == "regression":
            values = np.where(nodata, np.nan if self.no_label_replace is None else self.no_label_replace, data)
            return values.astype(np.float32)
        if nodata.any() and self.no_label_replace is None:
            raise ValueError(
                f"label {sample.label} has {int(nodata.sum())} nodata pixels; set no_label_replace (e.g. -1, the "
                "task's ignore_index) to mark them"
            )
        fill = int(self.no_label_replace) if self.no_label_replace is not None else -1
        label = np.where(nodata, fill, np.nan_to_num(data)).astype(np.int64)
        if self.reduce_zero_label:
            label = np.where(nodata, fill, label - 1)
        self.check_classes(label, sample)
        return label

    def check_classes(self, label: np.ndarray, sample: RasterSample) -> None:
        """Refuse label values that are neither a class, ``no_label_replace`` nor (``reduce_zero_label``) -1."""
        if self.num_classes is None:
            return
        allowed = {-1} if self.reduce_zero_label else set()
        if self.no_label_replace is not None:
            allowed.add(int(self.no_label_replace))
        values = np.unique(label)
        bad = [int(v) for v in values if not 0 <= v < self.num_classes and int(v) not in allowed]
        if bad:
            shift = " after reduce_zero_label" if self.reduce_zero_label else ""
            raise ValueError(
                f"label {sample.label} has values {bad[:10]}{shift} outside the {self.num_classes} classes "
                f"0..{self.num_classes - 1} (no_label_replace {self.no_label_replace})"
            )

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image, valid, meta = self.read_image(sample)
        item: dict[str, Any] = {"image": {IMAGE_KEY: image}, "valid": {IMAGE_KEY: valid}}
        if sample.label is not None:
            item["mask"] = self.read_label(sample, image.shape[-2:])
        elif sample.target is not None:
            item["mask"] = np.asarray(sample.target, dtype=np.int64)
        if self.transform is not None:
            item = self.transform(item)
        item["meta"] = meta
        return item
