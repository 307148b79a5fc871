"""Lightning data modules for single-raster datasets, with the arguments of TerraTorch's generic non-geo modules.

``GenericNonGeoSegmentationDataModule``, ``GenericNonGeoPixelwiseRegressionDataModule`` and
``GenericNonGeoClassificationDataModule`` read one GeoTIFF per sample (every band, and with
``expand_temporal_dimension`` every date, in one file); configs written for TerraTorch run after renaming
``terratorch.`` to ``terratim.`` (or by the short class name).

Batches are ``{"image": (B, C, H, W) or (B, C, T, H, W) tensor, "valid": {"image": (B, H, W)}, "mask": labels,
"meta": [per-sample dicts]}``; images are standardized ``(x - mean) / std`` per channel after the transfer to the
device, as the tasks expect. Differences from TerraTorch, each to avoid a silent wrong result: nodata pixels
without ``no_data_replace`` get the band mean (0 after standardization) instead of staying NaN; a label with
nodata pixels needs ``no_label_replace`` (segmentation); ``reduce_zero_label`` leaves ``no_label_replace``
pixels as they are; labels are paired with images by name, not by sorted position; multi-date files are read
date by date unless ``temporal_channel_major`` says otherwise (TerraTorch's fix of its issue 1080).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from terratim.data.datasets import collate
from terratim.data.single_raster import (
    IMAGE_KEY,
    BandLayout,
    RasterSample,
    SingleRasterDataset,
    band_layout,
    file_band_count,
    find_class_samples,
    find_pixel_samples,
)
from terratim.data.transforms import build_transforms
from terratim.datamodules.base import Split, SplitDataModule
from terratim.modalities import normalize

SPLITS: tuple[Split, ...] = ("train", "val", "test", "predict")
STAGE_SPLITS: dict[str, tuple[Split, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("predict",),
}
Bands = list[int | str | list[int]] | None


def load_band_values(value: Sequence[float] | str, option: str) -> list[float]:
    """Per-band values given inline, or as a file: YAML/JSON with an ``option`` key (what ``terratim
    compute-statistics`` prints), a YAML/JSON list, or whitespace-separated numbers."""
    if not isinstance(value, str):
        return [float(v) for v in value]
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"{option}: file not found: {path}")
    import yaml

    content = yaml.safe_load(path.read_text())
    if isinstance(content, dict):
        if option not in content:
            raise ValueError(f"{option}: {path} has no {option!r} entry (keys: {sorted(content)})")
        content = content[option]
    if isinstance(content, str | int | float):
        content = str(content).split()
    if not isinstance(content, list) or not content:
        raise ValueError(f"{option}: {path} does not hold a list of numbers")
    try:
        return [float(v) for v in content]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{option}: {path} holds a value that is not a number: {err}") from err


class SingleRasterDataModule(SplitDataModule):
    """Shared plumbing: file discovery per split, statistics, batching and standardization on the device.

    Subclasses set :attr:`task` and implement :meth:`find_samples`.
    """

    task = "segmentation"
    num_classes: int | None = None  # segmentation: label values are checked against it

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        means: list[float] | str,
        stds: list[float] | str,
        roots: dict[str, str | None],
        splits: dict[str, str | None],
        dataset_bands: Bands = None,
        output_bands: Bands = None,
        predict_dataset_bands: Bands = None,
        predict_output_bands: Bands = None,
        constant_scale: float = 1.0,
        rgb_indices: list[int] | None = None,
        transforms: dict[str, Any] | None = None,
        expand_temporal_dimension: bool = False,
        temporal_channel_major: bool = False,
        no_data_replace: float | None = None,
        no_label_replace: float | None = None,
        reduce_zero_label: bool = False,
        ignore_split_file_extensions: bool = True,
        allow_substring_split_file: bool = True,
        drop_last: bool = True,
        pin_memory: bool = False,
        check_stackability: bool = True,
    ) -> None:
        super().__init__()
        self.batch_size, self.num_workers = batch_size, num_workers
        self.means = np.asarray(load_band_values(means, "means"), dtype=np.float32)
        self.stds = np.asarray(load_band_values(stds, "stds"), dtype=np.float32)
        if self.means.shape != self.stds.shape:
            raise ValueError(f"means has {self.means.size} values but stds has {self.stds.size}")
        if (self.stds <= 0).any() or not np.isfinite(self.stds).all():
            raise ValueError(f"stds must be positive and finite, got {self.stds.tolist()}")
        self.roots, self.splits = roots, splits
        self.layouts: dict[Split, BandLayout] = {}
        for split in SPLITS:
            predict = split == "predict"
            self.layouts[split] = band_layout(
                (predict_dataset_bands or dataset_bands) if predict else dataset_bands,
                (predict_output_bands or output_bands) if predict else output_bands,
                expand_temporal_dimension,
                temporal_channel_major,
            )
        self.dataset_bands, self.output_bands = dataset_bands, output_bands
        self.constant_scale = constant_scale
        self.rgb_indices = rgb_indices
        self.expand_temporal_dimension = expand_temporal_dimension
        self.no_data_replace, self.no_label_replace = no_data_replace, no_label_replace
        self.reduce_zero_label = reduce_zero_label
        self.ignore_split_file_extensions = ignore_split_file_extensions
        self.allow_substring_split_file = allow_substring_split_file
        self.drop_last, self.pin_memory, self.check_stackability = drop_last, pin_memory, check_stackability
        self.transforms = {split: build_transforms((transforms or {}).get(split)) for split in SPLITS}
        self.datasets: dict[str, SingleRasterDataset] = {}
        self._device_stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # device -> (means, stds), (C,)

    # ----------------------------------------------------------------------------------------------- datasets
    def find_samples(self, split: Split) -> list[RasterSample]:
        raise NotImplementedError

    def fill_values(self) -> np.ndarray:
        """Per-channel nodata fill after ``constant_scale``: ``no_data_replace`` (raw units), else the means."""
        if self.no_data_replace is not None:
            return np.full_like(self.means, self.no_data_replace * self.constant_scale)
        return self.means

    def check_channels(self, split: Split, samples: Sequence[RasterSample]) -> None:
        """The first file's channel count (after band selection) must match means/stds."""
        first = samples[0].image
        channels = self.layouts[split].num_outputs(file_band_count(first), first)
        if channels != self.means.size:
            raise ValueError(
                f"{split} data: {first} gives {channels} channels (dataset_bands/output_bands) but means and stds "
                f"have {self.means.size} values"
            )

    def make_dataset(self, split: Split) -> SingleRasterDataset:
        root = self.roots.get(split)
        if not root:
            raise ValueError(f"no {split}_data_root given, so there is no {split} data")
        samples = self.find_samples(split)
        self.check_channels(split, samples)
        return SingleRasterDataset(
            samples,
            self.layouts[split],
            self.fill_values(),
            task=self.task,
            constant_scale=self.constant_scale,
            no_label_replace=self.no_label_replace,
            reduce_zero_label=self.reduce_zero_label,
            transform=self.transforms[split],
            num_classes=self.num_classes if self.task == "segmentation" else None,
        )

    def setup(self, stage: str | None = None) -> None:
        for split in STAGE_SPLITS.get(stage, SPLITS) if stage else SPLITS:
            optional = (stage == "fit" and split == "val") or stage is None
            if split not in self.datasets and not (optional and not self.roots.get(split)):
                self.datasets[split] = self.make_dataset(split)

    def loader_batch_size(self, split: Split, dataset: SingleRasterDataset) -> int:
        """``batch_size``, or 1 when ``check_stackability`` finds untransformed files of different sizes."""
        if not self.check_stackability or self.batch_size == 1 or self.transforms[split] is not None:
            return self.batch_size
        sizes = set()
        import rasterio

        for sample in dataset.samples:
            with rasterio.open(sample.image) as src:
                sizes.add((src.height, src.width))
            if len(sizes) > 1:
                warnings.warn(
                    f"{split} images have different sizes ({sorted(sizes)}), so batches cannot be stacked: "
                    "batch_size 1",
                    stacklevel=2,
                )
                return 1
        return self.batch_size

    def _loader(self, split: Split) -> DataLoader:
        if split not in self.datasets:
            self.datasets[split] = self.make_dataset(split)
        dataset = self.datasets[split]
        train = split == "train"
        batch_size = self.loader_batch_size(split, dataset)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            collate_fn=collate,
            drop_last=self.drop_last and train and len(dataset) > batch_size,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0 and train,
        )

    def standardize(self, image: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel of a (B, C, H, W) or (B, C, T, H, W) batch."""
        if image.ndim not in (4, 5) or image.shape[1] != self.means.size:
            raise ValueError(
                f"expected images (B, C, H, W) or (B, C, T, H, W) with C = {self.means.size} (means/stds), "
                f"got {tuple(image.shape)}"
            )
        key = str(image.device)
        if key not in self._device_stats:
            self._device_stats[key] = (
                torch.as_tensor(self.means, device=image.device),
                torch.as_tensor(self.stds, device=image.device),
            )
        mean, std = self._device_stats[key]
        channels_third_last = image.float().movedim(1, -3)  # (B, [T,] C, H, W): bands where normalize expects them
        return normalize(channels_third_last, mean, std, "image").movedim(-3, 1)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        image = batch["image"]
        batch["image"] = self.standardize(image[IMAGE_KEY] if isinstance(image, dict) else image)
        return batch


class _PixelwiseDataModule(SingleRasterDataModule):
    """Segmentation and regression: image files plus label rasters, found by ``img_grep`` / ``label_grep``."""

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        means: list[float] | str,
        stds: list[float] | str,
        roots: Mapping[str, str | None],
        splits: Mapping[str, str | None],
        label_roots: Mapping[str, str | None],
        img_grep: str = "*",
        label_grep: str = "*",
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size, num_workers, means, stds, dict(roots), dict(splits), **kwargs)
        self.img_grep, self.label_grep = img_grep, label_grep
        self.label_roots = dict(label_roots)  # split -> folder of its labels (None: the data folder)

    def find_samples(self, split: Split) -> list[RasterSample]:
        root = self.roots[split]
        assert root is not None
        return find_pixel_samples(
            root,
            self.img_grep,
            self.label_roots.get(split),
            self.label_grep,
            self.splits.get(split),
            self.ignore_split_file_extensions,
            self.allow_substring_split_file,
            with_labels=split != "predict",
        )


def _split_transforms(train: Any, val: Any, test: Any, predict: Any) -> dict[str, Any]:
    """Per-split transform lists; predict uses ``predict_transform``, else the test transforms (TerraTorch)."""
    return {"train": train, "val": val, "test": test, "predict": predict if predict is not None else test}


class _GenericPixelwiseDataModule(_PixelwiseDataModule):
    """TerraTorch's arguments of the pixel-wise single-raster data modules (see the subclasses)."""

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        means: list[float] | str,
        stds: list[float] | str,
        train_data_root: str | None = None,
        val_data_root: str | None = None,
        test_data_root: str | None = None,
        predict_data_root: str | None = None,
        img_grep: str = "*",
        label_grep: str = "*",
        train_label_data_root: str | None = None,
        val_label_data_root: str | None = None,
        test_label_data_root: str | None = None,
        train_split: str | None = None,
        val_split: str | None = None,
        test_split: str | None = None,
        predict_split: str | None = None,
        ignore_split_file_extensions: bool = True,
        allow_substring_split_file: bool = True,
        dataset_bands: Bands = None,
        output_bands: Bands = None,
        predict_dataset_bands: Bands = None,
        predict_output_bands: Bands = None,
        constant_scale: float = 1.0,
        rgb_indices: list[int] | None = None,
        train_transform: list[Any] | None = None,
        val_transform: list[Any] | None = None,
        test_transform: list[Any] | None = None,
        predict_transform: list[Any] | None = None,
        expand_temporal_dimension: bool = False,
        temporal_channel_major: bool = False,
        reduce_zero_label: bool = False,
        no_data_replace: float | None = None,
        no_label_replace: float | None = None,
        drop_last: bool = True,
        pin_memory: bool = False,
        check_stackability: bool = True,
    ) -> None:
        super().__init__(
            batch_size,
            num_workers,
            means,
            stds,
            roots=dict(train=train_data_root, val=val_data_root, test=test_data_root, predict=predict_data_root),
            splits={"train": train_split, "val": val_split, "test": test_split, "predict": predict_split},
            label_roots={"train": train_label_data_root, "val": val_label_data_root, "test": test_label_data_root},
            img_grep=img_grep,
            label_grep=label_grep,
            dataset_bands=dataset_bands,
            output_bands=output_bands,
            predict_dataset_bands=predict_dataset_bands,
            predict_output_bands=predict_output_bands,
            constant_scale=constant_scale,
            rgb_indices=rgb_indices,
            transforms=_split_transforms(train_transform, val_transform, test_transform, predict_transform),
            expand_temporal_dimension=expand_temporal_dimension,
            temporal_channel_major=temporal_channel_major,
            no_data_replace=no_data_replace,
            no_label_replace=no_label_replace,
            reduce_zero_label=reduce_zero_label,
            ignore_split_file_extensions=ignore_split_file_extensions,
            allow_substring_split_file=allow_substring_split_file,
            drop_last=drop_last,
            pin_memory=pin_memory,
            check_stackability=check_stackability,
        )


class GenericNonGeoSegmentationDataModule(_GenericPixelwiseDataModule):
    """Semantic segmentation from one raster per sample and a label raster (TerraTorch's arguments).

    Args:
        batch_size: samples per batch.
        num_workers: data loader workers.
        train_data_root: folder of the training images (likewise ``val_``, ``test_``, ``predict_data_root``).
        means: per-channel means of the model's input channels (after band selection and ``constant_scale``),
            or a file holding them (the output of ``terratim compute-statistics``).
        stds: per-channel standard deviations, as ``means``.
        num_classes: number of classes; labels outside ``0..num_classes-1`` (other than ``no_label_replace``)
            are left to the task's ignore index.
        img_grep: glob of the image files in the data folders (``"*_merged.tif"``).
        label_grep: glob of the label files (``"*.mask.tif"``).
        train_label_data_root: folder of the training labels (default: the data folder); likewise val/test.
        train_split: file listing name fragments of the training samples, one per line; likewise val/test/predict.
        ignore_split_file_extensions: drop extensions from split entries and file names before matching.
        allow_substring_split_file: a split entry selects every file whose name contains it (else: equals it).
        dataset_bands: the bands each file holds, in order (names, integers, ``[first, last]`` ranges).
        output_bands: the bands given to the model, named as in ``dataset_bands``.
        predict_dataset_bands: ``dataset_bands`` of the predict files, if different.
        predict_output_bands: ``output_bands`` for prediction, if different.
        constant_scale: factor applied to the pixels before standardization.
        rgb_indices: the input channels drawn as red, green, blue in ``predict --predict_png`` panels (default the
            first three; a series shows its last date).
        train_transform: list of transforms (``class_path`` dicts, albumentations or native); likewise val/test.
        predict_transform: transforms for prediction (default: ``test_transform``); must keep the geometry.
        expand_temporal_dimension: each file holds several dates of ``dataset_bands``; images become
            (C, T, H, W).
        temporal_channel_major: with several dates, the file's bands run date by date within each band
            (b1t1, b1t2, ..., b2t1, ...) instead of band by band within each date (the default).
        reduce_zero_label: subtract 1 from labels (class 0 becomes -1, i.e. ignored with ignore_index -1).
        no_data_replace: value (raw units) for nodata pixels; default: the band mean.
        no_label_replace: label value for label nodata, usually the task's ``ignore_index`` (-1).
        drop_last: drop the last incomplete training batch.
        pin_memory: pin batches in memory for faster GPU transfers.
        check_stackability: use batch size 1 when untransformed images differ in size.
    """

    task = "segmentation"

    def __init__(self, *args: Any, num_classes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
        self.num_classes = num_classes


class GenericNonGeoPixelwiseRegressionDataModule(_GenericPixelwiseDataModule):
    """Pixel-wise regression from one raster per sample and a target raster (TerraTorch's arguments).

    The arguments are those of :class:`GenericNonGeoSegmentationDataModule` without ``num_classes``. Target
    nodata stays NaN (left out of the losses and metrics) unless ``no_label_replace`` gives a value.
    """

    task = "regression"


class GenericNonGeoClassificationDataModule(SingleRasterDataModule):
    """Scene classification from image folders ``<root>/<class name>/<file>`` (TerraTorch's arguments).

    Class indices follow the sorted class folder names (``class_names`` fixes them instead). The predict folder
    needs no class folders: every file under it is a sample. Other arguments as
    :class:`GenericNonGeoSegmentationDataModule`; ``no_data_replace`` defaults to 0 as in TerraTorch.
    """

    task = "classification"

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        means: list[float] | str,
        stds: list[float] | str,
        num_classes: int,
        train_data_root: str | None = None,
        val_data_root: str | None = None,
        test_data_root: str | None = None,
        predict_data_root: str | None = None,
        train_split: str | None = None,
        val_split: str | None = None,
        test_split: str | None = None,
        predict_split: str | None = None,
        ignore_split_file_extensions: bool = True,
        allow_substring_split_file: bool = True,
        dataset_bands: Bands = None,
        output_bands: Bands = None,
        predict_dataset_bands: Bands = None,
        predict_output_bands: Bands = None,
        constant_scale: float = 1.0,
        rgb_indices: list[int] | None = None,
        train_transform: list[Any] | None = None,
        val_transform: list[Any] | None = None,
        test_transform: list[Any] | None = None,
        predict_transform: list[Any] | None = None,
        expand_temporal_dimension: bool = False,
        temporal_channel_major: bool = False,
        no_data_replace: float | None = 0,
        class_names: list[str] | None = None,
        drop_last: bool = True,
        pin_memory: bool = False,
        check_stackability: bool = True,
    ) -> None:
        roots = {"train": train_data_root, "val": val_data_root, "test": test_data_root, "predict": predict_data_root}
        splits = {"train": train_split, "val": val_split, "test": test_split, "predict": predict_split}
        super().__init__(
            batch_size,
            num_workers,
            means,
            stds,
            roots,
            splits,
            dataset_bands=dataset_bands,
            output_bands=output_bands,
            predict_dataset_bands=predict_dataset_bands,
            predict_output_bands=predict_output_bands,
            constant_scale=constant_scale,
            rgb_indices=rgb_indices,
            transforms=_split_transforms(train_transform, val_transform, test_transform, predict_transform),
            expand_temporal_dimension=expand_temporal_dimension,
            temporal_channel_major=temporal_channel_major,
            no_data_replace=no_data_replace,
            ignore_split_file_extensions=ignore_split_file_extensions,
            allow_substring_split_file=allow_substring_split_file,
            drop_last=drop_last,
            pin_memory=pin_memory,
            check_stackability=check_stackability,
        )
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2 for classification, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names for {num_classes} classes")
        self.num_classes, self.class_names = num_classes, class_names

    def find_samples(self, split: Split) -> list[RasterSample]:
        root = self.roots[split]
        assert root is not None
        samples, names = find_class_samples(
            root,
            self.splits.get(split),
            self.ignore_split_file_extensions,
            self.allow_substring_split_file,
            self.class_names,
            require_label=split != "predict",
        )
        if split != "predict" and len(names) != self.num_classes:
            raise ValueError(
                f"{split}_data_root {root} has {len(names)} class folders {names[:10]}, but num_classes is "
                f"{self.num_classes}"
            )
        return samples
