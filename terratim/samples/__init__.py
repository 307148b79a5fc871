"""Real sample data shipped with terratim (see each folder's PROVENANCE.txt and licence).

The files are package data: they are found next to this module, so they work from a clone, an editable install
and a wheel alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TERRAMESH_SAMPLE = Path(__file__).parent / "terramesh"
TERRAMESH_SAMPLE_ID = "38D_378R_2_3"

SEN1FLOODS11_SAMPLE = Path(__file__).parent / "sen1floods11"
# The chips shipped in SEN1FLOODS11_SAMPLE (128 x 128 crops, S1Hand + LabelHand each); see its PROVENANCE.txt.
SEN1FLOODS11_CHIPS = (
    "Ghana_97059",
    "India_900498",
    "Mekong_333434",
    "Nigeria_812045",
    "Pakistan_849790",
    "Somalia_699062",
    "Spain_6860600",
    "Spain_7370579",
    "Sri-Lanka_534068",
)


def terramesh_file(modality: str) -> Path:
    """Path of the bundled TerraMesh sample for a modality (S2L2A, S2L1C, S2RGB, S1RTC, DEM, LULC, NDVI)."""
    path = TERRAMESH_SAMPLE / modality / f"{TERRAMESH_SAMPLE_ID}.tif"
    if not path.is_file():
        available = sorted(p.name for p in TERRAMESH_SAMPLE.iterdir() if p.is_dir())
        raise FileNotFoundError(f"no bundled sample for {modality!r}; available: {available}")
    return path


@dataclass(frozen=True)
class FloodChip:
    """One bundled Sen1Floods11 chip: its id, Sentinel-1 file (VV, VH in dB) and hand label file."""

    name: str
    s1: Path
    label: Path


def sen1floods11_files(root: Path | None = None) -> list[FloodChip]:
    """Every chip of :data:`SEN1FLOODS11_CHIPS` under ``root`` (default :data:`SEN1FLOODS11_SAMPLE`); a missing
    file is an error, never a skipped chip."""
    root = SEN1FLOODS11_SAMPLE if root is None else Path(root)
    chips = [
        FloodChip(name, root / "S1Hand" / f"{name}_S1Hand.tif", root / "LabelHand" / f"{name}_LabelHand.tif")
        for name in SEN1FLOODS11_CHIPS
    ]
    missing = [str(path) for chip in chips for path in (chip.s1, chip.label) if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"the bundled Sen1Floods11 sample is incomplete: {len(missing)} file(s) missing, e.g. {missing[0]}; "
            "reinstall terratim (the chips are package data under terratim/samples/sen1floods11)"
        )
    return chips
