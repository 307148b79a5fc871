"""TerraTorch's own TerraMind test cases, run as its tests/test_finetune.py runs them.

TerraTorch tests TerraMind with ``tests/resources/configs/manufactured-finetune_terramind_v1_{small,base}.yaml``
on ``tests/resources/inputs``: ``fit``, ``validate`` and ``test`` with the base config, ``fit`` then ``predict``
from ``tests/all_ecos_random/version_0/checkpoints/epoch=0.ckpt`` with the small one, relative paths from the
folder that holds ``tests/``. Here: the configs with class paths renamed (reference_configs/), the backbone
overridden to ``terramind_v1_tiny`` (random weights, for CI time), and inputs generated in the layout, band counts,
dtypes, sizes and nodata of TerraTorch's files (10-band float32 224 x 224 chips whose configs declare 11 bands).
"""

from __future__ import annotations

import importlib.util
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from terratim.cli import main
from terratim.tasks.cli import build_cli

import rasters
from finetune_data import REFERENCE_CONFIGS

SIZE, BANDS, NODATA = 224, 10, -9999.0
UTM14 = "EPSG:32614"
TRANSFORM_30M = Affine(30.0, 0.0, 600000.0, 0.0, -30.0, 4500000.0)
TINY = ["--model.init_args.model_args.backbone=terramind_v1_tiny"]
CKPT = "tests/all_ecos_random/version_0/checkpoints/epoch=0.ckpt"


def config(size: str) -> str:
    return f"tests/resources/configs/manufactured-finetune_terramind_v1_{size}.yaml"


def write_inputs(folder: Path, seed: int = 0) -> None:
    """TerraTorch's tests/resources/inputs: ``{regression,segmentation}_test_<i>_input.tif`` (10 float32 bands,
    nodata -9999, UTM 14N at 30 m), float32 regression labels with nodata, int64 segmentation labels without
    georeferencing, and ``_label_seg.tif`` for two of the four segmentation chips only."""
    rng = np.random.default_rng(seed)
    chips = [f"regression_test_{i}" for i in range(2)] + [f"segmentation_test_{i}" for i in range(4)]
    for chip in chips:
        image = rng.normal(1500.0, 900.0, (BANDS, SIZE, SIZE)).astype(np.float32)
        image[:, :3, :3] = NODATA
        rasters.write_tif(folder / f"{chip}_input.tif", image, NODATA, crs=UTM14, transform=TRANSFORM_30M)
    for chip in chips[:2]:
        values = rng.uniform(-1.0, 23.0, (1, SIZE, SIZE)).astype(np.float32)
        values[0, -2:, -2:] = NODATA
        rasters.write_tif(folder / f"{chip}_label.tif", values, NODATA, crs=UTM14, transform=TRANSFORM_30M)
    for i, chip in enumerate(chips[2:]):
        classes = (rng.random((1, SIZE, SIZE)) < 0.4).astype(np.int64)
        for suffix in ("_label.tif", "_label_seg.tif") if i < 2 else ("_label.tif",):
            rasters.write_tif(folder / f"{chip}{suffix}", classes, None, crs=None, transform=Affine.identity())


@pytest.fixture(scope="module")
def terratorch_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("terratorch")
    configs = root / "tests" / "resources" / "configs"
    configs.mkdir(parents=True)
    for size in ("small", "base"):
        name = f"manufactured-finetune_terramind_v1_{size}.yaml"
        shutil.copy(REFERENCE_CONFIGS / name, configs / name)
    write_inputs(root / "tests" / "resources" / "inputs")
    return root


@pytest.fixture
def in_tree(terratorch_tree: Path, monkeypatch: pytest.MonkeyPatch):
    """cwd = the folder holding tests/; the run folder is removed afterwards, as TerraTorch's fixture does."""
    monkeypatch.chdir(terratorch_tree)
    yield terratorch_tree
    shutil.rmtree(terratorch_tree / "tests" / "all_ecos_random", ignore_errors=True)


def test_generated_inputs_have_terratorchs_file_shapes(terratorch_tree: Path):
    inputs = terratorch_tree / "tests" / "resources" / "inputs"
    assert len(list(inputs.glob("*input.tif"))) == 6 and len(list(inputs.glob("*label_seg.tif"))) == 2
    with rasterio.open(inputs / "segmentation_test_0_input.tif") as src:
        assert (src.count, src.dtypes[0], src.shape, src.nodata) == (10, "float32", (224, 224), NODATA)
    with rasterio.open(inputs / "segmentation_test_0_label_seg.tif") as src:
        assert (src.count, src.dtypes[0], src.crs) == (1, "int64", None)
    text = (terratorch_tree / config("small")).read_text()
    assert "terratorch" not in text.split("\n", 1)[1] and "- 0\n        - BLUE" in text  # 11 names, 10 bands


@pytest.mark.parametrize("case", ["fit", "test", "validate"])
def test_base_config_fit_test_validate(in_tree: Path, case: str):
    """test_finetune_multiple_backbones[terramind_v1_base-<case>]: regression, loss {rmse: 0.5, mse: 0.5}."""
    cli = build_cli([case, "-c", config("base"), *TINY])
    metrics = cli.trainer.callback_metrics
    split = "test" if case == "test" else "val"
    assert math.isfinite(float(metrics[f"{split}/loss"])) and math.isfinite(float(metrics[f"{split}/RMSE"]))
    task = cli.model
    assert type(task).__name__ == "PixelwiseRegressionTask" and task.tiled_parameters is not None
    assert task.tiled_parameters.h_crop == 56 and task.tiled_parameters.margin == 4
    assert cli.datamodule.bands == {"S2L2A": ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]}
    if case == "fit":
        assert (in_tree / CKPT).is_file()  # TerraTorch's default checkpoint: {epoch}, best val/loss
        assert list((in_tree / "tests" / "all_ecos_random" / "version_0").glob("events.out.tfevents.*"))
        assert math.isfinite(float(metrics["train/loss_epoch"]))


def test_small_config_fit_then_predict(in_tree: Path, tmp_path: Path):
    """test_finetune_multiple_backbones_with_prediction[terramind_v1_small]: segmentation, loss [ce, lovasz],
    frozen backbone; predict from the default checkpoint on the whole input folder."""
    cli = build_cli(["fit", "-c", config("small"), *TINY])
    task = cli.model
    assert type(task).__name__ == "SemanticSegmentationTask" and set(task.criterion.losses) == {"ce", "lovasz"}
    assert len(cli.datamodule.datasets["train"]) == 2  # only two chips have a *label_seg.tif
    backbone = [p for p in task.model.backbone.parameters()]
    assert not any(p.requires_grad for p in backbone)  # freeze_backbone: true
    stepped = cli.trainer.optimizers[0].state  # AdamW holds state only for parameters it updated
    assert not any(p in stepped for p in backbone) and any(p in stepped for p in task.model.decoder.parameters())
    assert math.isfinite(float(cli.trainer.callback_metrics["val/loss"]))
    assert (in_tree / CKPT).is_file()

    out = tmp_path / "predictions"  # TerraTorch writes to /tmp
    argv = ["predict", "-c", config("small"), *TINY, "--ckpt_path", CKPT, "--predict_output_dir", str(out),
            "--data.init_args.predict_data_root", "tests/resources/inputs"]
    assert main(argv) == 0
    written = sorted(p.name for p in out.glob("*_pred.tif"))
    assert len(written) == 6 and "regression_test_0__pred.tif" in written  # every *input.tif, no labels needed
    with rasterio.open(out / "segmentation_test_0__pred.tif") as src:
        classes = src.read(1)
        assert src.shape == (224, 224) and src.crs.to_epsg() == 32614
    assert set(np.unique(classes).tolist()) <= {0, 1, 255}  # 255: the nodata corner


def test_base_config_tiled_validation_and_testing(in_tree: Path):
    """TerraTorch's flags turn the config's tiled_inference_parameters on for validation and testing."""
    flags = ["--model.init_args.tiled_inference_on_validation=true",
             "--model.init_args.tiled_inference_on_testing=true"]
    cli = build_cli(["validate", "-c", config("base"), *TINY, *flags, "--trainer.limit_val_batches=1"])
    assert cli.model.uses_tiles("val") and math.isfinite(float(cli.trainer.callback_metrics["val/loss"]))


def test_missing_tensorboard_is_one_line_naming_the_package(in_tree: Path, monkeypatch: pytest.MonkeyPatch):
    real = importlib.util.find_spec
    hidden = ("tensorboard", "tensorboardX")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))
    with pytest.raises(ImportError, match=r"^the config's TensorBoardLogger needs the tensorboard package: "
                                          r"pip install tensorboard$"):
        main(["fit", "-c", config("small"), *TINY])
    assert main(["fit", "-c", config("small"), *TINY], report_errors=True) == 2


def test_short_class_names_resolve_as_in_terratorch(in_tree: Path):
    """RichProgressBar, LearningRateMonitor, EarlyStopping, TensorBoardLogger and ReduceLROnPlateau by name."""
    cli = build_cli(["validate", "-c", config("small"), *TINY, "--trainer.limit_val_batches=1"])
    names = {type(cb).__name__ for cb in cli.trainer.callbacks}
    assert {"RichProgressBar", "LearningRateMonitor", "EarlyStopping"} <= names
    assert type(cli.trainer.logger).__name__ == "TensorBoardLogger"
    assert cli.config["validate"]["lr_scheduler"]["class_path"].endswith("ReduceLROnPlateau")
    assert torch.is_tensor(cli.trainer.callback_metrics["val/loss"])
