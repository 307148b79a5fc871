"""All five published TerraMind fine-tuning configs (IBM/terramind ``configs/``, only ``terratorch.`` renamed to
``terratim.``) run ``fit`` and ``test`` (and ``predict``, for the two Sen1Floods11 backbones not repeated) on small
data in each dataset's real on-disk layout, with the backbone overridden to the tiny size (random weights) and one
batch per stage."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml

from terratim.tasks.cli import build_cli

from finetune_data import REFERENCE_CONFIGS
from rasters import write_tif

SIZE = 32  # chip side: two 16-pixel patches
BURN_IDS = [f"subsetted_512x512_HLS.S30.T10SDH.2020{day}.v1.4" for day in (248, 253, 258, 263)]
EMPTY_BURN = BURN_IDS[1]  # its mask has no valid pixel
CROP_IDS = {"training": ["chip_000_000", "chip_000_001", "chip_000_002"],
            "validation": ["chip_001_000", "chip_001_001"]}
EMPTY_CROP = "chip_000_001"  # its mask is all 0 (no data), so -1 everywhere after reduce_zero_label
PIXEL_NODATA = (slice(None), 0, slice(0, 5))  # NaN in every band of these pixels


def make_burn_scars(root: Path, seed: int = 0) -> Path:
    """HLS Burn Scars: ``data/<id>_merged.tif`` (6 float32 reflectance bands, NaN nodata), ``data/<id>.mask.tif``
    (0 unburnt, 1 burnt, -1 nodata) and ``splits/{train,val,test}.txt``."""
    rng = np.random.default_rng(seed)
    base = root / "hls_burn_scars"
    for sid in BURN_IDS:
        burnt = np.zeros((SIZE, SIZE), dtype=np.int16)
        burnt[SIZE // 2 :] = 1
        image = rng.uniform(0.02, 0.3, (6, SIZE, SIZE)).astype(np.float32)
        image[3:, burnt == 1] *= 0.3  # burnt: dark NIR and SWIR
        image[PIXEL_NODATA] = np.nan
        mask = np.full_like(burnt, -1) if sid == EMPTY_BURN else burnt
        write_tif(base / "data" / f"{sid}_merged.tif", image, nodata=np.nan)
        write_tif(base / "data" / f"{sid}.mask.tif", mask[None], nodata=-1)
    (base / "splits").mkdir(parents=True)
    for split, ids in (("train", BURN_IDS), ("val", BURN_IDS[2:]), ("test", BURN_IDS[:1] + BURN_IDS[3:])):
        (base / "splits" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return base


def make_crop(root: Path, seed: int = 0) -> Path:
    """Multi-temporal crop classification: ``{training,validation}_chips/<chip>_merged.tif`` (18 bands = 6 HLS
    bands x 3 dates, date by date, NaN nodata), ``<chip>.mask.tif`` (1..13, 0 no data) and
    ``{training,validation}_data.txt``."""
    rng = np.random.default_rng(seed)
    base = root / "multi-temporal-crop-classification-subset"
    for folder, ids in CROP_IDS.items():
        for sid in ids:
            image = rng.integers(200, 4000, (18, SIZE, SIZE)).astype(np.float32)
            image[PIXEL_NODATA] = np.nan
            mask = rng.integers(1, 14, (1, SIZE, SIZE)).astype(np.uint8)
            if sid == EMPTY_CROP:
                mask[:] = 0
            write_tif(base / f"{folder}_chips" / f"{sid}_merged.tif", image, nodata=np.nan)
            write_tif(base / f"{folder}_chips" / f"{sid}.mask.tif", mask)
        (base / f"{folder}_data.txt").write_text("\n".join(ids) + "\n")
    return base


@pytest.fixture(scope="module")
def published_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("published")
    make_burn_scars(root)
    make_crop(root)
    return root


FLOOD_PREDICT = ('--data.init_args.predict_data_root={"S2L1C": "sen1floods11_v1.1/data/S2L1CHand", '
                 '"S1GRD": "sen1floods11_v1.1/data/S1GRDHand"}')
CONFIGS = {  # config -> (tiny backbone, data tree fixture, predict data override, predicted sample ids)
    "terramind_v1_tiny_sen1floods11.yaml": (None, "flood_tree", FLOOD_PREDICT, ["Ghana_1"]),
    "terramind_v1_base_sen1floods11.yaml": ("terramind_v1_tiny", "flood_tree", None, []),  # predict: as the tiny one
    "terramind_v1_base_tim_lulc_sen1floods11.yaml": ("terramind_v1_tiny_tim", "flood_tree", None, []),
    "terramind_v1_base_burnscars.yaml": (
        "terramind_v1_tiny", "published_data", "--data.init_args.predict_data_root=hls_burn_scars/data", BURN_IDS),
    "terramind_v1_base_multitemporal_crop.yaml": ("terramind_v1_tiny", "published_data", None, CROP_IDS["validation"]),
}


def _args(config: str, out: Path) -> list[str]:
    backbone = CONFIGS[config][0]
    return ["-c", str(REFERENCE_CONFIGS / config), "--trainer.accelerator=cpu", "--data.init_args.num_workers=0",
            f"--trainer.default_root_dir={out}", "--model.init_args.model_args.backbone_pretrained=false",
            *([f"--model.init_args.model_args.backbone={backbone}"] if backbone else [])]


def test_published_configs_differ_from_terramind_only_by_prefix():
    """The two new copies are the published files with ``terratorch.`` renamed (the header comment aside)."""
    for name in ("terramind_v1_base_burnscars.yaml", "terramind_v1_base_multitemporal_crop.yaml"):
        text = (REFERENCE_CONFIGS / name).read_text()
        assert "terratorch." not in text.split("\n", 1)[1]  # (a documentation URL keeps the name)
        assert text.splitlines()[0].startswith("# Copy of IBM/terramind configs/")
    crop = (REFERENCE_CONFIGS / "terramind_v1_base_multitemporal_crop.yaml").read_text()
    assert "terratim.datasets.transforms.FlattenTemporalIntoChannels" in crop and "backbone_use_temporal: true" in crop
    burn = (REFERENCE_CONFIGS / "terramind_v1_base_burnscars.yaml").read_text()
    assert "class_path: GenericNonGeoSegmentationDataModule" in burn  # a short class name


@pytest.mark.parametrize("config", list(CONFIGS))
def test_published_config_fit_test_predict(config: str, tmp_path: Path, monkeypatch, request):
    _, tree, predict_override, predicted = CONFIGS[config]
    data_root = request.getfixturevalue(tree)
    monkeypatch.chdir(data_root)  # the configs' relative data paths resolve here; outputs go to tmp_path
    args = _args(config, tmp_path)
    one_batch = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]
    fit = build_cli(["fit", *args, *one_batch])
    metrics = fit.trainer.callback_metrics
    assert math.isfinite(float(metrics["train/loss_epoch"])) and math.isfinite(float(metrics["val/loss"]))
    assert 0.0 <= float(metrics["val/mIoU"]) <= 1.0
    (ckpt,) = tmp_path.rglob("*.ckpt")

    test = build_cli(["test", *args, f"--ckpt_path={ckpt}", "--trainer.limit_test_batches=1"])
    assert math.isfinite(float(test.trainer.callback_metrics["test/loss"]))

    if not predicted:
        return
    out = tmp_path / "predictions"
    overrides = [predict_override] if predict_override else []
    build_cli(["predict", *args, *overrides, f"--ckpt_path={ckpt}", f"--predict_output_dir={out}"])
    num_classes = int(fit.model.num_classes)
    for sid in predicted:
        with rasterio.open(out / f"{sid}_pred.tif") as pred:
            assert pred.shape == (SIZE, SIZE)
            classes = set(np.unique(pred.read(1)).tolist())
            assert classes <= set(range(num_classes)) | {255}  # 255: no valid input pixel


def _filled(dm, ndim: int) -> torch.Tensor:
    """What a NaN pixel becomes: ``no_data_replace`` (0 raw) standardized, per band, shaped for broadcasting."""
    fill = (0.0 - torch.as_tensor(dm.means, dtype=torch.float64)) / torch.as_tensor(dm.stds, dtype=torch.float64)
    return fill.view(-1, *([1] * (ndim - 1)))


def test_burn_scars_batches_nodata_and_empty_mask(published_data: Path, tmp_path: Path, monkeypatch):
    """NaN band pixels reach the model as ``no_data_replace`` (0) standardized and are marked invalid; the chip whose
    mask has no valid pixel trains with the others, and alone gives a zero loss with finite gradients."""
    monkeypatch.chdir(published_data)
    cli = build_cli(["fit", *_args("terramind_v1_base_burnscars.yaml", tmp_path), "--trainer.fast_dev_run=true"])
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))
    dm = cli.datamodule
    batch = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    image = batch["image"]
    assert isinstance(image, torch.Tensor) and image.shape == (2, 6, SIZE, SIZE) and torch.isfinite(image).all()
    nodata = image[:, :, 0, :5].double()  # (B, 6, 5)
    torch.testing.assert_close(nodata, _filled(dm, 2).expand_as(nodata), rtol=1e-5, atol=1e-5)
    valid = batch["valid"]["image"]
    assert not valid[:, 0, :5].any() and valid[:, 1:].all() and valid[:, 0, 5:].all()
    train = dm.datasets["train"]
    assert [s.sample_id for s in train.samples] == sorted(BURN_IDS)
    empty = train[[s.sample_id for s in train.samples].index(EMPTY_BURN)]["mask"]
    assert empty.shape == (SIZE, SIZE) and (empty == -1).all()
    logits = torch.randn(1, 2, SIZE, SIZE, requires_grad=True)
    loss = cli.model.compute_loss(logits, torch.from_numpy(empty)[None])
    loss.backward()
    assert float(loss.detach()) == 0.0 and logits.grad is not None and torch.isfinite(logits.grad).all()


def test_multitemporal_crop_batches(published_data: Path, tmp_path: Path, monkeypatch):
    """Batches are (B, 6 bands, 3 dates, H, W) read date by date from the 18-band files, standardized with the
    dataset's statistics, NaN filled by 0 raw; labels 1..13 become 0..12 and no data (0) the ignore index -1."""
    monkeypatch.chdir(published_data)
    args = _args("terramind_v1_base_multitemporal_crop.yaml", tmp_path)
    cli = build_cli(["fit", *args, "--trainer.fast_dev_run=true"])
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))
    dm = cli.datamodule
    batch = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert batch["image"].shape == (2, 6, 3, SIZE, SIZE) and torch.isfinite(batch["image"]).all()
    with rasterio.open(Path(dm.roots["val"]) / f"{CROP_IDS['validation'][0]}_merged.tif") as src:
        pixels = src.read().astype(np.float64)  # (18, H, W): 6 bands of date 1, then date 2, then date 3
    bands_dates = pixels.reshape(3, 6, SIZE, SIZE).transpose(1, 0, 2, 3)  # (6, 3, H, W)
    expected = torch.from_numpy(bands_dates)
    expected = (expected - torch.as_tensor(dm.means, dtype=torch.float64).view(6, 1, 1, 1)) / torch.as_tensor(
        dm.stds, dtype=torch.float64).view(6, 1, 1, 1)
    expected[:, :, 0, :5] = _filled(dm, 3).expand(6, 3, 5)  # the NaN pixels
    torch.testing.assert_close(batch["image"][0].double(), expected, rtol=1e-5, atol=1e-5)
    mask = batch["mask"]
    assert mask.dtype == torch.int64 and int(mask.min()) >= 0 and int(mask.max()) <= 12
    train = dm.datasets["train"]
    empty = train[[s.sample_id for s in train.samples].index(EMPTY_CROP)]["mask"]
    assert (empty == -1).all()


ONE_BATCH = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]


def _fit(config: str, out: Path) -> Path:
    """One training step of ``config`` (tiny backbone); returns its checkpoint."""
    build_cli(["fit", *_args(config, out), *ONE_BATCH])
    (ckpt,) = out.rglob("*.ckpt")
    return ckpt


def test_single_raster_predict_png_panels_and_output_folder(published_data: Path, tmp_path: Path, monkeypatch):
    """``--predict_png`` draws the single-raster input (a tensor, not a dict of modalities) as an RGB panel; an
    unrelated earlier prediction in the output folder (TerraTorch's habit of ``--predict_output_dir /tmp``) is left
    alone, while this run's own outputs are refused without ``--predict_overwrite``."""
    monkeypatch.chdir(published_data)
    config = "terramind_v1_base_burnscars.yaml"
    ckpt = _fit(config, tmp_path / "fit")
    out = tmp_path / "shared"
    unrelated = write_tif(out / "another_scene_pred.tif", np.zeros((1, 4, 4), np.uint8))
    before = unrelated.read_bytes()
    predict = ["predict", *_args(config, tmp_path / "fit"), "--data.init_args.predict_data_root=hls_burn_scars/data",
               f"--ckpt_path={ckpt}", f"--predict_output_dir={out}", "--predict_png=true"]
    build_cli(predict)
    for sid in BURN_IDS:
        assert (out / f"{sid}_pred.tif").is_file() and (out / f"{sid}_panel.png").stat().st_size > 1000
    assert unrelated.read_bytes() == before
    with pytest.raises(FileExistsError, match=rf"already holds {2 * len(BURN_IDS)} of this run's outputs"):
        build_cli(predict)
    build_cli([*predict, "--predict_overwrite=true"])


def test_multitemporal_predict_png_panel(published_data: Path, tmp_path: Path, monkeypatch):
    """A (C, T, H, W) input draws its last date."""
    monkeypatch.chdir(published_data)
    config = "terramind_v1_base_multitemporal_crop.yaml"
    ckpt = _fit(config, tmp_path / "fit")
    out = tmp_path / "pred"
    build_cli(["predict", *_args(config, tmp_path / "fit"), f"--ckpt_path={ckpt}", f"--predict_output_dir={out}",
               "--predict_png=true"])
    for sid in CROP_IDS["validation"]:
        assert (out / f"{sid}_panel.png").stat().st_size > 1000


def test_single_raster_checkpoint_infers_without_config(published_data: Path, tmp_path: Path, monkeypatch):
    """A checkpoint fitted with a single-raster data module carries the config's means/stds keyed by the model's
    input modality, with the bands it reads, so ``terratim infer --ckpt`` needs no ``-c``."""
    from terratim.cli import main
    from terratim.inference.adapters import load_task_model, task_predictor

    monkeypatch.chdir(published_data)
    config = "terramind_v1_base_burnscars.yaml"
    ckpt = _fit(config, tmp_path / "fit")
    record = torch.load(ckpt, map_location="cpu", weights_only=False)["terratim"]
    data = yaml.safe_load((REFERENCE_CONFIGS / config).read_text())["data"]["init_args"]
    model_args = yaml.safe_load((REFERENCE_CONFIGS / config).read_text())["model"]["init_args"]["model_args"]
    assert record["modalities"] == ["S2L2A"] and record["bands"] == model_args["backbone_bands"]
    assert record["no_data_replace"] == 0
    task, data_args = load_task_model(None, ckpt)
    predictor = task_predictor(task, data_args, tmp_path / "unused.tif")
    assert predictor.bands == {"S2L2A": 6}
    mean, std = predictor.fingerprint["standardize"]["S2L2A"]  # what infer records
    np.testing.assert_allclose(mean, data["means"], rtol=1e-6)
    np.testing.assert_allclose(std, data["stds"], rtol=1e-6)
    pixels = np.random.default_rng(0).uniform(0.02, 0.3, (6, 48, 48)).astype(np.float32)
    scene = write_tif(tmp_path / "scene.tif", pixels)
    pred = tmp_path / "pred.tif"
    assert main(["infer", "--ckpt", str(ckpt), "--input", f"S2L2A={scene}", "--out", str(pred), "--chip", "32",
                 "--overlap", "16", "--quiet"]) == 0
    with rasterio.open(pred) as src:
        assert src.shape == (48, 48) and set(np.unique(src.read(1)).tolist()) <= {0, 1}
