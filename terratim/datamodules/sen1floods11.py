"""Sen1Floods11 (Bonafilia et al. 2020) hand-labelled flood chips in their official layout.

Two layouts are recognised under ``root``:

* flat: ``S1Hand/``, ``S2Hand/``, ``LabelHand/`` and ``splits/flood_{train,valid,test}_data.txt`` (ids);
* v1.1 bucket: ``data/flood_events/HandLabeled/{S1Hand,S2Hand,LabelHand}/`` and
  ``splits/flood_handlabeled/flood_{train,valid,test}_data.csv`` (file names).

``S2Hand`` holds 13-band Sentinel-2 L1C (modality ``S2L1C``), ``S1Hand`` VV/VH backscatter in dB (``S1GRD``),
``LabelHand`` 0 = no water, 1 = water, -1 = no data (ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from terratim.datamodules.multimodal import GenericMultiModalDataModule
from terratim.modalities import resolve

FOLDERS = {"S2L1C": ("S2Hand", "*_S2Hand.tif"), "S1GRD": ("S1Hand", "*_S1Hand.tif")}
SPLIT_NAMES = {"train": "train", "val": "valid", "test": "test"}


def _layout(root: Path) -> tuple[Path, Path]:
    """(folder holding S1Hand/S2Hand/LabelHand, folder holding the split files)."""
    for data, splits in (
        (root, root / "splits"),
        (root / "data" / "flood_events" / "HandLabeled", root / "splits" / "flood_handlabeled"),
    ):
        if (data / "LabelHand").is_dir():
            return data, splits
    raise FileNotFoundError(
        f"{root} does not look like Sen1Floods11: no LabelHand/ folder in {root} or "
        f"{root / 'data/flood_events/HandLabeled'}"
    )


def split_file(split_dir: Path, split: str) -> Path:
    """The official split file for ``split`` (``train``, ``val`` or ``test``)."""
    stem = f"flood_{SPLIT_NAMES[split]}_data"
    for suffix in (".txt", ".csv"):
        if (split_dir / f"{stem}{suffix}").is_file():
            return split_dir / f"{stem}{suffix}"
    raise FileNotFoundError(f"no split file {stem}.txt or .csv in {split_dir}")


class Sen1Floods11DataModule(GenericMultiModalDataModule):
    """Sen1Floods11 flood segmentation from the official folders and split files.

    Args:
        root: dataset folder (either layout above).
        modalities: any of ``S2L1C`` and ``S1GRD``.
        batch_size: samples per batch.
        num_workers: data loader workers.
        split_files: replace official split files, e.g. ``{"train": "my_train.txt"}``.
        predict_root: folder per modality for ``predict`` (default: the test split).
        train_transform: training transforms (default ``D4``: random flips and 90-degree rotations).
        val_transform: validation transforms.
        test_transform: test transforms.
        crop_size: random crops of this size for training and centre crops for evaluation (chips are 512).
        no_data_replace: nodata fill in raw units (default the band means, i.e. 0 after standardization).
        nodata_to_ignore: ignore label pixels where no modality is valid.
        modality_dropout: probability of dropping each modality from a training batch.
        missing: ``"raise"`` on split entries without files, or ``"skip"`` them (partial copies).
        **kwargs: further :class:`GenericMultiModalDataModule` arguments (``means``, ``stds``, ``bands``).
    """

    def __init__(
        self,
        root: str,
        modalities: list[str] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        split_files: dict[str, str] | None = None,
        predict_root: dict[str, str] | None = None,
        train_transform: list[Any] | None = None,
        val_transform: list[Any] | None = None,
        test_transform: list[Any] | None = None,
        crop_size: int | None = None,
        no_data_replace: float | None = None,
        nodata_to_ignore: bool = False,
        modality_dropout: float = 0.0,
        missing: Literal["raise", "skip"] = "raise",
        **kwargs: Any,
    ) -> None:
        modalities = list(modalities or ["S2L1C", "S1GRD"])
        names = {m: resolve(m).name for m in modalities}
        unknown = [m for m, n in names.items() if n not in FOLDERS]
        if unknown:
            raise ValueError(f"Sen1Floods11 has modalities S2L1C (S2Hand) and S1GRD (S1Hand), not {unknown}")
        data_dir, split_dir = _layout(Path(root))
        roots = {m: str(data_dir / FOLDERS[names[m]][0]) for m in modalities}
        splits = {s: str(split_file(split_dir, s)) for s in SPLIT_NAMES}
        splits.update(split_files or {})
        if train_transform is None:
            train_transform = [{"class_path": "D4"}]
        if crop_size:
            train_transform = [
                {"class_path": "RandomCrop", "init_args": {"height": crop_size}},
                *train_transform,
            ]
            crop = [{"class_path": "CenterCrop", "init_args": {"height": crop_size}}]
            val_transform, test_transform = (
                crop + list(val_transform or []),
                crop + list(test_transform or []),
            )
        labels = str(data_dir / "LabelHand")
        super().__init__(
            modalities,
            "segmentation",
            batch_size,
            num_workers,
            train_data_root=roots,
            val_data_root=roots,
            test_data_root=roots,
            predict_data_root=predict_root or roots,
            train_label_data_root=labels,
            val_label_data_root=labels,
            test_label_data_root=labels,
            predict_label_data_root=None if predict_root else labels,  # the test chips' labels, for the panels
            train_split=splits["train"],
            val_split=splits["val"],
            test_split=splits["test"],
            predict_split=splits.get("predict", None if predict_root else splits["test"]),
            image_grep={m: FOLDERS[names[m]][1] for m in modalities},
            label_grep="*_LabelHand.tif",
            allow_substring_file_names=False,
            no_data_replace=no_data_replace,
            no_label_replace=-1,
            num_classes=2,
            nodata_to_ignore=nodata_to_ignore,
            train_transform=train_transform,
            val_transform=val_transform,
            test_transform=test_transform,
            predict_transform=None,  # full chips: predictions keep the chip's georeferencing
            modality_dropout=modality_dropout,
            missing=missing,
            **kwargs,
        )
