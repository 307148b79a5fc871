"""What bf16 and int8 change in a trained model's predictions: the table of docs/deploy.md ("int8 quantization").

    python benchmarks/deploy_accuracy.py                    # trains the quick task first (about 15 s on 2 cores)
    python benchmarks/deploy_accuracy.py --ckpt best.ckpt   # a checkpoint of that task instead

The quick fine-tuning task (``configs/quick_sen1floods11_sim_micro.yaml``: water from Sentinel-1, the bundled
simulated-data model, 20 epochs at tile 64) is trained with ``terratim fit``, exported with ``terratim export``
(fp32, and int8 with ``--quantize int8``), and run over one scene: the 9 Sentinel-1 chips bundled with the package
laid side by side (3 x 3, 384 x 384 pixels), through the tiling engine of ``terratim infer`` (tile 64, its default
overlap and margin). Four runs, each against PyTorch fp32: PyTorch fp32 itself, PyTorch under bf16 autocast
(``--precision bf16``), onnxruntime on the fp32 export and on the int8 export. The table gives the largest logit
difference, the share of pixels with the same class, and the mIoU against the hand labels of all 9 chips
(training chips included: it shows the change, not the model's quality). Results belong to the machine they run
on (CPU kernels, thread count); the script asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import torch
from common import device_line
from rasterio.transform import from_origin

from terratim.cli import main as cli_main
from terratim.deploy.onnx import onnx_predictor
from terratim.inference import adapters
from terratim.inference.engine import TilingConfig, infer_scene
from terratim.inference.heads import Head
from terratim.precision import with_precision
from terratim.samples import sen1floods11_files

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "quick_sen1floods11_sim_micro.yaml"
TILE = 64
GRID = 3  # chips per mosaic side
IGNORE = -1


def cli(args: list[str]) -> None:
    code = cli_main(args, report_errors=True)
    if code != 0:
        raise SystemExit(f"terratim {args[0]} failed (exit {code})")


def train(folder: Path) -> Path:
    """``terratim fit`` on the quick config, writing only under ``folder``; the best checkpoint."""
    cli(["fit", "-c", str(CONFIG), "--trainer.default_root_dir", str(folder),
         "--trainer.logger.init_args.save_dir", str(folder), "--trainer.enable_progress_bar", "false",
         "--data.init_args.root", str(sen1floods11_files()[0].s1.parent.parent)])
    found = sorted(folder.glob("**/checkpoints/best.ckpt"))
    if not found:
        raise SystemExit(f"terratim fit wrote no best.ckpt under {folder}")
    return found[0]


def write_mosaic(folder: Path) -> tuple[Path, np.ndarray]:
    """The bundled chips side by side: an S1GRD GeoTIFF (2 bands, dB) and the labels (-1 ignored, 0, 1)."""
    chips = sen1floods11_files()
    if len(chips) != GRID * GRID:
        raise SystemExit(f"expected {GRID * GRID} bundled chips, found {len(chips)}")
    s1_tiles, label_tiles = [], []
    for chip in chips:
        with rasterio.open(chip.s1) as src:
            s1_tiles.append(src.read().astype(np.float32))  # (2, H, W)
        with rasterio.open(chip.label) as src:
            label_tiles.append(src.read(1).astype(np.int64))  # (H, W)
    s1, labels = side_by_side(s1_tiles), side_by_side(label_tiles)
    path = folder / "mosaic_s1.tif"
    profile = {"driver": "GTiff", "width": s1.shape[2], "height": s1.shape[1], "count": s1.shape[0],
               "dtype": "float32", "crs": "EPSG:3857", "transform": from_origin(0.0, 0.0, 10.0, 10.0)}
    with rasterio.open(path, "w", **profile) as dst:  # a synthetic grid: the chips come from unrelated places
        dst.write(s1)
    return path, labels


def side_by_side(tiles: list[np.ndarray]) -> np.ndarray:
    """GRID x GRID tiles (..., H, W), row by row, as one (..., GRID H, GRID W) array."""
    rows = [np.concatenate(tiles[r * GRID:(r + 1) * GRID], axis=-1) for r in range(GRID)]
    return np.concatenate(rows, axis=-2)


def scene_logits(predictor, predict: Callable, scene: Path, out: Path) -> np.ndarray:
    """Blended logits (C, H, W) of ``predict`` over the scene, through the tiling engine of ``terratim infer``."""
    tiling = TilingConfig(TILE, overlap=32, delta=8, batch_size=16)
    head = Head(out, predictor.heads[0].channels)
    infer_scene(predict, {"S1GRD": scene}, [head], tiling, bands=predictor.bands, fill=predictor.fill)
    with rasterio.open(out) as dst:
        return dst.read()


def miou(classes: np.ndarray, labels: np.ndarray, valid: np.ndarray, num_classes: int = 2) -> float:
    """Mean IoU over the classes, on labelled pixels with a prediction."""
    keep = (labels != IGNORE) & valid
    predicted, truth = classes[keep], labels[keep]
    ious = []
    for c in range(num_classes):
        union = np.sum((predicted == c) | (truth == c))
        if union:
            ious.append(np.sum((predicted == c) & (truth == c)) / union)
    return float(np.mean(ious))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="a checkpoint of the quick task (default: train one now)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = args.ckpt if args.ckpt is not None else train(folder / "fit")
        fp32_file, int8_file = folder / "fp32.onnx", folder / "int8.onnx"
        cli(["export", "--ckpt", str(ckpt), "--out", str(fp32_file), "--tile", str(TILE)])
        cli(["export", "--ckpt", str(ckpt), "--out", str(int8_file), "--tile", str(TILE), "--quantize", "int8"])
        scene, labels = write_mosaic(folder)

        task, data = adapters.load_task_model(None, ckpt)
        runs = {}
        with torch.no_grad():
            torch_predictor = adapters.task_predictor(task, data, folder / "torch.tif")
            runs["PyTorch fp32"] = scene_logits(torch_predictor, torch_predictor.predict, scene, folder / "fp32.tif")
            bf16 = with_precision(torch_predictor.predict, "bf16", "cpu")
            runs["PyTorch bf16 (--precision bf16)"] = scene_logits(torch_predictor, bf16, scene, folder / "bf16.tif")
        for name, file in (("ONNX fp32", fp32_file), ("ONNX int8", int8_file)):
            predictor = onnx_predictor(file, folder / f"{file.stem}.tif")
            runs[name] = scene_logits(predictor, predictor.predict, scene, folder / f"{file.stem}_logits.tif")

        print(f"{device_line('cpu')}, torch {torch.__version__}; checkpoint {'given' if args.ckpt else 'trained now'}")
        print(f"scene: the {GRID * GRID} bundled Sen1Floods11 chips, {labels.shape[0]} x {labels.shape[1]}, "
              f"tile {TILE}; int8 file {fp32_file.stat().st_size / int8_file.stat().st_size:.1f}x smaller")
        print("| model | max \\|logit - fp32\\| | class agreement with fp32 | mIoU against the labels |")
        print("|---|---|---|---|")
        reference = runs["PyTorch fp32"]
        valid = ~np.isnan(reference).any(axis=0)  # nodata pixels of the chips have no prediction
        reference_classes = reference.argmax(axis=0)[valid]
        for name, logits in runs.items():
            if not np.array_equal(np.isnan(logits).any(axis=0), ~valid):
                raise SystemExit(f"{name}: its nodata pixels differ from PyTorch fp32's")
            classes = logits.argmax(axis=0)
            print(f"| {name} | {np.abs(logits[:, valid] - reference[:, valid]).max():.2g} | "
                  f"{(classes[valid] == reference_classes).mean():.2%} | {miou(classes, labels, valid):.4f} |")
        print(f"({valid.mean():.1%} of the pixels have data; the others are nodata in the chips)")


if __name__ == "__main__":
    main()
