"""Real sample data shipped with terratim (see each folder's PROVENANCE.txt)."""

from __future__ import annotations

from pathlib import Path

TERRAMESH_SAMPLE = Path(__file__).parent / "terramesh"
TERRAMESH_SAMPLE_ID = "38D_378R_2_3"


def terramesh_file(modality: str) -> Path:
    """Path of the bundled TerraMesh sample for a modality (S2L2A, S2L1C, S2RGB, S1RTC, DEM, LULC, NDVI)."""
    path = TERRAMESH_SAMPLE / modality / f"{TERRAMESH_SAMPLE_ID}.tif"
    if not path.is_file():
        available = sorted(p.name for p in TERRAMESH_SAMPLE.iterdir() if p.is_dir())
        raise FileNotFoundError(f"no bundled sample for {modality!r}; available: {available}")
    return path
