"""GenericMultiModalDataModule: batches, standardization, nodata, labels and clear errors on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from terratim.datamodules.multimodal import GenericMultiModalDataModule, drop_modalities
from terratim.modalities import resolve

from dm_rasters import make_sample, module_args
from rasters import write_tif


def _first_batch(dm: GenericMultiModalDataModule, split: str = "train") -> dict:
    loader = getattr(dm, f"{split}_dataloader")()
    return dm.on_after_batch_transfer(dm.transfer_batch_to_device(next(iter(loader)), torch.device("cpu"), 0), 0)


def test_batch_layout_nodata_and_registry_standardization(tree: Path):
    dm = GenericMultiModalDataModule(**module_args(tree, train_transform=None))
    raw = next(iter(dm.val_dataloader()))
    batch = _first_batch(dm, "val")
    assert set(batch["image"]) == {"S2L2A", "S1GRD"}
    assert batch["image"]["S2L2A"].shape == (2, 12, 16, 16) and batch["image"]["S1GRD"].shape == (2, 2, 16, 16)
    assert batch["mask"].dtype == torch.int64 and batch["mask"].shape == (2, 16, 16)
    assert (batch["mask"][:, -1, -1] == -1).all()  # label nodata -> ignore value
    assert not batch["valid"]["S1GRD"][:, 0, 0].any() and batch["valid"]["S1GRD"][:, 1:, 1:].all()
    s2 = resolve("S2L2A")
    expected = (raw["image"]["S2L2A"] - torch.tensor(s2.mean).view(-1, 1, 1)) / torch.tensor(s2.std).view(-1, 1, 1)
    assert torch.allclose(batch["image"]["S2L2A"], expected, atol=1e-5)
    assert torch.allclose(batch["image"]["S1GRD"][:, :, 0, 0], torch.zeros(2, 2), atol=1e-6)  # filled with mean
    assert [m["sample_id"] for m in batch["meta"]] and batch["meta"][0]["crs"].to_epsg() == 32632


def test_explicit_stats_with_extra_keys_and_no_data_replace(tree: Path):
    means = {"S2L2A": [1000.0] * 12, "S1GRD": [-10.0, -20.0], "RGB": [1, 2, 3], "DEM": [5.0]}
    stds = {"S2L2A": [500.0] * 12, "S1GRD": [2.0, 4.0], "RGB": [1, 1, 1], "DEM": [1.0]}
    dm = GenericMultiModalDataModule(**module_args(tree, means=means, stds=stds, no_data_replace=0))
    batch = _first_batch(dm, "val")
    assert torch.allclose(batch["image"]["S1GRD"][:, :, 0, 0], torch.tensor([[5.0, 5.0]] * 2))  # (0 - m) / s
    with pytest.raises(ValueError, match="S1GRD: means/stds have 3/3 values, expected 2"):
        GenericMultiModalDataModule(**module_args(tree, means={**means, "S1GRD": [1, 2, 3]},
                                                  stds={**stds, "S1GRD": [1, 2, 3]}))


def test_terratorch_rgb_preview_arguments_are_accepted_and_change_nothing(tree: Path):
    plain = _first_batch(GenericMultiModalDataModule(**module_args(tree, train_transform=None)), "val")
    dm = GenericMultiModalDataModule(**module_args(tree, train_transform=None, rgb_modality="S2L2A",
                                                   rgb_indices=[3, 2, 1]))
    with_rgb = _first_batch(dm, "val")
    for name in ("S2L2A", "S1GRD"):
        assert torch.equal(with_rgb["image"][name], plain["image"][name])  # same files, same arithmetic
    assert torch.equal(with_rgb["mask"], plain["mask"])


def test_wrong_band_count_names_file_and_modality(tmp_path: Path):
    make_sample(tmp_path, "a_1", s2_bands=10)
    ds = GenericMultiModalDataModule(**module_args(tmp_path)).make_dataset("val")
    with pytest.raises(ValueError, match=r"sample 'a_1' S2L2A file .*a_1_s2.tif has 10 bands, expected 12"):
        ds[0]


def test_mismatched_raster_sizes_between_modalities(tmp_path: Path):
    make_sample(tmp_path, "a_1", s1_size=8)
    ds = GenericMultiModalDataModule(**module_args(tmp_path)).make_dataset("val")
    with pytest.raises(ValueError, match=r"sample 'a_1': S1GRD raster .* is 8x8 pixels but S2L2A is 16x16"):
        ds[0]


def test_label_values_outside_the_classes(tmp_path: Path):
    label = np.zeros((16, 16), dtype=np.int16)
    label[3, 3] = 7
    make_sample(tmp_path, "a_1", label=label)
    ds = GenericMultiModalDataModule(**module_args(tmp_path)).make_dataset("val")
    with pytest.raises(ValueError, match=r"a_1_mask.tif has values \[7\] outside the 3 classes"):
        ds[0]


def test_split_file_naming_a_missing_sample(tree: Path):
    split = tree / "split.txt"
    split.write_text("a_1\nzz_9\n")
    dm = GenericMultiModalDataModule(**module_args(tree, train_split=str(split)))
    with pytest.raises(FileNotFoundError, match=r"sample 'zz_9' \(from split file .*split.txt\) has no file for "
                                                r"S2L2A, S1GRD, label; searched S2L2A: .*zz_9_s2.tif"):
        dm.setup("fit")
    dm = GenericMultiModalDataModule(**module_args(tree, train_split=str(split), missing="skip"))
    with pytest.warns(UserWarning, match="skipped 1 of 2 samples"):
        assert len(dm.make_dataset("train")) == 1


def test_all_nodata_chip_is_filled_and_can_be_ignored(tmp_path: Path):
    make_sample(tmp_path, "a_1")
    write_tif(tmp_path / "S1GRD" / "a_1_s1.tif", np.full((2, 16, 16), -9999, np.float32), nodata=-9999)
    write_tif(tmp_path / "S2L2A" / "a_1_s2.tif", np.zeros((12, 16, 16), np.uint16), nodata=0)
    sample = GenericMultiModalDataModule(**module_args(tmp_path)).make_dataset("val")[0]
    assert not sample["valid"]["S1GRD"].any() and np.isfinite(sample["image"]["S1GRD"]).all()
    assert (sample["mask"] >= 0).any()  # labels kept by default (documented)
    masked = GenericMultiModalDataModule(**module_args(tmp_path, nodata_to_ignore=True)).make_dataset("val")[0]
    assert (masked["mask"] == -1).all()  # -> a zero loss, never NaN (tests/tasks/test_components.py)


def test_modality_dropout_keeps_at_least_one():
    images = {"S2L2A": torch.zeros(1), "S1GRD": torch.zeros(1), "DEM": torch.zeros(1)}
    gen = torch.Generator().manual_seed(0)
    kept = [len(drop_modalities(images, 0.95, gen)) for _ in range(50)]
    assert min(kept) == 1 and max(kept) <= 3
    assert drop_modalities(images, 0.0, gen) == images


def test_scene_labels_from_csv_single_and_multi(tree: Path):
    csv = tree / "labels.csv"
    csv.write_text("sample,label\na_1,2\nb_2,0\nc_3,1\n")
    args = module_args(tree, task="classification", label_csv=str(csv))
    for split in ("train", "val", "test"):
        args[f"{split}_label_data_root"] = None
    batch = _first_batch(GenericMultiModalDataModule(**args), "val")
    assert batch["mask"].tolist() == [2, 0]
    csv.write_text("sample,label\na_1,2 4\nb_2,0\nc_3,1 3\n")
    args.update(num_classes=5, multi_label=True)
    batch = _first_batch(GenericMultiModalDataModule(**args), "val")
    assert batch["mask"].tolist() == [[0, 0, 1, 0, 1], [1, 0, 0, 0, 0]]


def test_batches_of_different_sizes_raise_a_clear_error(tmp_path: Path):
    make_sample(tmp_path, "a_1", size=16)
    make_sample(tmp_path, "b_2", size=24)
    dm = GenericMultiModalDataModule(**module_args(tmp_path))
    with pytest.raises(ValueError, match="different sizes.*RandomCrop"):
        next(iter(dm.val_dataloader()))


def test_fit_without_validation_data(tree: Path):
    import lightning.pytorch as pl

    args = module_args(tree, val_data_root=None, val_label_data_root=None)
    dm = GenericMultiModalDataModule(**args)
    dm.trainer = pl.Trainer(logger=False, enable_checkpointing=False)
    dm.trainer.state.fn = "fit"
    dm.setup("fit")
    assert "val" not in dm.datasets and dm.val_dataloader() == []
    with pytest.raises(ValueError, match="no val_data_root given"):
        dm.setup("validate")


# ------------------------------------------------------------------ TerraTorch's dataset_bands / output_bands
PLACEHOLDER_BANDS = [0, "BLUE", "GREEN", "RED", 1, [2, 3]]  # 7 file bands: 0, BLUE, GREEN, RED, 1, 2, 3


def _placeholder_tree(root: Path, file_bands: int = 7) -> dict:
    """One S2L2A-only sample whose band b holds the value 100 * b, in a single shared folder."""
    values = (100.0 * np.arange(file_bands, dtype=np.float32))[:, None, None] * np.ones((1, 16, 16), np.float32)
    write_tif(root / "x_1_input.tif", values)
    write_tif(root / "x_1_label.tif", np.zeros((1, 16, 16), np.int16))
    means, stds = {"S2L2A": [0.0, 0.0, 0.0]}, {"S2L2A": [1.0, 1.0, 1.0]}
    return {"modalities": ["S2L2A"], "batch_size": 1, "num_classes": 2, "data_root": str(root),
            "label_data_root": str(root), "img_grep": {"S2L2A": "*input.tif"}, "label_grep": "*label.tif",
            "dataset_bands": {"S2L2A": PLACEHOLDER_BANDS}, "output_bands": {"S2L2A": ["RED", "BLUE", "GREEN"]},
            "means": means, "stds": stds}


def test_dataset_bands_with_placeholders_select_output_bands(tmp_path: Path):
    with pytest.warns(UserWarning, match="data_root is shared by the splits"):
        dm = GenericMultiModalDataModule(**_placeholder_tree(tmp_path))
    assert dm.bands == {"S2L2A": ["RED", "BLUE", "GREEN"]} and dm.roots["predict"] == {"S2L2A": str(tmp_path)}
    for split in ("train", "val", "test"):
        image = dm.make_dataset(split)[0]["image"]["S2L2A"]
        assert image.shape == (3, 16, 16) and image[:, 0, 0].tolist() == [300.0, 100.0, 200.0]  # file bands 3, 1, 2


def test_dataset_bands_count_differing_from_the_file(tmp_path: Path):
    """TerraTorch's own test config lists 11 bands for 10-band files: positions count from the first band (a
    warning names the file); an output band beyond the file's last band raises naming the file."""
    args = _placeholder_tree(tmp_path, file_bands=5)  # bands 0..4: BLUE, GREEN, RED are at 1..3, inside
    with pytest.warns(UserWarning, match=r"x_1_input.tif has 5 bands but dataset_bands lists 7"):
        image = GenericMultiModalDataModule(**args).make_dataset("val")[0]["image"]["S2L2A"]
    assert image[:, 0, 0].tolist() == [300.0, 100.0, 200.0]
    args = _placeholder_tree(tmp_path, file_bands=2)  # RED (position 3) and GREEN (2) are not in the file
    ds = GenericMultiModalDataModule(**args).make_dataset("val")
    with pytest.raises(ValueError, match=r"S2L2A file .*x_1_input.tif has 2 bands, but dataset_bands lists 7 and "
                                         r"puts output bands \['RED', 'GREEN'\] beyond"):
        ds[0]


@pytest.mark.parametrize(
    ("dataset_bands", "output_bands", "message"),
    [
        ([0, "BLUE", 0], ["BLUE"], r"dataset_bands of S2L2A names a band twice \(0\)"),
        ([0, "BLUE"], ["RED"], r"output_bands of S2L2A \['RED'\] are not in dataset_bands \[0, 'BLUE'\]"),
        ([0, [3, 1]], None, r"range \[3, 1\] runs backwards"),
        ([0, 1.5], None, r"1.5 is not a band name, an integer placeholder or a \[first, last\] range"),
        (None, ["BLUE"], r"output_bands of S2L2A needs dataset_bands of S2L2A"),
        ([0, "BLUE", "GREEN", "RED"], [0, "BLUE", "GREEN"], r"unnamed bands \[0\], which have no pretraining"),
    ],
)
def test_bad_dataset_bands_raise_naming_the_option(tmp_path: Path, dataset_bands, output_bands, message):
    args = _placeholder_tree(tmp_path)
    args["dataset_bands"] = {"S2L2A": dataset_bands} if dataset_bands is not None else None
    args["output_bands"] = {"S2L2A": output_bands} if output_bands is not None else None
    args.pop("means"), args.pop("stds")
    with pytest.raises(ValueError, match=message):
        GenericMultiModalDataModule(**args)


def test_band_options_for_a_modality_not_loaded_and_both_band_forms(tmp_path: Path):
    args = _placeholder_tree(tmp_path)
    with pytest.raises(ValueError, match=r"dataset_bands names 'S1GRD', which is not one of the modalities"):
        GenericMultiModalDataModule(**{**args, "dataset_bands": {"S1GRD": ["VV", "VH"]}, "output_bands": None})
    with pytest.raises(ValueError, match="give bands .* or dataset_bands/output_bands, not both"):
        GenericMultiModalDataModule(**{**args, "bands": {"S2L2A": ["RED", "BLUE", "GREEN"]}})
    with pytest.raises(ValueError, match="give image_grep or its older name img_grep, not both"):
        GenericMultiModalDataModule(**{**args, "image_grep": "*input.tif"})


def test_discovered_samples_without_a_label_are_skipped_but_split_files_stay_strict(tmp_path: Path):
    args = _placeholder_tree(tmp_path)
    write_tif(tmp_path / "y_2_input.tif", np.zeros((7, 16, 16), np.float32))  # no label file
    with pytest.warns(UserWarning, match=r"skipped 1 of 2 samples with missing files, e.g. \['y_2_'\]"):
        assert len(GenericMultiModalDataModule(**args).make_dataset("train")) == 1
    split = tmp_path / "train.txt"
    split.write_text("x_1_\ny_2_\n")
    with pytest.raises(FileNotFoundError, match=r"sample 'y_2_' \(from split file .*train.txt\) has no file for label"):
        GenericMultiModalDataModule(**{**args, "train_split": str(split)}).make_dataset("train")
