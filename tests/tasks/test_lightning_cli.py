"""The real ``terratim fit|validate|test|predict`` entry point on small GeoTIFFs (tiny, random weights)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from terratim.cli import main
from terratim.tasks.cli import build_cli

from finetune_data import IDS, REFERENCE_CONFIGS, REPO

FAST = ["--trainer.fast_dev_run=true", "--trainer.accelerator=cpu", "--data.init_args.num_workers=0"]
OFFLINE = ["--model.init_args.model_args.backbone_pretrained=false"]


@pytest.mark.parametrize(
    ("config", "backbone"),
    [
        ("terramind_v1_tiny_sen1floods11.yaml", None),
        ("terramind_v1_base_sen1floods11.yaml", "terramind_v1_tiny"),
        ("terramind_v1_base_tim_lulc_sen1floods11.yaml", "terramind_v1_tiny_tim"),
    ],
)
def test_reference_config_fit(flood_tree: Path, monkeypatch, config: str, backbone: str | None):
    """The published configs, with only class paths renamed, run one fast_dev_run on data in their layout."""
    text = (REFERENCE_CONFIGS / config).read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert "terratorch" not in body and "terratim.datamodules.GenericMultiModalDataModule" in body
    monkeypatch.chdir(flood_tree)  # the configs' relative paths sen1floods11_v1.1/... resolve here
    overrides = [f"--model.init_args.model_args.backbone={backbone}"] if backbone else []
    cli = build_cli(["fit", "-c", str(REFERENCE_CONFIGS / config), *FAST, *OFFLINE, *overrides])
    metrics = cli.trainer.callback_metrics
    assert math.isfinite(float(metrics["train/loss_epoch"])) and math.isfinite(float(metrics["val/loss"]))
    assert 0.0 <= float(metrics["val/mIoU"]) <= 1.0
    assert "val/IoU_Flood" in metrics  # per-class IoU named by class_names
    dm = cli.datamodule
    assert dm.no_data_replace == 0 and dm.stats["S1GRD"][0].tolist() == pytest.approx([-12.599, -20.293])
    if "tiny_sen1" in config:  # freeze_backbone: true
        assert not any(p.requires_grad for p in cli.model.model.backbone.parameters())


def _own_config(name: str, root: Path, out: Path) -> list[str]:
    return [
        "-c",
        str(REPO / "configs" / name),
        f"--data.init_args.root={root / 'flat'}",
        "--data.init_args.batch_size=2",
        "--data.init_args.num_workers=0",
        "--trainer.accelerator=cpu",
        "--trainer.precision=32",
        f"--trainer.default_root_dir={out}",
        f"--trainer.logger.init_args.save_dir={out}",
        *OFFLINE,
    ]


OWN = ["terramind_v1_tiny_sen1floods11.yaml", "terramind_v1_tiny_tim_lulc_sen1floods11.yaml"]


@pytest.mark.parametrize("config", OWN)
def test_own_config_fit_validate_test_predict(flood_tree: Path, tmp_path: Path, config: str, capsys):
    """fit writes a checkpoint; validate/test reload it; predict writes georeferenced GeoTIFFs and panels."""
    args = _own_config(config, flood_tree, tmp_path)
    limits = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
    assert main(["fit", *args, *limits]) == 0
    ckpt = next(tmp_path.rglob("checkpoints/last.ckpt"))
    assert (ckpt.parent / "best.ckpt").is_file()
    metrics_csv = next(tmp_path.rglob("metrics.csv")).read_text()
    assert "val/mIoU" in metrics_csv and "lr-AdamW" in metrics_csv  # LearningRateMonitor ran
    for command in ("validate", "test"):
        cli = build_cli([command, *args, f"--ckpt_path={ckpt}", "--trainer.limit_val_batches=1"])
        split = "val" if command == "validate" else "test"
        assert math.isfinite(float(cli.trainer.callback_metrics[f"{split}/loss"]))
    out = tmp_path / "pred"
    predict = ["predict", *args, f"--ckpt_path={ckpt}", f"--predict_output_dir={out}"]
    assert main([*predict, "--predict_png=true"]) == 0
    for sid in IDS:
        with (
            rasterio.open(out / f"{sid}_pred.tif") as pred,
            rasterio.open(flood_tree / "flat" / "S2Hand" / f"{sid}_S2Hand.tif") as src,
        ):
            assert pred.crs == src.crs and pred.transform == src.transform and pred.shape == src.shape
            assert pred.nodata == 255 and pred.dtypes[0] == "uint8"
            assert set(np.unique(pred.read(1))) <= {0, 1}
        assert (out / f"{sid}_panel.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(predict, report_errors=True) == 2  # no silent overwrite: one line, exit status 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"terratim predict: error: {out} already holds {len(IDS)} of this run's outputs, e.g. ")
    assert line.endswith("; pass overwrite (CLI: --predict_overwrite true) or choose another output folder")


def test_config_error_is_one_line_and_status_2(flood_tree: Path, tmp_path: Path, capsys, monkeypatch):
    """A value a configured class rejects: one line naming it, status 2; Python callers get the ValueError."""
    monkeypatch.delenv("TERRATIM_DEBUG", raising=False)
    args = ["fit", *_own_config("terramind_v1_tiny_sen1floods11.yaml", flood_tree, tmp_path),
            "--model.init_args.class_names=[a,b,c]"]
    assert main(args, report_errors=True) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("Seed set")]
    assert lines == ["terratim fit: error: config: 3 class_names for 2 classes"]
    with pytest.raises(ValueError, match="3 class_names for 2 classes"):
        main(args)


def test_ddp_fit_two_processes(flood_tree: Path, tmp_path: Path):
    """fit on Lightning's DDP with 2 CPU processes (gloo) writes one checkpoint and validation metrics."""
    args = _own_config("terramind_v1_tiny_sen1floods11.yaml", flood_tree, tmp_path)
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.max_epochs=1"]
    limits = ["--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0"]
    command = [sys.executable, "-m", "terratim.cli", "fit", *args, *ddp, *limits]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # Own process group, so that a hang cannot leave the rank-1 child behind.
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, output[-3000:]
    assert "distributed_backend=gloo" in output and "All distributed processes registered" in output
    assert len(list(tmp_path.rglob("checkpoints/last.ckpt"))) == 1
    metrics = next(tmp_path.rglob("metrics.csv")).read_text()
    assert "val/loss" in metrics


REGRESSION = """
seed_everything: 0
trainer: {{accelerator: cpu, max_epochs: 1, limit_train_batches: 1, limit_val_batches: 1, logger: false,
          enable_checkpointing: false, default_root_dir: {out}}}
data:
  class_path: terratim.datamodules.GenericMultiModalDataModule
  init_args:
    task: regression
    modalities: [S1GRD]
    batch_size: 2
    image_grep: {{S1GRD: "*_S1Hand.tif"}}
    label_grep: "*_LabelHand.tif"
    train_data_root: {{S1GRD: {root}/S1Hand}}
    val_data_root: {{S1GRD: {root}/S1Hand}}
    predict_data_root: {{S1GRD: {root}/S1Hand}}
    train_label_data_root: {root}/LabelHand
    val_label_data_root: {root}/LabelHand
    modality_dropout: 0.5
model:
  class_path: terratim.tasks.PixelwiseRegressionTask
  init_args:
    loss: rmse
    model_args:
      backbone: terramind_v1_tiny
      backbone_modalities: [S1GRD]
      necks: [{{name: SelectIndices, indices: [11]}}, {{name: ReshapeTokensToImage}}]
      decoder: FCNDecoder
      decoder_channels: 16
"""


def test_regression_fit_and_predict_float_maps(flood_tree: Path, tmp_path: Path):
    config = tmp_path / "regression.yaml"
    config.write_text(REGRESSION.format(root=flood_tree / "flat", out=tmp_path))
    cli = build_cli(["fit", "-c", str(config)])
    assert math.isfinite(float(cli.trainer.callback_metrics["val/RMSE"]))  # label nodata (NaN) left out
    assert main(["predict", "-c", str(config), f"--predict_output_dir={tmp_path / 'pred'}"]) == 0
    with rasterio.open(tmp_path / "pred" / f"{IDS[0]}_pred.tif") as pred:
        data = pred.read(1)
        assert pred.dtypes[0] == "float32" and pred.crs.to_epsg() == 4326
        assert np.isnan(data[-1, :3]).all() and np.isfinite(data[:-1]).all()  # S1 nodata pixels -> NaN


CLASSIFICATION = """
trainer: {{accelerator: cpu, max_epochs: 1, limit_train_batches: 1, limit_val_batches: 1, logger: false,
          enable_checkpointing: false, default_root_dir: {out}}}
data:
  class_path: terratim.datamodules.GenericMultiModalDataModule
  init_args:
    task: classification
    modalities: [S1GRD]
    batch_size: 2
    image_grep: {{S1GRD: "*_S1Hand.tif"}}
    train_data_root: {{S1GRD: {root}/S1Hand}}
    val_data_root: {{S1GRD: {root}/S1Hand}}
    predict_data_root: {{S1GRD: {root}/S1Hand}}
    label_csv: {out}/labels.csv
    multi_label: true
    num_classes: 4
model:
  class_path: terratim.tasks.ClassificationTask
  init_args:
    multi_label: true
    class_names: [water, forest, urban, crops]
    model_args: {{backbone: terramind_v1_tiny, backbone_modalities: [S1GRD], num_classes: 4, head_dropout: 0.1}}
"""


def test_multi_label_scene_classification_fit_and_predict(flood_tree: Path, tmp_path: Path):
    (tmp_path / "labels.csv").write_text("sample,label\nGhana_1,0 2\nIndia_2,1\nSpain_3,0 1 3\nMekong_4,3\n")
    config = tmp_path / "classification.yaml"
    config.write_text(CLASSIFICATION.format(root=flood_tree / "flat", out=tmp_path))
    cli = build_cli(["fit", "-c", str(config)])
    assert 0.0 <= float(cli.trainer.callback_metrics["val/mAP"]) <= 1.0
    assert main(["predict", "-c", str(config), f"--predict_output_dir={tmp_path / 'pred'}"]) == 0
    rows = (tmp_path / "pred" / "predictions_rank0.csv").read_text().splitlines()
    assert rows[0] == "sample,prediction,p0,p1,p2,p3" and len(rows) == 1 + len(IDS)
    again = ["predict", "-c", str(config), f"--predict_output_dir={tmp_path / 'pred'}", "--predict_overwrite=true"]
    assert main(again) == 0
    assert len((tmp_path / "pred" / "predictions_rank0.csv").read_text().splitlines()) == 1 + len(IDS)


def test_precision_option_maps_to_the_trainer_precision(monkeypatch, capsys):
    from terratim import precision
    from terratim.tasks.cli import precision_to_trainer

    args = ["predict", "-c", "x.yaml", "--precision", "bf16", "--ckpt_path", "m.ckpt"]
    assert precision_to_trainer(args) == ["predict", "-c", "x.yaml", "--trainer.precision=bf16-mixed",
                                          "--ckpt_path", "m.ckpt"]
    assert precision_to_trainer(["test", "--precision=fp32"]) == ["test", "--trainer.precision=32-true"]
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert precision_to_trainer(["validate", "--precision", "auto"]) == ["validate", "--trainer.precision=32-true"]
    assert "precision auto -> fp32" in capsys.readouterr().out
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert precision_to_trainer(["predict", "--precision", "auto"]) == ["predict", "--trainer.precision=bf16-mixed"]
    with pytest.raises(ValueError, match="--precision must be one of fp32, bf16, auto"):
        precision_to_trainer(["predict", "--precision", "fp16"])
    with pytest.raises(ValueError, match="fit takes --trainer.precision"):
        precision_to_trainer(["fit", "--precision", "bf16"])
