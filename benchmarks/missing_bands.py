"""What filling absent bands with their pretraining mean does to generation, on the real TerraMesh samples.

    python benchmarks/missing_bands.py                     # tiny random-weight parity model + bundled sim_micro
    python benchmarks/missing_bands.py --size base --pretrained                  # the official model (downloads)
    python benchmarks/missing_bands.py --size base --ckpt TerraMind_v1_base.pt \
        --lulc-tokenizer TerraMind_Tokenizer_LULC.pt

Part 1, S2L2A -> LULC with ``terramind_v1_<size>_generate`` on the five 224 x 224 samples of
tests/data/terramesh_examples: all 12 bands, the six HLS-like bands (BLUE, GREEN, RED, NIR_NARROW, SWIR_1,
SWIR_2) with the other six filled (``fill_missing_bands="mean"``), and no information at all (every band at its
mean, the floor). Argmax decoding (temperature 0, one pass), so the differences come from the inputs alone.
Reported: agreement of the generated LULC token ids and of the decoded class maps with the 12-band run, and
pixel accuracy against the samples' LULC labels.

Part 2, the bundled ``terramind_sim_micro_generate`` (S1GRD + DEM -> LULC, pretrained on simulated data): the
samples' S1RTC (VV, VH) stands in for S1GRD, 64 x 64 crops (nine per sample); VV+VH against VH filled, VV filled
and both filled.

Without downloads the default weights are random (the test suite's regenerated parity weights, cached by the
tests under ~/.cache/terratim-fixtures or $TERRATIM_FIXTURE_CACHE) or trained on simulated data: they show the
mechanics and the size of the input change the model sees, not the degradation of the official model.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import warnings
from pathlib import Path

import numpy as np
import rasterio
import torch

import terratim
from terratim.generation.generate import decode_tokens

SAMPLES = Path(__file__).resolve().parents[1] / "tests" / "data" / "terramesh_examples"
HLS_BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def fixture_file(name: str) -> Path:
    root = Path(os.environ.get("TERRATIM_FIXTURE_CACHE") or Path.home() / ".cache" / "terratim-fixtures")
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the test suite once (it regenerates the parity weights) or "
                                "pass --ckpt / --lulc-tokenizer / --pretrained")
    return path


def read_stack(modality: str, names: list[str]) -> np.ndarray:
    """(N, C, H, W) float32 of one modality's samples."""
    arrays = []
    for name in names:
        with rasterio.open(SAMPLES / modality / name) as src:
            arrays.append(src.read().astype(np.float32))
    return np.stack(arrays)


def bands_of(modality: str, x: torch.Tensor, bands: list[str]) -> torch.Tensor:
    record = terratim.MODALITIES[modality]
    return x[:, [record.band_index(b) for b in bands]]


def at_mean(modality: str, x: torch.Tensor, bands: list[str]) -> torch.Tensor:
    """``x`` with ``bands`` set to their pretraining mean (what filling them amounts to)."""
    record = terratim.MODALITIES[modality]
    out = x.clone()
    for band in bands:
        out[:, record.band_index(band)] = record.mean[record.band_index(band)]
    return out


def class_maps(ids: torch.Tensor, tokenizer, patch: int = 16) -> torch.Tensor:
    logits = decode_tokens({"LULC": ids}, {"LULC": tokenizer}, patch_size=patch)["LULC"]
    return logits.argmax(1)  # (B, H, W)


def row(label: str, ids, maps, reference_ids, reference_maps, truth) -> str:
    tokens = float((ids == reference_ids).float().mean())
    cells = [label, f"{tokens:.3f}"]
    if maps is not None:
        same, correct = (maps == reference_maps).float().mean(), (maps == truth).float().mean()
        cells += [f"{float(same):.3f}", f"{float(correct):.3f}"]
    return "| " + " | ".join(cells) + " |"


def majority_accuracy(truth: torch.Tensor) -> float:
    """Pixel accuracy of always answering the most frequent label class (a floor for the accuracy column)."""
    return float(truth.flatten().bincount().max() / truth.numel())


def filled_distance(modality: str, x: torch.Tensor, bands: list[str]) -> float:
    """Mean |standardized value| of ``bands`` in ``x``: how far the real values sit from the fill (0)."""
    z = terratim.MODALITIES[modality].standardize(x)
    record = terratim.MODALITIES[modality]
    return float(z[:, [record.band_index(b) for b in bands]].abs().mean())


def part_s2(args: argparse.Namespace) -> None:
    names = sorted(p.name for p in (SAMPLES / "S2L2A").glob("*.tif"))
    raw = torch.from_numpy(read_stack("S2L2A", names))  # (5, 12, 224, 224)
    truth = torch.from_numpy(read_stack("LULC", names))[:, 0].long()  # (5, 224, 224)
    ckpt = None if args.pretrained else str(args.ckpt or fixture_file("tiny_v1_seed1001.pt"))
    common = dict(modalities=["S2L2A"], output_modalities=["LULC"], pretrained=args.pretrained, ckpt_path=ckpt,
                  standardize=True, temperature=0.0, build_tokenizers_for_outputs=False)
    name = f"terramind_v1_{args.size}_generate"
    full_model = terratim.build(name, **common).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning this script measures
        hls_model = terratim.build(name, bands={"S2L2A": HLS_BANDS}, fill_missing_bands="mean", **common).eval()
    tokenizer = None
    if not args.no_decode:
        given = args.lulc_tokenizer or (None if args.pretrained else fixture_file("tokenizer_lulc_seed1006.pt"))
        tokenizer_path = None if given is None else str(given)
        tokenizer = terratim.build("terramind_v1_tokenizer_lulc", pretrained=args.pretrained,
                                   ckpt_path=tokenizer_path).eval()
    missing = list(terratim.MODALITIES["S2L2A"].missing_bands(HLS_BANDS))
    runs = {
        "12 bands": (full_model, raw),
        "6 HLS-like bands, 6 filled": (hls_model, bands_of("S2L2A", raw, HLS_BANDS)),
        "0 bands (all 12 at mean)": (full_model, at_mean("S2L2A", raw, list(terratim.MODALITIES["S2L2A"].bands))),
    }
    ids, maps = {}, {}
    with torch.no_grad():
        for label, (model, x) in runs.items():
            ids[label] = model.generate_tokens({"S2L2A": x}, generator=torch.Generator().manual_seed(0))["LULC"]
            maps[label] = class_maps(ids[label], tokenizer) if tokenizer is not None else None
    weights = "official" if args.pretrained else ("--ckpt" if args.ckpt else "random (parity fixture)")
    print(f"\nPart 1: {name}, weights {weights}; S2L2A -> LULC on {len(names)} samples; filled: {', '.join(missing)}")
    header = "| input | token ids = 12-band run |"
    if tokenizer is not None:
        header += " class map = 12-band run | pixel accuracy vs LULC label |"
    print(header + "\n" + "|---" * header.count(" |") + "|")
    reference = "12 bands"
    for label in runs:
        print(row(label, ids[label], maps[label], ids[reference], maps[reference], truth))
    print(f"majority-class accuracy of the labels: {majority_accuracy(truth):.3f}; the filled bands sit at mean "
          f"|z| = {filled_distance('S2L2A', raw, missing):.2f} from their mean in these samples")


def part_sim_micro() -> None:
    names = sorted(p.name for p in (SAMPLES / "S1RTC").glob("*.tif"))
    s1 = torch.from_numpy(read_stack("S1RTC", names))  # (5, 2, 224, 224), stands in for S1GRD
    dem = torch.from_numpy(read_stack("DEM", names))
    truth = torch.from_numpy(read_stack("LULC", names))[:, 0].long()

    def crops(x: torch.Tensor) -> torch.Tensor:  # (5, C, 224, 224) -> (45, C, 64, 64)
        tiles = [x[..., i * 64:(i + 1) * 64, j * 64:(j + 1) * 64] for i in range(3) for j in range(3)]
        return torch.stack(tiles, 1).flatten(0, 1)

    s1, dem, truth = crops(s1), crops(dem), crops(truth[:, None])[:, 0]
    common = dict(modalities=["S1GRD", "DEM"], output_modalities=["LULC"], pretrained=True, standardize=True,
                  temperature=0.0)
    full_model = terratim.build("terramind_sim_micro_generate", **common).eval()
    tokenizer = terratim.build("terramind_sim_micro_tokenizer_lulc", pretrained=True).eval()
    runs = {"VV + VH": (full_model, {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for given in (["VV"], ["VH"]):
            model = terratim.build("terramind_sim_micro_generate", bands={"S1GRD": given}, fill_missing_bands="mean",
                                   **common).eval()
            runs[f"{given[0]} only, other filled"] = (model, {"S1GRD": bands_of("S1GRD", s1, given)})
    runs["no S1 (both at mean)"] = (full_model, {"S1GRD": at_mean("S1GRD", s1, ["VV", "VH"])})
    ids, maps = {}, {}
    with torch.no_grad():
        for label, (model, given_inputs) in runs.items():
            x = {"S1GRD": s1, "DEM": dem, **given_inputs}
            ids[label] = model.generate_tokens(x, generator=torch.Generator().manual_seed(0))["LULC"]
            maps[label] = class_maps(ids[label], tokenizer)
    print(f"\nPart 2: terramind_sim_micro_generate (simulated-data weights); S1RTC-as-S1GRD + DEM -> LULC on "
          f"{s1.shape[0]} crops of 64 x 64")
    print("| input | token ids = VV+VH run | class map = VV+VH run | pixel accuracy vs LULC label |\n|---|---|---|---|")
    for label in runs:
        print(row(label, ids[label], maps[label], ids["VV + VH"], maps["VV + VH"], truth))
    print(f"majority-class accuracy of the labels: {majority_accuracy(truth):.3f}; VV sits at mean |z| = "
          f"{filled_distance('S1GRD', s1, ['VV']):.2f}, VH at {filled_distance('S1GRD', s1, ['VH']):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", help="TerraMind size for part 1 (tiny, small, base, large)")
    parser.add_argument("--pretrained", action="store_true", help="official weights and LULC tokenizer (hub)")
    parser.add_argument("--ckpt", type=Path, help="TerraMind weights for part 1 (default: the random parity set)")
    parser.add_argument("--lulc-tokenizer", type=Path, help="LULC tokenizer weights to decode class maps")
    parser.add_argument("--no-decode", action="store_true", help="token ids only (no LULC tokenizer)")
    parser.add_argument("--skip-sim-micro", action="store_true", help="part 1 only")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"CPU: {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    part_s2(args)
    if not args.skip_sim_micro:
        part_sim_micro()


if __name__ == "__main__":
    main()
