"""Sen1Floods11DataModule on the real sample chips in tests/data/sen1floods11 (official layout and splits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from terratim.datamodules import Sen1Floods11DataModule

ROOT = Path(__file__).resolve().parents[1] / "data" / "sen1floods11"
CHIPS = sorted(p.name.removesuffix("_S1Hand.tif") for p in (ROOT / "S1Hand").glob("*_S1Hand.tif"))


def test_official_split_with_missing_chips_raises_naming_the_sample():
    dm = Sen1Floods11DataModule(str(ROOT), modalities=["S1GRD"])
    with pytest.raises(FileNotFoundError, match=r"sample '.+' \(from split file .*flood_test_data.txt\) has no file"):
        dm.make_dataset("test")


def test_s1_chips_batch_with_crops(tmp_path: Path):
    split = tmp_path / "chips.txt"
    split.write_text("\n".join(CHIPS))
    dm = Sen1Floods11DataModule(str(ROOT), modalities=["S1GRD"], batch_size=3, crop_size=64,
                                split_files={"train": str(split), "val": str(split)})
    dm.setup("fit")
    assert len(dm.datasets["train"]) == len(CHIPS) == 9
    batch = next(iter(dm.train_dataloader()))
    batch = dm.on_after_batch_transfer(dm.transfer_batch_to_device(batch, torch.device("cpu"), 0), 0)
    assert batch["image"]["S1GRD"].shape == (3, 2, 64, 64) and torch.isfinite(batch["image"]["S1GRD"]).all()
    assert set(batch["mask"].unique().tolist()) <= {-1, 0, 1}
    assert batch["meta"][0]["crs"].to_epsg() == 4326


def test_s2_and_s1_of_one_chip_with_skip(tmp_path: Path):
    dm = Sen1Floods11DataModule(str(ROOT), missing="skip")
    with pytest.warns(UserWarning, match="skipped 89 of 90 samples"):
        ds = dm.make_dataset("test")
    sample = ds[0]
    assert sample["meta"]["sample_id"] == "Spain_7370579"
    assert sample["image"]["S2L1C"].shape == (13, 512, 512) and sample["image"]["S1GRD"].shape == (2, 512, 512)
    assert sample["mask"].shape == (512, 512) and (sample["mask"] == 1).any()


def test_v11_bucket_layout_with_csv_splits(tmp_path: Path):
    data = tmp_path / "data" / "flood_events" / "HandLabeled"
    data.mkdir(parents=True)
    for folder in ("S1Hand", "S2Hand", "LabelHand"):
        (data / folder).symlink_to(ROOT / folder)
    splits = tmp_path / "splits" / "flood_handlabeled"
    splits.mkdir(parents=True)
    rows = [f"{c}_S1Hand.tif,{c}_LabelHand.tif" for c in CHIPS[:2]]
    for name in ("train", "valid", "test"):
        (splits / f"flood_{name}_data.csv").write_text("\n".join(rows) + "\n")
    ds = Sen1Floods11DataModule(str(tmp_path), modalities=["S1GRD"]).make_dataset("test")
    assert [s.sample_id for s in ds.samples] == CHIPS[:2]


def test_predict_samples_carry_the_label_when_it_is_on_disk(tmp_path: Path):
    """Prediction panels draw the label when it is known: the predict split of Sen1Floods11 has its labels."""
    split = tmp_path / "chips.txt"
    split.write_text("\n".join(CHIPS[:2]))
    dm = Sen1Floods11DataModule(str(ROOT), modalities=["S1GRD"], split_files={"predict": str(split)})
    sample = dm.make_dataset("predict")[0]
    assert tuple(sample["mask"].shape) == tuple(sample["image"]["S1GRD"].shape[-2:])
    assert set(np.unique(np.asarray(sample["mask"])).tolist()) <= {-1, 0, 1} and (sample["mask"] >= 0).any()
