"""Tiny multimodal GeoTIFF samples for the data-module tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rasters import write_tif


def make_sample(root: Path, sid: str, size: int = 16, s2_bands: int = 12, s1_size: int | None = None,
                label: np.ndarray | None = None, seed: int = 0) -> None:
    """``root/{S2L2A,S1GRD,label}/<sid>_*.tif``; S1 has one nodata pixel, the label one nodata pixel."""
    rng = np.random.default_rng(seed)
    s2 = rng.integers(0, 4000, (s2_bands, size, size)).astype(np.uint16)
    s1 = rng.normal(-12, 3, (2, s1_size or size, s1_size or size)).astype(np.float32)
    s1[:, 0, 0] = -9999
    if label is None:
        label = rng.integers(0, 3, (size, size)).astype(np.int16)
        label[-1, -1] = -1
    write_tif(root / "S2L2A" / f"{sid}_s2.tif", s2)
    write_tif(root / "S1GRD" / f"{sid}_s1.tif", s1, nodata=-9999)
    write_tif(root / "label" / f"{sid}_mask.tif", label[None].astype(np.int16), nodata=-1)


def module_args(root: Path, **kwargs) -> dict:
    """GenericMultiModalDataModule arguments for a tree written by make_sample (all splits on the same data)."""
    roots = {"S2L2A": str(root / "S2L2A"), "S1GRD": str(root / "S1GRD")}
    args = {"modalities": ["S2L2A", "S1GRD"], "batch_size": 2, "num_classes": 3,
            "image_grep": {"S2L2A": "*_s2.tif", "S1GRD": "*_s1.tif"}, "label_grep": "*_mask.tif"}
    for split in ("train", "val", "test"):
        args[f"{split}_data_root"] = roots
        args[f"{split}_label_data_root"] = str(root / "label")
    args["predict_data_root"] = roots
    args.update(kwargs)
    return args
