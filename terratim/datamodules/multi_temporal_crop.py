"""``MultiTemporalCropClassificationDataModule``: the HLS multi-temporal crop classification dataset in its
published layout, with the arguments of TerraTorch's module of the same name.

Layout (``data_root``)::

    training_chips/<chip>_merged.tif     18 bands: the 6 HLS bands of date 1, then of date 2, then of date 3
    training_chips/<chip>.mask.tif       classes 1..13 (0: no data)
    validation_chips/...                 the same for validation (also used for test and predict)
    training_data.txt, validation_data.txt   chip ids, one per line

Images are (6, 3, H, W) per sample (``expand_temporal_dimension``, the default) or (18, H, W) date by date
without it; labels are reduced by one (``reduce_zero_label``) so that class 0 (no data) becomes -1, the usual
ignore index. Standardization uses the dataset's published per-band statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from terratim.datamodules.single_raster import _PixelwiseDataModule

BAND_NAMES = ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2")
TIME_STEPS = 3
# Per-band statistics of the dataset's training chips in reflectance x 10000, as TerraTorch publishes them.
MEANS = {
    "BLUE": 494.905781,
    "GREEN": 815.239594,
    "RED": 924.335066,
    "NIR_NARROW": 2968.881459,
    "SWIR_1": 2634.621962,
    "SWIR_2": 1739.579917,
}
STDS = {
    "BLUE": 284.925432,
    "GREEN": 357.84876,
    "RED": 575.566823,
    "NIR_NARROW": 896.601013,
    "SWIR_1": 951.900334,
    "SWIR_2": 921.407808,
}
CLASS_NAMES = (
    "Natural Vegetation",
    "Forest",
    "Corn",
    "Soybeans",
    "Wetlands",
    "Developed / Barren",
    "Open Water",
    "Winter Wheat",
    "Alfalfa",
    "Fallow / Idle Cropland",
    "Cotton",
    "Sorghum",
    "Other",
)
FOLDERS = {"train": "training", "val": "validation", "test": "validation", "predict": "validation"}


def dated_bands(bands: Sequence[str], dates: int = TIME_STEPS) -> list[str]:
    """Names of a date-by-date stack: ``BLUE_t0, GREEN_t0, ..., BLUE_t1, ...``."""
    return [f"{band}_t{t}" for t in range(dates) for band in bands]


class MultiTemporalCropClassificationDataModule(_PixelwiseDataModule):
    """HLS multi-temporal crop classification (13 classes, 3 dates of 6 bands), in its published layout.

    Args:
        data_root: folder holding ``{training,validation}_chips/`` and ``{training,validation}_data.txt``.
        batch_size: samples per batch.
        num_workers: data loader workers.
        bands: the bands given to the model, a subset of BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2 (default:
            all six).
        train_transform: transforms for training (likewise val/test/predict); see
            :mod:`terratim.data.transforms` (``FlattenTemporalIntoChannels`` lets 2-D transforms see all dates).
        drop_last: drop the last incomplete training batch.
        no_data_replace: value (raw units) for nodata pixels (None: the band mean).
        no_label_replace: label value for label nodata (the task's ``ignore_index``).
        expand_temporal_dimension: images (C, T, H, W); without it (T*C, H, W), date by date.
        temporal_channel_major: the files hold the dates of each band together (b1t1, b1t2, ...) rather than
            the bands of each date (the published files, and the default).
        reduce_zero_label: subtract 1 from the labels, so that 0 (no data) becomes -1.
        use_metadata: TerraTorch returns dates and locations for models that take them; TerraMind takes neither,
            so only ``false`` is accepted.
        metadata_file_name: accepted with ``use_metadata`` for TerraTorch configs.
    """

    def __init__(
        self,
        data_root: str,
        batch_size: int = 4,
        num_workers: int = 0,
        bands: list[str] | None = None,
        train_transform: list[Any] | None = None,
        val_transform: list[Any] | None = None,
        test_transform: list[Any] | None = None,
        predict_transform: list[Any] | None = None,
        drop_last: bool = True,
        no_data_replace: float | None = 0,
        no_label_replace: int | None = -1,
        expand_temporal_dimension: bool = True,
        temporal_channel_major: bool = False,
        reduce_zero_label: bool = True,
        use_metadata: bool = False,
        metadata_file_name: str = "chips_df.csv",
    ) -> None:
        bands = list(BAND_NAMES) if bands is None else list(bands)
        unknown = [b for b in bands if b not in BAND_NAMES]
        if unknown or not bands:
            raise ValueError(f"bands {unknown or bands} are not bands of this dataset; choose from {list(BAND_NAMES)}")
        if use_metadata:
            raise ValueError(
                "use_metadata: true is not supported: TerraMind takes no dates or locations; set it to false"
            )
        root = Path(data_root)
        roots = {split: str(root / f"{folder}_chips") for split, folder in FOLDERS.items()}
        splits = {split: str(root / f"{folder}_data.txt") for split, folder in FOLDERS.items()}
        if expand_temporal_dimension:
            dataset_bands, output_bands, dated = list(BAND_NAMES), list(bands), list(bands)
        else:
            dataset_bands = dated_bands(BAND_NAMES)  # the file's order, as band names of one (T*C) stack
            if temporal_channel_major:
                dataset_bands = [f"{band}_t{t}" for band in BAND_NAMES for t in range(TIME_STEPS)]
            output_bands = dated_bands(bands)
            dated = [b for _ in range(TIME_STEPS) for b in bands]
        super().__init__(
            batch_size,
            num_workers,
            [MEANS[b] for b in dated],
            [STDS[b] for b in dated],
            roots=roots,
            splits=splits,
            label_roots={},
            img_grep="*_merged.tif",
            label_grep="*.mask.tif",
            dataset_bands=dataset_bands,
            output_bands=output_bands,
            transforms={
                "train": train_transform,
                "val": val_transform,
                "test": test_transform,
                "predict": predict_transform,
            },
            expand_temporal_dimension=expand_temporal_dimension,
            temporal_channel_major=temporal_channel_major and expand_temporal_dimension,
            no_data_replace=no_data_replace,
            no_label_replace=no_label_replace,
            reduce_zero_label=reduce_zero_label,
            drop_last=drop_last,
            check_stackability=False,
        )
        self.data_root, self.bands = data_root, list(bands)
        self.num_classes, self.class_names = len(CLASS_NAMES), list(CLASS_NAMES)
        self.use_metadata, self.metadata_file_name = use_metadata, metadata_file_name
