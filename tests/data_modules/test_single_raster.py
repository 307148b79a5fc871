"""Single-raster data modules (TerraTorch's generic non-geo arguments), the multi-temporal crop module and the
temporal flatten/unflatten transforms, on tiny generated GeoTIFFs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from terratim.data.single_raster import band_layout, expand_bands, filter_by_split, read_split_entries
from terratim.data.transforms import build_transforms
from terratim.datamodules import (
    GenericNonGeoClassificationDataModule,
    GenericNonGeoPixelwiseRegressionDataModule,
    GenericNonGeoSegmentationDataModule,
    MultiTemporalCropClassificationDataModule,
)
from terratim.tasks.cli import build_cli

from rasters import write_tif

IDS = ["scene.v1.4", "scene.v1.5", "other.v2.0"]


def _seg_tree(root: Path, bands: int = 4, size: int = 16, seed: int = 0) -> Path:
    """``data/<id>_img.tif`` (int16, nodata -1 at pixel (0, 0)) and ``labels/<id>_lbl.tif`` (0..2, nodata 255)."""
    rng = np.random.default_rng(seed)
    for sid in IDS:
        image = rng.integers(0, 1000, (bands, size, size)).astype(np.int16)
        image[:, 0, 0] = -1
        label = rng.integers(0, 3, (1, size, size)).astype(np.uint8)
        label[0, -1, -1] = 255
        write_tif(root / "data" / f"{sid}_img.tif", image, nodata=-1)
        write_tif(root / "labels" / f"{sid}_lbl.tif", label, nodata=255)
    (root / "train.txt").write_text("scene.v1.4\nscene.v1.5\n")
    return root


def _seg(root: Path, **kwargs) -> GenericNonGeoSegmentationDataModule:
    args = dict(batch_size=2, num_workers=0, means=[100.0, 200.0, 300.0, 400.0], stds=[10.0, 20.0, 30.0, 40.0],
                num_classes=3, train_data_root=str(root / "data"), train_label_data_root=str(root / "labels"),
                val_data_root=str(root / "data"), val_label_data_root=str(root / "labels"),
                img_grep="*_img.tif", label_grep="*_lbl.tif", no_label_replace=-1)
    args.update(kwargs)
    return GenericNonGeoSegmentationDataModule(**args)


def _batch(dm, split: str = "val") -> dict:
    dm.setup("fit" if split in ("train", "val") else split)
    return dm.on_after_batch_transfer(next(iter(dm._loader(split))), 0)


def test_band_lists_ranges_and_selection():
    assert expand_bands(["BLUE", 1, [3, 5], "RED"]) == ["BLUE", 1, 3, 4, 5, "RED"]
    layout = band_layout(["BLUE", "GREEN", [0, 1]], [1, "BLUE"])
    assert layout.indices == (3, 0)
    with pytest.raises(ValueError, match=r"output_bands \['NIR'\] are not in dataset_bands"):
        band_layout(["BLUE"], ["NIR"])
    with pytest.raises(ValueError, match="dataset_bands names a band twice"):
        band_layout(["BLUE", "BLUE"], None)
    with pytest.raises(ValueError, match="dataset_bands names a band twice"):
        band_layout([1, "1"], None)  # one rule with the multimodal data: a band is its name
    with pytest.raises(ValueError, match="output_bands needs dataset_bands"):
        band_layout(None, ["BLUE"])


def test_split_entries_drop_extensions_and_match_substrings(tmp_path: Path):
    split = tmp_path / "s.txt"
    split.write_text("scene.v1.4\n")  # TerraTorch drops ".4" as an extension; the fragment still selects the file
    entries = read_split_entries(split)
    files = ["d/scene.v1.4_img.tif", "d/other.v2.0_img.tif"]
    assert filter_by_split(files, entries, True, True) == ["d/scene.v1.4_img.tif"]
    assert filter_by_split(["d/a.tif", "d/ab.tif"], ["a"], True, False) == ["d/a.tif"]


def test_segmentation_batch_standardized_nodata_labels(tmp_path: Path):
    root = _seg_tree(tmp_path)
    dm = _seg(root, output_bands=[2, 0], dataset_bands=[[0, 3]], means=[300.0, 100.0], stds=[30.0, 10.0],
              no_data_replace=50, constant_scale=2.0, reduce_zero_label=True,
              train_split=str(root / "train.txt"))
    dm.setup("fit")
    assert [s.sample_id for s in dm.datasets["train"].samples] == ["scene.v1.4", "scene.v1.5"]
    batch = _batch(dm)
    import rasterio

    with rasterio.open(root / "data" / "other.v2.0_img.tif") as src:  # sorted: other.v2.0 comes first
        raw = src.read().astype(np.float64)
    expected = (raw[[2, 0]] * 2.0 - np.array([300.0, 100.0])[:, None, None]) / np.array([30.0, 10.0])[:, None, None]
    expected[:, 0, 0] = (np.array([50.0, 50.0]) * 2.0 - [300.0, 100.0]) / [30.0, 10.0]  # no_data_replace, scaled
    torch.testing.assert_close(batch["image"][0].double(), torch.from_numpy(expected), rtol=1e-6, atol=1e-6)
    assert batch["image"].shape == (2, 2, 16, 16) and not batch["valid"]["image"][:, 0, 0].any()
    with rasterio.open(root / "labels" / "other.v2.0_lbl.tif") as src:
        label = src.read(1).astype(np.int64)
    want = np.where(label == 255, -1, label - 1)  # nodata stays no_label_replace; 0 becomes -1
    np.testing.assert_array_equal(batch["mask"][0].numpy(), want)
    assert [m["sample_id"] for m in batch["meta"]] == ["other.v2.0", "scene.v1.4"]


def test_nodata_default_fill_is_the_mean(tmp_path: Path):
    """Without no_data_replace, nodata becomes the band mean: 0 after standardization (TerraTorch leaves NaN)."""
    batch = _batch(_seg(_seg_tree(tmp_path)))
    assert torch.isfinite(batch["image"]).all() and (batch["image"][:, :, 0, 0] == 0).all()


def test_label_nodata_needs_no_label_replace(tmp_path: Path):
    dm = _seg(_seg_tree(tmp_path), no_label_replace=None)
    dm.setup("fit")
    with pytest.raises(ValueError, match=r"label .*_lbl\.tif has 1 nodata pixels; set no_label_replace"):
        dm.datasets["val"][0]


def test_band_count_mismatch_warns_naming_the_file_and_reads_by_position(tmp_path: Path):
    """A 4-band file read with 3 dataset_bands (the rule the multimodal data follows too): one warning naming the
    file, then bands 0..2 (or the selected ones) by position."""
    root = _seg_tree(tmp_path)
    for output_bands, kept in ((None, [0, 1, 2]), (["C", "A"], [2, 0])):
        dm = _seg(root, dataset_bands=["A", "B", "C"], output_bands=output_bands, means=[0.0] * len(kept),
                  stds=[1.0] * len(kept))
        with pytest.warns(UserWarning, match=r"_img\.tif has 4 bands but dataset_bands lists 3"):
            dm.setup("fit")
        item = dm.datasets["val"][0]
        with rasterio.open(item["meta"]["path"]) as src:
            pixels = src.read().astype(np.float32)  # (4, H, W)
        np.testing.assert_array_equal(item["image"]["image"][:, 1:, 1:], pixels[kept][:, 1:, 1:])


def test_setup_errors_name_files_and_options(tmp_path: Path):
    root = _seg_tree(tmp_path)
    with pytest.raises(ValueError, match=r"_img\.tif gives 4 channels .* but means and stds have 2 values"):
        _seg(root, means=[1.0, 2.0], stds=[1.0, 1.0]).setup("fit")
    with pytest.raises(ValueError, match=r"_img\.tif has 4 bands, but dataset_bands lists 5 and puts output bands "
                                         r"\['E'\] beyond the file's last band"):
        _seg(root, dataset_bands=["A", "B", "C", "D", "E"], output_bands=["A", "E"], means=[1.0] * 2,
             stds=[1.0] * 2).setup("fit")
    (root / "labels" / "scene.v1.5_lbl.tif").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 images have no label matching '\*_lbl\.tif', e\.g\. .*scene"):
        _seg(root).setup("fit")
    with pytest.raises(ValueError, match="stds must be positive"):
        _seg(root, stds=[1.0, 0.0, 1.0, 1.0])
    with pytest.raises(FileNotFoundError, match="means: file not found"):
        _seg(root, means="missing.yaml")


def test_expand_temporal_dimension_time_major_and_channel_major(tmp_path: Path):
    """A 2-band x 3-date file: value 10*band + date, stacked date by date (default) or band by band."""
    values = np.array([[10 * c + t for c in range(2)] for t in range(3)], dtype=np.float32).reshape(6)
    write_tif(tmp_path / "tm" / "a_img.tif", np.broadcast_to(values[:, None, None], (6, 4, 4)).copy())
    channel_major = np.array([10 * c + t for c in range(2) for t in range(3)], dtype=np.float32)
    write_tif(tmp_path / "cm" / "a_img.tif", np.broadcast_to(channel_major[:, None, None], (6, 4, 4)).copy())
    want = np.array([[10 * c + t for t in range(3)] for c in range(2)], dtype=np.float32)  # (C, T)
    for folder, major in (("tm", False), ("cm", True)):
        dm = GenericNonGeoSegmentationDataModule(1, 0, means=[0.0, 0.0], stds=[1.0, 1.0], num_classes=2,
                                                 predict_data_root=str(tmp_path / folder), img_grep="*_img.tif",
                                                 dataset_bands=["RED", "NIR"], expand_temporal_dimension=True,
                                                 temporal_channel_major=major)
        batch = _batch(dm, "predict")
        assert batch["image"].shape == (1, 2, 3, 4, 4) and "mask" not in batch
        np.testing.assert_array_equal(batch["image"][0, :, :, 0, 0].numpy(), want)


def test_flatten_unflatten_follow_terratorch_order():
    """Flatten is (C, T, H, W) -> (T*C) date by date (TerraTorch's "(time channels)"), Unflatten its inverse."""
    image = np.random.default_rng(0).normal(size=(6, 3, 4, 5)).astype(np.float32)
    flat = build_transforms([{"class_path": "terratim.datasets.transforms.FlattenTemporalIntoChannels"}])
    sample = flat({"image": {"image": image}, "mask": np.zeros((4, 5))})
    flattened = sample["image"]["image"]
    for t in range(3):
        for c in range(6):
            np.testing.assert_array_equal(flattened[t * 6 + c], image[c, t])
    for kwargs in ({"n_timesteps": 3}, {"n_channels": 6}):
        unflat = build_transforms([{"class_path": "terratim.data.transforms.UnflattenTemporalFromChannels",
                                    "init_args": kwargs}])
        np.testing.assert_array_equal(unflat(sample)["image"]["image"], image)
    with pytest.raises(ValueError, match="18 channels do not split by n_timesteps 4"):
        build_transforms([{"class_path": "terratim.datasets.transforms.UnflattenTemporalFromChannels",
                           "init_args": {"n_timesteps": 4}}])(sample)
    with pytest.raises(ValueError, match="needs n_timesteps or n_channels"):
        build_transforms([{"class_path": "terratim.datasets.transforms.UnflattenTemporalFromChannels"}])


def test_albumentations_on_time_series_needs_flattening():
    import albumentations as A

    image = np.ones((2, 3, 8, 8), dtype=np.float32)
    brightness = build_transforms([A.RandomBrightnessContrast(p=1.0)])
    with pytest.raises(ValueError, match="put FlattenTemporalIntoChannels before it"):
        brightness({"image": {"image": image}})
    wrapped = build_transforms([{"class_path": "terratim.datasets.transforms.FlattenTemporalIntoChannels"},
                                A.RandomBrightnessContrast(p=1.0),
                                {"class_path": "terratim.datasets.transforms.UnflattenTemporalFromChannels",
                                 "init_args": {"n_timesteps": 3}}])
    out = wrapped({"image": {"image": image}, "mask": np.zeros((8, 8), np.int64)})
    assert out["image"]["image"].shape == (2, 3, 8, 8)


def test_regression_keeps_target_nodata_as_nan(tmp_path: Path):
    rng = np.random.default_rng(3)
    for sid in ("a", "b"):
        write_tif(tmp_path / "x" / f"{sid}.tif", rng.normal(size=(2, 8, 8)).astype(np.float32))
        target = rng.normal(size=(1, 8, 8)).astype(np.float32)
        target[0, 0, 0] = -9999
        write_tif(tmp_path / "y" / f"{sid}.tif", target, nodata=-9999)
    dm = GenericNonGeoPixelwiseRegressionDataModule(2, 0, means=[0.0, 0.0], stds=[1.0, 1.0],
                                                    val_data_root=str(tmp_path / "x"),
                                                    val_label_data_root=str(tmp_path / "y"))
    dm.setup("validate")
    batch = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert batch["mask"].dtype == torch.float32 and torch.isnan(batch["mask"][:, 0, 0]).all()
    assert torch.isfinite(batch["mask"][:, 1:]).all()


def _class_tree(root: Path) -> Path:
    rng = np.random.default_rng(4)
    for name, n in (("forest", 2), ("water", 3)):
        for i in range(n):
            write_tif(root / "train" / name / f"{name}_{i}.tif", rng.integers(0, 100, (3, 16, 16)).astype(np.uint8))
    for i in range(2):
        write_tif(root / "predict" / f"p{i}.tif", rng.integers(0, 100, (3, 16, 16)).astype(np.uint8))
    return root


def test_classification_image_folders(tmp_path: Path):
    root = _class_tree(tmp_path)
    dm = GenericNonGeoClassificationDataModule(8, 0, means=[50.0] * 3, stds=[20.0] * 3, num_classes=2,
                                               train_data_root=str(root / "train"),
                                               predict_data_root=str(root / "predict"))
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch["image"].shape == (5, 3, 16, 16) and batch["mask"].dtype == torch.int64
    by_id = dict(zip([m["sample_id"] for m in batch["meta"]], batch["mask"].tolist(), strict=True))
    assert by_id == {"forest_0": 0, "forest_1": 0, "water_0": 1, "water_1": 1, "water_2": 1}
    dm.setup("predict")
    predict = next(iter(dm.predict_dataloader()))
    assert "mask" not in predict and len(predict["meta"]) == 2
    with pytest.raises(ValueError, match=r"has 2 class folders \['forest', 'water'\], but num_classes is 3"):
        GenericNonGeoClassificationDataModule(8, 0, means=[50.0] * 3, stds=[20.0] * 3, num_classes=3,
                                              train_data_root=str(root / "train")).setup("fit")


def test_classification_config_fit_by_short_class_name(tmp_path: Path, monkeypatch):
    """A TerraTorch-style config naming the data module by its short class name runs one fit step."""
    root = _class_tree(tmp_path)
    config = tmp_path / "cls.yaml"
    config.write_text(f"""
trainer: {{accelerator: cpu, fast_dev_run: true, logger: false, default_root_dir: {tmp_path}}}
data:
  class_path: GenericNonGeoClassificationDataModule
  init_args:
    batch_size: 4
    num_workers: 0
    num_classes: 2
    train_data_root: {root / "train"}
    val_data_root: {root / "train"}
    test_data_root: {root / "train"}
    dataset_bands: [RED, GREEN, BLUE]
    means: [50, 50, 50]
    stds: [20, 20, 20]
    train_transform:
      - class_path: albumentations.HorizontalFlip
      - class_path: ToTensorV2
model:
  class_path: terratim.tasks.ClassificationTask
  init_args:
    model_args: {{backbone: terramind_v1_tiny, backbone_pretrained: false, backbone_modalities: [S2L2A],
                 backbone_bands: {{S2L2A: [RED, GREEN, BLUE]}}, num_classes: 2}}
""")
    cli = build_cli(["fit", "-c", str(config)])
    assert type(cli.datamodule).__name__ == "GenericNonGeoClassificationDataModule"
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))


def _crop_tree(root: Path) -> Path:
    rng = np.random.default_rng(5)
    for folder, ids in (("training", ["chip_0", "chip_1"]), ("validation", ["chip_2"])):
        for sid in ids:
            image = rng.integers(0, 3000, (18, 8, 8)).astype(np.int16)
            write_tif(root / f"{folder}_chips" / f"{sid}_merged.tif", image)
            write_tif(root / f"{folder}_chips" / f"{sid}.mask.tif", rng.integers(0, 14, (1, 8, 8)).astype(np.uint8))
        (root / f"{folder}_data.txt").write_text("\n".join(ids) + "\n")
    return root


def test_multi_temporal_crop_arguments(tmp_path: Path):
    root = _crop_tree(tmp_path)
    dm = MultiTemporalCropClassificationDataModule(str(root), batch_size=2, bands=["RED", "NIR_NARROW"])
    batch = _batch(dm, "train")
    assert batch["image"].shape == (2, 2, 3, 8, 8) and int(batch["mask"].min()) >= -1
    np.testing.assert_allclose(dm.means, [924.335066, 2968.881459], rtol=1e-6)
    flat = MultiTemporalCropClassificationDataModule(str(root), batch_size=1, expand_temporal_dimension=False,
                                                     bands=["RED", "NIR_NARROW"])
    flat_batch = _batch(flat, "test")  # test (and predict) read the validation chips
    assert flat_batch["image"].shape == (1, 6, 8, 8) and flat_batch["meta"][0]["sample_id"] == "chip_2"
    assert int(flat_batch["mask"].min()) >= -1 and int(flat_batch["mask"].max()) <= 12
    with pytest.raises(ValueError, match=r"chip_2\.mask\.tif has values \[13\] outside the 13 classes"):
        _batch(MultiTemporalCropClassificationDataModule(str(root), batch_size=1, reduce_zero_label=False), "test")
    stacked = _batch(MultiTemporalCropClassificationDataModule(str(root), batch_size=1, bands=["RED", "NIR_NARROW"]),
                     "test")["image"][0]
    torch.testing.assert_close(flat_batch["image"][0].view(3, 2, 8, 8).transpose(0, 1), stacked)  # date by date
    with pytest.raises(ValueError, match=r"bands \['NIR'\] are not bands of this dataset"):
        MultiTemporalCropClassificationDataModule(str(root), bands=["NIR"])
    with pytest.raises(ValueError, match="use_metadata: true is not supported"):
        MultiTemporalCropClassificationDataModule(str(root), use_metadata=True)


def test_label_values_outside_the_classes_raise(tmp_path: Path):
    root = _seg_tree(tmp_path)
    write_tif(root / "labels" / "scene.v1.4_lbl.tif", np.full((1, 16, 16), 7, np.uint8), nodata=255)
    dm = _seg(root)
    dm.setup("fit")
    index = [s.sample_id for s in dm.datasets["val"].samples].index("scene.v1.4")
    with pytest.raises(ValueError, match=r"scene\.v1\.4_lbl\.tif has values \[7\] outside the 3 classes 0\.\.2"):
        dm.datasets["val"][index]


def test_images_of_different_sizes_fall_back_to_batch_size_1(tmp_path: Path):
    root = _seg_tree(tmp_path)
    write_tif(root / "data" / "scene.v1.5_img.tif", np.ones((4, 8, 8), np.int16), nodata=-1)
    write_tif(root / "labels" / "scene.v1.5_lbl.tif", np.ones((1, 8, 8), np.uint8), nodata=255)
    dm = _seg(root)
    dm.setup("fit")
    with pytest.warns(UserWarning, match="different sizes .* batch_size 1"):
        loader = dm.val_dataloader()
    assert loader.batch_size == 1 and len(list(loader)) == 3


def test_unrelated_names_pair_in_sorted_order_with_a_warning(tmp_path: Path):
    for i in range(2):
        write_tif(tmp_path / "x" / f"img{i}.tif", np.full((1, 4, 4), i, np.float32))
        write_tif(tmp_path / "y" / f"lab{i}.tif", np.full((1, 4, 4), i, np.uint8))
    dm = GenericNonGeoSegmentationDataModule(2, 0, means=[0.0], stds=[1.0], num_classes=2,
                                             val_data_root=str(tmp_path / "x"),
                                             val_label_data_root=str(tmp_path / "y"))
    with pytest.warns(UserWarning, match="pairing 2 images and labels in sorted order"):
        dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"]["image"][:, 0, 0, 0].tolist() == batch["mask"][:, 0, 0].tolist() == [0, 1]


def test_statistics_from_a_plain_text_file(tmp_path: Path):
    (tmp_path / "means.txt").write_text("1.5\n2.5\n")
    (tmp_path / "stds.txt").write_text("0.5 0.25\n")
    dm = GenericNonGeoSegmentationDataModule(1, 0, means=str(tmp_path / "means.txt"), stds=str(tmp_path / "stds.txt"),
                                             num_classes=2)
    assert dm.means.tolist() == [1.5, 2.5] and dm.stds.tolist() == [0.5, 0.25]
