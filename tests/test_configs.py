"""The configs in ``configs/`` on the Sen1Floods11 chips shipped in the package, offline.

``quick_sen1floods11_sim_micro.yaml`` must run exactly as shipped; the official-weights configs must run with the
overrides that docs/finetuning.md ("The shipped configs") lists, a local checkpoint standing in for the download.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

import terratim.samples as samples
from terratim.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def outputs_in(folder: Path) -> list[str]:
    """Overrides that only move the run's files (checkpoints, CSV log) into ``folder``."""
    return [f"--trainer.default_root_dir={folder}", f"--trainer.logger.init_args.save_dir={folder}"]


def logged(folder: Path, key: str) -> list[float]:
    (metrics,) = folder.rglob("metrics.csv")
    with metrics.open() as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def test_quick_config_fits_as_shipped_on_the_packaged_chips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the config's data root is relative to the repository root
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = CONFIGS / "quick_sen1floods11_sim_micro.yaml"
    assert main(["fit", "-c", str(config), "--trainer.max_steps=2", *outputs_in(tmp_path)]) == 0
    assert {p.name for p in tmp_path.rglob("*.ckpt")} == {"best.ckpt", "last.ckpt"}
    losses, mious = logged(tmp_path, "train/loss_step"), logged(tmp_path, "val/mIoU")
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert mious and all(0.0 <= x <= 1.0 for x in mious)
    # the checkpoint alone is enough for scene inference: task, modalities and statistics travel inside it
    (best,) = tmp_path.rglob("best.ckpt")
    chip = sorted((samples.SEN1FLOODS11_SAMPLE / "S1Hand").glob("*.tif"))[0]
    out = tmp_path / "pred.tif"
    argv = ["infer", "--ckpt", str(best), "--input", f"S1GRD={chip}", "--out", str(out), "--chip", "64", "--quiet"]
    assert main(argv) == 0 and out.is_file()


def test_official_tiny_config_fits_on_the_packaged_chips_with_the_documented_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    documented = [
        f"--data.init_args.root={samples.SEN1FLOODS11_SAMPLE}",
        "--data.init_args.modalities=[S1GRD]",
        "--model.init_args.model_args.backbone_modalities=[S1GRD]",
        f"--model.init_args.model_args.backbone_ckpt_path={tiny_checkpoint}",  # official layout, random values
    ]
    config = CONFIGS / "terramind_v1_tiny_sen1floods11.yaml"
    args = ["fit", "-c", str(config), *documented, "--trainer.max_steps=1", "--trainer.log_every_n_steps=1"]
    assert main([*args, *outputs_in(tmp_path)]) == 0
    assert (losses := logged(tmp_path, "train/loss_step")) and all(math.isfinite(x) for x in losses)
