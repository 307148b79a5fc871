"""Small GeoTIFF trees in the Sen1Floods11 layout the reference configs expect, written per test session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

REPO = Path(__file__).resolve().parents[2]
REFERENCE_CONFIGS = Path(__file__).parent / "reference_configs"
IDS = ["Ghana_1", "India_2", "Spain_3", "Mekong_4"]


def write_tif(path: Path, data: np.ndarray, nodata: float | None = None) -> None:
    """Write (C, H, W) data as a georeferenced GeoTIFF (EPSG:4326, ~10 m pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    profile = {
        "driver": "GTiff",
        "count": count,
        "height": height,
        "width": width,
        "dtype": data.dtype.name,
        "crs": "EPSG:4326",
        "transform": from_origin(10.0, 45.0, 8.98e-5, 8.98e-5),
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def make_flood_tree(root: Path, ids: list[str] = IDS, size: int = 32, seed: int = 0) -> Path:
    """``root/sen1floods11_v1.1/{data/{S2L1CHand,S1GRDHand,LabelHand},splits}``, learnable water labels."""
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
        write_tif(base / "data/S2L1CHand" / f"{sid}_S2Hand.tif", s2)
        write_tif(base / "data/S1GRDHand" / f"{sid}_S1Hand.tif", s1, nodata=np.nan)
        write_tif(base / "data/LabelHand" / f"{sid}_LabelHand.tif", water[None], nodata=-1)
    splits = base / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    for name in ("train", "valid", "test"):
        (splits / f"flood_{name}_data.txt").write_text("\n".join(ids) + "\n")
    return base


@pytest.fixture(scope="session")
def flood_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide tree; tests must not modify it."""
    root = tmp_path_factory.mktemp("flood")
    make_flood_tree(root)
    return root
