"""Datasets that read co-registered multimodal GeoTIFF samples (one file per modality) and their labels.

File matching: a sample id plus a per-modality file pattern (``image_grep``) names each file. Patterns are
``fnmatch`` globs such as ``"*_S2Hand.tif"``; the sample id is the file name with the part matched by the
leading ``*`` kept, so ``Ghana_97059_S2Hand.tif`` has id ``Ghana_97059``. Every file is resolved when the
dataset is built, so a missing file fails before training starts, naming the sample, modality and the
paths searched.

Reading: nodata becomes NaN (``terratim.data.geotiff``), then a per-modality fill value (raw units); a
validity mask ``valid[modality]`` (H, W), True where every band was valid, travels with the sample. Label
nodata becomes
``no_label_replace`` (the ignore index).

Band selection (TerraTorch's ``dataset_bands`` / ``output_bands``): ``dataset_bands`` names each band of a file in
order, band names mixed with integer placeholders for unnamed bands (``[0, BLUE, GREEN, RED, 1, 2]``) and
``[first, last]`` integer ranges; ``output_bands`` picks the named bands the model gets. A
:class:`BandSelection` keeps their positions.
"""

from __future__ import annotations

import fnmatch
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from terratim.data.geotiff import read_geotiff

Task = Literal["segmentation", "regression", "classification"]


@dataclass
class SampleFiles:
    """Files of one sample: one per modality, plus an optional label file or class label."""

    sample_id: str
    images: dict[str, Path]
    label: Path | None = None
    target: Any = None  # scene label(s) for classification
    searched: dict[str, list[str]] = field(default_factory=dict)


def _suffix(grep: str) -> str:
    return grep.rsplit("*", 1)[-1]


def read_split(path: str | os.PathLike) -> list[str]:
    """Sample ids from a split file: one per line (``.txt``) or the first column of a ``.csv``.

    For a csv such as the official Sen1Floods11 ``flood_train_data.csv`` (``Ghana_103272_S1Hand.tif,...``),
    the     id is the first column with its ``_<Sensor>Hand.tif`` ending removed.
    """
    ids = []
    for line in split_file_lines(path):
        item = line.split(",")[0].strip()
        if item.endswith(".tif") and "_" in item:
            item = item.rsplit("_", 1)[0]
        ids.append(item)
    return ids


def split_file_lines(path: str | os.PathLike) -> list[str]:
    """The entries of a split file: its non-empty lines, stripped, without ``#`` comment lines.

    Raises:
        FileNotFoundError: no such file. ValueError: the file lists no samples.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    lines = [line.strip() for line in path.read_text().splitlines()]
    entries = [line for line in lines if line and not line.startswith("#")]
    if not entries:
        raise ValueError(f"split file {path} lists no samples")
    return entries


def discover_ids(root: Path, grep: str) -> list[str]:
    """Sample ids of the files in ``root`` matching ``grep``, sorted."""
    if not root.is_dir():
        raise FileNotFoundError(f"data root not found: {root}")
    suffix = _suffix(grep)
    ids = sorted(p.name[: len(p.name) - len(suffix)] for p in root.iterdir() if fnmatch.fnmatch(p.name, grep))
    if not ids:
        raise FileNotFoundError(f"no file in {root} matches {grep!r}")
    return ids


def find_file(root: Path, sample_id: str, grep: str, allow_substring: bool) -> tuple[Path | None, list[str]]:
    """Locate the file of ``sample_id`` in ``root``; returns (path or None, patterns searched)."""
    suffix = _suffix(grep)
    exact = root / f"{sample_id}{suffix}"
    searched = [str(exact)]
    if exact.is_file() and fnmatch.fnmatch(exact.name, grep):
        return exact, searched
    patterns = [f"{sample_id}{grep}"] + ([f"*{sample_id}{grep}"] if allow_substring else [])
    searched += [str(root / p) for p in patterns]
    names = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatch(n, pattern)]
        if len(hits) == 1:
            return root / hits[0], searched
        if len(hits) > 1:
            raise ValueError(f"sample {sample_id!r}: {len(hits)} files in {root} match {pattern!r}: {hits[:5]}")
    return None, searched


def match_samples(
    roots: Mapping[str, str | os.PathLike],
    image_grep: Mapping[str, str],
    label_root: str | os.PathLike | None = None,
    label_grep: str | None = None,
    split: str | os.PathLike | None = None,
    allow_substring_file_names: bool = True,
    missing: Literal["raise", "skip"] = "raise",
) -> list[SampleFiles]:
    """Resolve every sample's files.

    Args:
        roots: data folder per modality.
        image_grep: file pattern per modality.
        label_root: folder of label rasters (None for unlabelled data).
        label_grep: label file pattern.
        split: optional split file of sample ids; without one, the first modality's files define them.
        allow_substring_file_names: also accept files whose name merely contains the sample id.
        missing: ``"raise"`` (default) on a sample with a missing file, or ``"skip"`` it with a warning.
    """
    mods = list(roots)
    if not mods:
        raise ValueError("no modality data roots given")
    roots_p = {m: Path(r) for m, r in roots.items()}
    for mod, root in roots_p.items():
        if not root.is_dir():
            raise FileNotFoundError(f"data root of {mod} not found: {root}")
    ids = read_split(split) if split is not None else discover_ids(roots_p[mods[0]], image_grep[mods[0]])
    samples, skipped = [], []
    for sid in ids:
        files, searched, lost = {}, {}, []
        for mod in mods:
            path, tried = find_file(roots_p[mod], sid, image_grep[mod], allow_substring_file_names)
            searched[mod] = tried
            if path is None:
                lost.append(mod)
            else:
                files[mod] = path
        label = None
        if label_root is not None:
            label, tried = find_file(Path(label_root), sid, label_grep or "*", allow_substring_file_names)
            searched["label"] = tried
            if label is None:
                lost.append("label")
        if lost:
            if missing == "skip":
                skipped.append(sid)
                continue
            where = "; ".join(f"{m}: {', '.join(searched[m])}" for m in lost)
            raise FileNotFoundError(
                f"sample {sid!r}"
                + (f" (from split file {split})" if split else "")
                + f" has no file for {', '.join(lost)}; searched {where}"
            )
        samples.append(SampleFiles(sid, files, label, searched=searched))
    if skipped:
        import warnings

        warnings.warn(
            f"skipped {len(skipped)} of {len(ids)} samples with missing files, e.g. {skipped[:3]}",
            stacklevel=2,
        )
    if not samples:
        raise ValueError(f"no complete samples found (roots {dict(roots)}, split {split})")
    return samples


BandName = str | int


def expand_band_list(bands: Sequence[Any], option: str) -> list[BandName]:
    """Band names and integer placeholders, ``[first, last]`` ranges expanded (inclusive), as TerraTorch's
    ``dataset_bands`` / ``output_bands``; a band given twice (also as ``1`` and ``"1"``) is an error."""
    out: list[BandName] = []
    for item in bands:
        if isinstance(item, str | int) and not isinstance(item, bool):
            out.append(item)
        elif (
            isinstance(item, Sequence)
            and len(item) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in item)
        ):
            if item[1] < item[0]:
                raise ValueError(f"{option}: range {list(item)} runs backwards; give [first, last] with first <= last")
            out.extend(range(item[0], item[1] + 1))
        else:
            raise ValueError(f"{option}: {item!r} is not a band name, an integer placeholder or a [first, last] range")
    if len({str(b) for b in out}) != len(out):
        repeated = sorted({repr(b) for b in out if [str(o) for o in out].count(str(b)) > 1})
        raise ValueError(f"{option} names a band twice ({', '.join(repeated)}): {out}")
    return out


def band_positions(
    dataset_bands: Sequence[BandName], output_bands: Sequence[BandName], option: str = "output_bands"
) -> list[int]:
    """Positions of ``output_bands`` in ``dataset_bands`` (both expanded), matched by name (``1`` is ``"1"``)."""
    names = [str(b) for b in dataset_bands]
    missing = [b for b in output_bands if str(b) not in names]
    if missing:
        raise ValueError(f"{option} {missing} are not in dataset_bands {list(dataset_bands)}")
    return [names.index(str(b)) for b in output_bands]


def check_band_count(
    where: str,
    count: int,
    dataset_bands: Sequence[BandName],
    output_bands: Sequence[BandName],
    indices: Sequence[int],
    warned: set[int] | None = None,
) -> None:
    """A file of ``count`` bands read with ``dataset_bands`` positions counted from its first band (TerraTorch
    does the same): an output band beyond the file's last band raises naming the file (``where``); any other
    difference from ``dataset_bands`` warns, once per band count in ``warned`` when given."""
    beyond = [b for b, i in zip(output_bands, indices, strict=True) if i >= count]
    if beyond:
        raise ValueError(
            f"{where} has {count} bands, but dataset_bands lists {len(dataset_bands)} and puts output bands "
            f"{beyond} beyond the file's last band"
        )
    if count != len(dataset_bands) and (warned is None or count not in warned):
        warnings.warn(
            f"{where} has {count} bands but dataset_bands lists {len(dataset_bands)} ({list(dataset_bands)}); "
            f"output bands are taken at positions {list(indices)}",
            UserWarning,
            stacklevel=3,
        )
        if warned is not None:
            warned.add(count)


@dataclass(frozen=True)
class BandSelection:
    """Which bands of a modality's files the model gets.

    Attributes:
        modality: the modality (for messages).
        dataset_bands: every band of a file, in file order (names and integer placeholders).
        output_bands: the bands kept, in output order.
        indices: positions of ``output_bands`` in the file.
    """

    modality: str
    dataset_bands: tuple[BandName, ...]
    output_bands: tuple[BandName, ...]
    indices: tuple[int, ...]

    @classmethod
    def build(cls, modality: str, dataset_bands: Sequence[Any], output_bands: Sequence[Any] | None) -> BandSelection:
        """Check and resolve the two lists (``output_bands`` None keeps every band)."""
        declared = expand_band_list(dataset_bands, f"dataset_bands of {modality}")
        wanted = expand_band_list(output_bands, f"output_bands of {modality}") if output_bands is not None else declared
        indices = band_positions(declared, wanted, f"output_bands of {modality}")
        return cls(modality, tuple(declared), tuple(wanted), tuple(indices))

    def select(self, data: np.ndarray, path: Path | str, warned: set[int] | None = None) -> np.ndarray:
        """The output bands of a file's (bands, H, W) pixels (a band count other than ``dataset_bands``': see
        :func:`check_band_count`)."""
        where = f"{self.modality} file {path}"
        check_band_count(where, data.shape[0], self.dataset_bands, self.output_bands, self.indices, warned)
        return data[list(self.indices)]


class MultiModalGeoTiffDataset(Dataset):
    """One sample = one GeoTIFF per modality (+ a label raster or scene label), read with rasterio.

    Items are ``{"image": {mod: float32 (C, H, W)}, "valid": {mod: bool (H, W)}, "mask": label,
    "meta": {...}}``
    as numpy arrays (the collate function makes tensors). ``mask`` is int64 (H, W) for segmentation, float32
    (H, W) for regression, int64 () or float32 (num_classes,) for classification; absent without labels.
    ``band_selections`` (per modality) keeps the output bands of files that hold more (``dataset_bands``).
    """

    def __init__(
        self,
        samples: Sequence[SampleFiles],
        num_bands: Mapping[str, int],
        fill_values: Mapping[str, np.ndarray],
        task: Task = "segmentation",
        num_classes: int | None = None,
        ignore_index: int | None = -1,
        no_label_replace: float | None = -1,
        reduce_zero_label: bool = False,
        nodata_to_ignore: bool = False,
        multi_label: bool = False,
        transform: Callable | None = None,
        band_selections: Mapping[str, BandSelection] | None = None,
    ) -> None:
        self.samples = list(samples)
        self.band_selections = dict(band_selections or {})
        self._band_count_warned: dict[str, set[int]] = {m: set() for m in self.band_selections}
        self.num_bands = dict(num_bands)
        self.fill_values = {m: np.asarray(v, dtype=np.float32) for m, v in fill_values.items()}
        self.task = task
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.no_label_replace = no_label_replace
        self.reduce_zero_label = reduce_zero_label
        self.nodata_to_ignore = nodata_to_ignore
        self.multi_label = multi_label
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def _read_images(self, files: SampleFiles) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
        images: dict[str, np.ndarray] = {}
        valid: dict[str, np.ndarray] = {}
        profile: dict[str, Any] | None = None
        size: tuple[str, tuple[int, ...]] | None = None
        for mod, path in files.images.items():
            selection = self.band_selections.get(mod)
            expected = None if selection is not None else self.num_bands.get(mod)
            raster = read_geotiff(path, expected, what=f"sample {files.sample_id!r} {mod}")
            data = raster.data  # (C, H, W), NaN = nodata
            if selection is not None:
                data = selection.select(data, path, self._band_count_warned[mod])  # (C_out, H, W)
            finite = np.isfinite(data)
            if size is not None and data.shape[-2:] != size[1]:
                raise ValueError(
                    f"sample {files.sample_id!r}: {mod} raster {path} is {data.shape[-2]}x{data.shape[-1]} "
                    f"pixels but {size[0]} is {size[1][0]}x{size[1][1]}; all modalities of a sample must be "
                    "co-registered"
                )
            size = size or (mod, data.shape[-2:])
            images[mod] = np.where(finite, data, self.fill_values[mod][:, None, None]).astype(np.float32)
            valid[mod] = finite.all(axis=0)
            profile = profile or {
                "crs": raster.profile.get("crs"),
                "transform": raster.profile.get("transform"),
                "nodata": raster.profile.get("nodata"),
                "path": str(path),
            }
        if profile is None:
            raise ValueError(f"sample {files.sample_id!r} has no image files")
        return images, valid, profile

    def _read_label(self, files: SampleFiles, label_path: Path, size: tuple[int, ...]) -> np.ndarray:
        raster = read_geotiff(label_path, 1, what=f"sample {files.sample_id!r} label")
        data = raster.data[0]
        if data.shape != size:
            raise ValueError(
                f"sample {files.sample_id!r}: label {files.label} is {data.shape[0]}x{data.shape[1]} "
                f"pixels but the images are {size[0]}x{size[1]}"
            )
        if self.task == "regression":  # nodata stays NaN: never a valid target, left out of losses and metrics
            return np.asarray(data, dtype=np.float32)
        fill: float = -1 if self.ignore_index is None else self.ignore_index
        if self.no_label_replace is not None:
            fill = self.no_label_replace
        label = np.where(np.isfinite(data), data, np.float32(fill)).astype(np.int64)
        if self.reduce_zero_label:
            label = np.where(label == fill, fill, label - 1)
        self._check_classes(label, files)
        return label

    def _check_classes(self, label: np.ndarray, files: SampleFiles) -> None:
        if self.num_classes is None:
            return
        values = np.unique(label)
        bad = [int(v) for v in values if not (0 <= v < self.num_classes) and v != self.ignore_index]
        if bad:
            raise ValueError(
                f"sample {files.sample_id!r}: label {files.label or ''} has values {bad[:10]} outside the "
                f"{self.num_classes} classes 0..{self.num_classes - 1} (ignore_index {self.ignore_index})"
            )

    def _scene_label(self, files: SampleFiles) -> np.ndarray:
        target = [int(t) for t in np.atleast_1d(files.target)]
        self._check_classes(np.asarray(target), files)
        if self.multi_label:  # class indices -> multi-hot (K,)
            if self.num_classes is None:
                raise ValueError("multi-label classification needs num_classes")
            hot = np.zeros(self.num_classes, dtype=np.float32)
            hot[target] = 1.0
            return hot
        if len(target) != 1:
            raise ValueError(f"sample {files.sample_id!r} has {len(target)} labels {target}; set multi_label")
        return np.asarray(target[0], dtype=np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        files = self.samples[index]
        images, valid, profile = self._read_images(files)
        sample: dict[str, Any] = {"image": images, "valid": valid}
        size = next(iter(images.values())).shape[-2:]
        if files.label is not None:
            sample["mask"] = self._read_label(files, files.label, size)
        elif files.target is not None:
            sample["mask"] = self._scene_label(files)
        if self.nodata_to_ignore and self.task == "segmentation" and "mask" in sample:
            any_valid = np.logical_or.reduce(list(valid.values()))
            sample["mask"] = np.where(any_valid, sample["mask"], self.ignore_index)
        if self.transform is not None:
            sample = self.transform(sample)
        sample["meta"] = {"sample_id": files.sample_id, **profile}
        return sample


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples: ``{"image": {mod: (B, C, H, W)}, "valid": {mod: (B, H, W)}, "mask", "meta": [...]}``."""
    first = samples[0]
    sizes = {tuple(next(iter(s["image"].values())).shape[-2:]) for s in samples}
    if len(sizes) > 1:
        ids = [s["meta"]["sample_id"] for s in samples]
        raise ValueError(
            f"samples {ids} have different sizes {sorted(sizes)}; crop them to one size "
            "(RandomCrop / CenterCrop transforms) or use batch_size 1"
        )
    batch: dict[str, Any] = {
        "image": {
            m: torch.stack([torch.from_numpy(np.ascontiguousarray(s["image"][m])) for s in samples])
            for m in first["image"]
        },
        "meta": [s["meta"] for s in samples],
    }
    if first.get("valid") is not None and all(s.get("valid") is not None for s in samples):
        batch["valid"] = {
            m: torch.stack([torch.from_numpy(np.ascontiguousarray(s["valid"][m])) for s in samples])
            for m in first["valid"]
        }
    if "mask" in first:
        batch["mask"] = torch.stack([torch.as_tensor(np.array(s["mask"])) for s in samples])
    return batch
