"""Small GeoTIFF trees in the Sen1Floods11 layouts (reference configs and release), for fine-tuning tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from affine import Affine

import rasters

REPO = Path(__file__).resolve().parents[2]
REFERENCE_CONFIGS = Path(__file__).parent / "reference_configs"
IDS = ["Ghana_1", "India_2", "Spain_3", "Mekong_4"]
WGS84_TRANSFORM = Affine(8.98e-5, 0.0, 10.0, 0.0, -8.98e-5, 45.0)  # ~10 m pixels at 45 N


def write_tif(path: Path, data: np.ndarray, nodata: float | None = None) -> Path:
    """Write (C, H, W) data as a GeoTIFF in EPSG:4326 (~10 m pixels), as Sen1Floods11 chips are stored."""
    return rasters.write_tif(path, data, nodata, crs="EPSG:4326", transform=WGS84_TRANSFORM)


def make_flood_tree(root: Path, ids: list[str] = IDS, size: int = 32, seed: int = 0) -> Path:
    """Learnable water chips in two layouts.

    ``root/sen1floods11_v1.1/{data/{S2L1CHand,S1GRDHand,LabelHand},splits}`` (reference configs' paths) and
    ``root/flat/{S2Hand,S1Hand,LabelHand,splits}`` (the Sen1Floods11 release layout).
    """
    rng = np.random.default_rng(seed)
    base = root / "sen1floods11_v1.1"
    for sid in ids:
        water = np.zeros((size, size), dtype=np.int16)
        water[:, : size // 2] = 1
        water[0, :4] = -1  # label nodata
        s2 = rng.integers(500, 3000, (13, size, size)).astype(np.int16)
        s2[:, water == 1] //= 4
        s1 = rng.normal(-12, 3, (2, size, size)).astype(np.float32)
        s1[:, water == 1] -= 8
        s1[:, -1, :3] = np.nan  # S1 nodata
        for ref, flat, data, nodata in (
            ("S2L1CHand", "S2Hand", s2, None),
            ("S1GRDHand", "S1Hand", s1, np.nan),
            ("LabelHand", "LabelHand", water[None], -1),
        ):
            write_tif(base / "data" / ref / f"{sid}_{flat}.tif", data, nodata)
            write_tif(root / "flat" / flat / f"{sid}_{flat}.tif", data, nodata)
    splits = base / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    for name in ("train", "valid", "test"):
        for folder in (splits, root / "flat" / "splits"):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"flood_{name}_data.txt").write_text("\n".join(ids) + "\n")
    return base
