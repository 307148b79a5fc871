"""Lightning data modules: splits, batching, standardization and modality dropout over the GeoTIFF datasets.

``GenericMultiModalDataModule`` takes the arguments of TerraTorch's data module of the same name, so TerraMind
configs run after renaming ``terratorch.`` to ``terratim.``. Standardization statistics come from the modality
registry unless ``means``/``stds`` are given; it happens after the batch reaches the device.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from terratim.data.datasets import BandSelection, MultiModalGeoTiffDataset, SampleFiles, collate, match_samples
from terratim.data.transforms import build_transforms
from terratim.datamodules.base import Split, SplitDataModule
from terratim.modalities import normalize, resolve

SPLITS: tuple[Split, ...] = ("train", "val", "test", "predict")


def _lookup(table: Mapping[str, Any] | None, modality: str) -> Any:
    """Value of ``table`` for ``modality``, matching keys by canonical modality name ("RGB" == "S2RGB")."""
    if not table:
        return None
    canonical = resolve(modality).name
    for key, value in table.items():
        try:
            if resolve(key).name == canonical:
                return value
        except KeyError:
            continue
    return None


def modality_stats(
    modality: str,
    bands: Sequence[str | int] | None = None,
    means: Mapping | None = None,
    stds: Mapping | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of a modality: from ``means``/``stds`` if given there, else the registry (band subset)."""
    mod = resolve(modality)
    mean, std = _lookup(means, modality), _lookup(stds, modality)
    if (mean is None) != (std is None):
        raise ValueError(f"{modality}: give both means and stds, or neither (registry statistics are used)")
    if mean is None:
        mean, std = mod.statistics([str(b) for b in bands] if bands else None)
    mean, std = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    expected = len(bands) if bands else mod.num_bands
    if mean.shape != (expected,) or std.shape != (expected,):
        raise ValueError(f"{modality}: means/stds have {mean.size}/{std.size} values, expected {expected} (bands)")
    if (std <= 0).any():
        raise ValueError(f"{modality}: stds must be positive, got {std.tolist()}")
    return mean, std


def read_label_csv(path: str | os.PathLike) -> dict[str, list[int]]:
    """Scene labels from a csv ``sample,label``; several labels (multi-label) are separated by spaces."""
    labels = {}
    with open(path, newline="") as fh:
        for row in csv.reader(fh):
            if not row or row[0].strip().lower() in ("sample", "sample_id", "id"):
                continue
            values = [int(v) for v in row[1].replace(";", " ").split()]
            labels[row[0].strip()] = values
    return labels


class GenericMultiModalDataModule(SplitDataModule):
    """Multimodal GeoTIFF data: one folder per modality per split, labels as rasters or a scene-label csv.

    Batches are ``{"image": {modality: (B, C, H, W)}, "valid": {modality: (B, H, W)}, "mask": labels,
    "meta": [per-sample dicts with sample_id, crs, transform, nodata, path]}``; images are standardized
    ``(x - mean) / std`` after the transfer to the device.

    Args:
        modalities: modality names as the backbone knows them (``S2L1C``, ``S1GRD``, ...).
        task: ``"segmentation"``, ``"regression"`` or ``"classification"``.
        batch_size: samples per batch.
        num_workers: data loader workers.
        train_data_root: folder per modality, or one folder for all (likewise ``val_``/``test_``/
            ``predict_data_root``).
        train_label_data_root: folder of label rasters (likewise for val/test; ``predict_label_data_root`` is
            optional: with it, predict batches carry the label as ``mask`` and prediction panels draw it).
        data_root: the folder(s) of every split whose own ``<split>_data_root`` is not given.
        label_data_root: the label folder of train, val and test when their own is not given.
        train_split: optional file listing sample ids (likewise for val/test/predict).
        image_grep: file pattern per modality (default ``"*.tif"``); a single string applies to all.
        img_grep: TerraTorch's older name of ``image_grep``.
        label_grep: label file pattern (default ``"*.tif"``).
        label_csv: scene labels for classification (``sample,label``), instead of label rasters.
        multi_label: scene labels are sets of classes (multi-hot targets), e.g. BigEarthNet.
        means: per-modality band means (raw units); default: the modality registry. Extra keys are ignored.
        stds: per-modality band stds, as ``means``.
        bands: per-modality band names the files hold, in order (default: all pretrained bands).
        dataset_bands: per-modality bands the files hold, in order: band names, integer placeholders for unnamed
            bands and ``[first, last]`` integer ranges (TerraTorch's form). Use it with ``output_bands``
            instead of ``bands``.
        output_bands: per-modality bands given to the model, named as in ``dataset_bands`` (default: all of
            them); ``means``/``stds`` then hold one value per output band.
        rgb_modality: accepted so that TerraTorch configs load, and ignored: prediction panels draw every modality
            with its own display bands (:mod:`terratim.viz`).
        rgb_indices: accepted and ignored, as ``rgb_modality``.
        allow_substring_file_names: accept files whose names merely contain the sample id.
        no_data_replace: fill value (raw units) for nodata pixels; default: the modality mean (0 after
            standardization).
        no_label_replace: label value for label nodata (default -1, the usual ignore index).
        num_classes: number of classes; label values outside ``0..num_classes-1`` (and not the ignore value)
            raise an error naming the file.
        reduce_zero_label: subtract 1 from labels (for datasets whose class 0 means "no data").
        nodata_to_ignore: set label pixels with no valid input in any modality to the ignore value.
        train_transform: list of transforms (``class_path`` dicts or callables) for training; likewise for the
            other splits. Geometric transforms apply the same draw to every modality and the label.
            ``predict_transform`` must keep the geometry (no crops or flips): predictions take the georeferencing
            of the input files.
        modality_dropout: probability of dropping each modality from a training batch (one is always kept).
        drop_last: drop the last incomplete training batch.
        missing: ``"raise"`` on a sample with a missing file, or ``"skip"`` it with a warning. Default: raise
            for samples a split file lists, skip (with the warning) files found without a split file whose label
            or other modality is absent, as TerraTorch does.
    """

    def __init__(
        self,
        modalities: list[str],
        task: Literal["segmentation", "regression", "classification"] = "segmentation",
        batch_size: int = 8,
        num_workers: int = 0,
        train_data_root: dict[str, str] | str | None = None,
        val_data_root: dict[str, str] | str | None = None,
        test_data_root: dict[str, str] | str | None = None,
        predict_data_root: dict[str, str] | str | None = None,
        data_root: dict[str, str] | str | None = None,
        train_label_data_root: str | None = None,
        val_label_data_root: str | None = None,
        test_label_data_root: str | None = None,
        predict_label_data_root: str | None = None,
        label_data_root: str | None = None,
        train_split: str | None = None,
        val_split: str | None = None,
        test_split: str | None = None,
        predict_split: str | None = None,
        image_grep: dict[str, str] | str | None = None,
        label_grep: str | None = None,
        img_grep: dict[str, str] | str | None = None,
        label_csv: str | None = None,
        multi_label: bool = False,
        means: dict[str, list[float]] | None = None,
        stds: dict[str, list[float]] | None = None,
        bands: dict[str, list[str]] | None = None,
        dataset_bands: dict[str, list[int | str | tuple[int, int]]] | None = None,
        output_bands: dict[str, list[int | str | tuple[int, int]]] | None = None,
        rgb_modality: str | None = None,  # ignored (TerraTorch configs pass it)
        rgb_indices: list[int] | None = None,  # ignored (TerraTorch configs pass it)
        allow_substring_file_names: bool = True,
        no_data_replace: float | None = None,
        no_label_replace: float | None = -1,
        num_classes: int | None = None,
        reduce_zero_label: bool = False,
        nodata_to_ignore: bool = False,
        train_transform: list[Any] | None = None,
        val_transform: list[Any] | None = None,
        test_transform: list[Any] | None = None,
        predict_transform: list[Any] | None = None,
        modality_dropout: float = 0.0,
        drop_last: bool = True,
        missing: Literal["raise", "skip"] | None = None,
    ) -> None:
        super().__init__()
        self.modalities = list(modalities)
        for m in self.modalities:
            resolve(m)  # fail early on unknown names
        self.task = task
        self.batch_size, self.num_workers = batch_size, num_workers
        given = {"train": train_data_root, "val": val_data_root, "test": test_data_root, "predict": predict_data_root}
        self.roots = {split: self._per_modality(root or data_root) for split, root in given.items()}
        self.label_roots = {
            "train": train_label_data_root or label_data_root,
            "val": val_label_data_root or label_data_root,
            "test": test_label_data_root or label_data_root,
            "predict": predict_label_data_root,  # predict data has no labels unless given for it
        }
        self.splits = {"train": train_split, "val": val_split, "test": test_split, "predict": predict_split}
        if data_root is not None and not (train_split and val_split and test_split):
            warnings.warn(
                "data_root is shared by the splits without train_split/val_split/test_split files: train, val and "
                "test read the same samples",
                UserWarning,
                stacklevel=2,
            )
        if img_grep is not None:
            if image_grep is not None:
                raise ValueError("give image_grep or its older name img_grep, not both")
            image_grep = img_grep
        if isinstance(image_grep, str) or image_grep is None:
            image_grep = {m: image_grep or "*.tif" for m in self.modalities}
        missing_grep = [m for m in self.modalities if _lookup(image_grep, m) is None]
        if missing_grep:
            raise ValueError(f"image_grep has no pattern for {missing_grep}")
        self.image_grep = {m: _lookup(image_grep, m) for m in self.modalities}
        self.label_grep = label_grep or "*.tif"
        self.label_csv, self.multi_label = label_csv, multi_label
        self.band_selections = self._band_selections(dataset_bands, output_bands)
        if bands and self.band_selections:
            raise ValueError("give bands (names of every file band) or dataset_bands/output_bands, not both")
        self.bands = {m: list(_lookup(bands, m)) for m in self.modalities if _lookup(bands, m)} if bands else {}
        self.bands.update({m: list(sel.output_bands) for m, sel in self.band_selections.items()})
        for m, sel in self.band_selections.items():
            placeholders = [b for b in sel.output_bands if not isinstance(b, str)]
            if placeholders and _lookup(means, m) is None:
                raise ValueError(
                    f"output_bands of {m} include unnamed bands {placeholders}, which have no pretraining "
                    f"statistics: give means and stds of {m}"
                )
        self.stats = {m: modality_stats(m, self.bands.get(m), means, stds) for m in self.modalities}
        self.allow_substring_file_names = allow_substring_file_names
        self.no_data_replace, self.no_label_replace = no_data_replace, no_label_replace
        self.num_classes, self.reduce_zero_label = num_classes, reduce_zero_label
        self.nodata_to_ignore = nodata_to_ignore
        self.transforms = {
            "train": build_transforms(train_transform),
            "val": build_transforms(val_transform),
            "test": build_transforms(test_transform),
            "predict": build_transforms(predict_transform),
        }
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        self.modality_dropout = modality_dropout
        self.drop_last, self.missing = drop_last, missing
        self.datasets: dict[str, MultiModalGeoTiffDataset] = {}
        self._device_stats: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.dropout_generator: torch.Generator | None = None

    def _per_modality(self, root: dict[str, str] | str | None) -> dict[str, str] | None:
        """A data root as ``{modality: folder}`` (one folder given as a string serves every modality)."""
        return {m: root for m in self.modalities} if isinstance(root, str | os.PathLike) else root

    def _band_selections(
        self, dataset_bands: Mapping[str, Sequence[Any]] | None, output_bands: Mapping[str, Sequence[Any]] | None
    ) -> dict[str, BandSelection]:
        """Per-modality :class:`BandSelection` of ``dataset_bands``/``output_bands`` (only modalities named there)."""
        wanted_names = {resolve(m).name for m in self.modalities}
        for option, table in (("dataset_bands", dataset_bands), ("output_bands", output_bands)):
            for key in table or {}:
                try:
                    known = resolve(key).name in wanted_names
                except KeyError:
                    known = False
                if not known:
                    raise ValueError(f"{option} names {key!r}, which is not one of the modalities {self.modalities}")
        selections = {}
        for m in self.modalities:
            declared, wanted = _lookup(dataset_bands, m), _lookup(output_bands, m)
            if wanted is not None and declared is None:
                raise ValueError(f"output_bands of {m} needs dataset_bands of {m}, the bands its files hold")
            if declared is not None:
                selections[m] = BandSelection.build(m, declared, wanted)
        return selections

    # ----------------------------------------------------------------------------------------------- datasets
    def _samples(self, split: Split) -> list[SampleFiles]:
        roots = self.roots[split]
        if not roots:
            raise ValueError(f"no {split}_data_root given, so there is no {split} data")
        if set(map(lambda m: resolve(m).name, roots)) != {resolve(m).name for m in self.modalities}:
            raise ValueError(f"{split}_data_root has modalities {list(roots)}, expected {self.modalities}")
        roots = {m: _lookup(roots, m) for m in self.modalities}
        labels = None if self.label_csv else self.label_roots[split]
        if self.task != "classification" and self.label_roots[split] is None and split != "predict":
            raise ValueError(f"no {split}_label_data_root given for the {self.task} task")
        samples = match_samples(
            roots,
            self.image_grep,
            labels,
            self.label_grep,
            self.splits[split],
            self.allow_substring_file_names,
            self.missing or ("raise" if self.splits[split] else "skip"),
        )
        if self.label_csv and split != "predict":
            table = read_label_csv(self.label_csv)
            lost = [s.sample_id for s in samples if s.sample_id not in table]
            if lost:
                raise KeyError(f"label_csv {self.label_csv} has no label for samples {lost[:5]}")
            for s in samples:
                s.target = table[s.sample_id]
        return samples

    def fill_values(self) -> dict[str, np.ndarray]:
        """Per-modality nodata fill (raw units): ``no_data_replace``, else the band means."""
        if self.no_data_replace is not None:
            return {m: np.full_like(self.stats[m][0], self.no_data_replace) for m in self.modalities}
        return {m: self.stats[m][0] for m in self.modalities}

    def make_dataset(self, split: Split) -> MultiModalGeoTiffDataset:
        num_bands = {m: len(self.stats[m][0]) for m in self.modalities}
        return MultiModalGeoTiffDataset(
            self._samples(split),
            num_bands,
            self.fill_values(),
            task=self.task,
            num_classes=self.num_classes,
            ignore_index=int(self.no_label_replace) if self.no_label_replace is not None else -1,
            no_label_replace=self.no_label_replace,
            reduce_zero_label=self.reduce_zero_label,
            nodata_to_ignore=self.nodata_to_ignore,
            multi_label=self.multi_label,
            transform=self.transforms[split],
            band_selections=self.band_selections,
        )

    def setup(self, stage: str | None = None) -> None:
        wanted: dict[str, tuple[Split, ...]] = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("predict",),
        }
        for split in wanted.get(stage, SPLITS) if stage else SPLITS:
            optional = (stage == "fit" and split == "val") or stage is None
            if split not in self.datasets and not (optional and not self.roots[split]):
                self.datasets[split] = self.make_dataset(split)

    def _loader(self, split: Split) -> DataLoader:
        if split not in self.datasets:
            self.datasets[split] = self.make_dataset(split)
        train = split == "train"
        dataset = self.datasets[split]
        drop_last = self.drop_last and train and len(dataset) > self.batch_size
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            collate_fn=collate,
            drop_last=drop_last,
            persistent_workers=self.num_workers > 0 and train,
        )

    def _stats_on(self, mod: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (mod, str(device))
        if key not in self._device_stats:
            mean, std = self.stats[mod]
            self._device_stats[key] = (
                torch.as_tensor(mean, device=device),
                torch.as_tensor(std, device=device),
            )
        return self._device_stats[key]

    def standardize(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``(x - mean) / std`` per modality and band; images are (B, C, H, W)."""
        out = {}
        for mod, x in images.items():
            mean, std = self._stats_on(mod, x.device)
            out[mod] = normalize(x.float(), mean, std, mod)
        return out

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        batch["image"] = self.standardize(batch["image"])
        training = self.trainer is not None and self.trainer.training
        if training and self.modality_dropout > 0:
            batch["image"] = drop_modalities(batch["image"], self.modality_dropout, self.dropout_generator)
        return batch


def drop_modalities(
    images: dict[str, torch.Tensor], p: float, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Drop each modality of a batch with probability ``p``, always keeping at least one."""
    names = list(images)
    keep = torch.rand(len(names), generator=generator) >= p
    if not keep.any():
        keep[int(torch.randint(len(names), (1,), generator=generator))] = True
    return {n: images[n] for n, k in zip(names, keep.tolist(), strict=True) if k}
