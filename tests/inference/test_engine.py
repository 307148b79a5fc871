"""The streaming engine over generated GeoTIFF scenes: exactness, georeferencing, nodata, heads, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from terratim.inference.engine import SceneEngine, TilingConfig, infer_scene
from terratim.inference.heads import CLASS_NODATA, Head
from terratim.inference.scene import SceneReader, partial_path, progress_path

from rasters import CRS_UTM, TRANSFORM, write_tif


def identity(batch):
    return torch.cat([batch[name] for name in sorted(batch)], dim=1)


def read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile


@pytest.mark.parametrize(
    ("height", "width", "chip", "overlap", "batch", "panel"),
    [
        (300, 517, 64, 16, 5, 2048),
        (97, 131, 32, 12, 3, 2048),
        (260, 300, 224, 32, 16, 0),
        (70, 70, 48, 47, 7, 2048),
        (150, 777, 64, 20, 6, 256),  # three column panels: chips on panel edges run twice, same result
    ],
)
def test_identity_reproduces_two_modalities_exactly(make_scene, tmp_path, height, width, chip, overlap, batch, panel):
    a, data_a = make_scene("A", 2, height, width, seed=1)
    b, data_b = make_scene("B", 1, height, width, seed=2)
    head = Head(tmp_path / "out.tif", 3)
    out = infer_scene(identity, {"A": a, "B": b}, [head], TilingConfig(chip, overlap, 8, batch, panel=panel))
    pixels, profile = read(out[0])
    assert np.array_equal(pixels, np.concatenate([data_a, data_b]))  # every pixel, no seams
    assert profile["crs"] == CRS_UTM and profile["transform"] == TRANSFORM
    assert profile["tiled"] and profile["compress"] == "deflate" and np.isnan(profile["nodata"])
    assert not partial_path(head.path).exists() and not progress_path(head.path).exists()


@pytest.mark.parametrize("blend", ["cosine", "average"])
def test_constant_model_gives_a_constant(make_scene, tmp_path, blend):
    a, _ = make_scene("A", 2, 150, 211)

    def constant(batch):
        return torch.full((batch["A"].shape[0], 1, 64, 64), -7.5)

    out = infer_scene(constant, {"A": a}, [Head(tmp_path / "c.tif", 1)], TilingConfig(64, 20, 8, 4, blend))
    assert np.all(read(out[0])[0] == -7.5)


def test_nodata_hole_skips_chips_and_is_written_as_nodata(tmp_path):
    data = np.random.default_rng(0).standard_normal((2, 200, 260)).astype(np.float32)
    data[:, 40:160, 60:200] = -9999.0  # a hole bigger than a chip: the chips inside it are never run
    path = write_tif(tmp_path / "holey.tif", data, nodata=-9999.0, tiled=True)
    seen = []

    def model(batch):
        x = batch["S1GRD"]
        seen.append(x.shape[0])
        assert torch.isfinite(x).all()  # NaN never reaches the model
        return x[:, :1]

    tiling = TilingConfig(32, 8, 4, 8)
    out = infer_scene(model, {"S1GRD": path}, [Head(tmp_path / "o.tif", 1)], tiling)
    pixels, profile = read(out[0])
    grid = tiling.grid(200, 260)
    assert sum(seen) < len(grid)
    hole = np.zeros((200, 260), bool)
    hole[40:160, 60:200] = True
    assert np.isnan(pixels[0][hole]).all()
    assert np.array_equal(pixels[0][~hole], data[0][~hole])
    assert np.isnan(profile["nodata"])


def test_class_map_is_uint8_with_colour_table_and_confidence(make_scene, tmp_path):
    a, data = make_scene("A", 1, 130, 150)

    def logits(batch):  # class 1 where x > 0, else class 0; confident where |x| is large
        x = batch["A"][:, :1] * 4
        return torch.cat([-x, x, torch.full_like(x, -100.0)], dim=1)

    head = Head(
        tmp_path / "map.tif",
        3,
        "classes",
        ("land", "water", "cloud"),
        ("#00ff00", "#0000ff", "#ffffff"),
        confidence=True,
    )
    out = infer_scene(logits, {"A": a}, [head], TilingConfig(48, 16, 4, 4))[0]
    with rasterio.open(out) as src:
        pixels, colormap, tags = src.read(), src.colormap(1), src.tags()
        assert src.dtypes == ("uint8", "uint8") and src.nodata == CLASS_NODATA
        assert src.descriptions == ("class", "confidence_percent")
    assert np.array_equal(pixels[0], (data[0] > 0).astype(np.uint8))
    assert colormap[1] == (0, 0, 255, 255) and colormap[CLASS_NODATA][3] == 0
    assert tags["CLASS_1"] == "water"
    expected = np.rint(100 / (1 + np.exp(-8 * np.abs(data[0].astype(np.float64))))).astype(np.uint8)
    assert np.abs(pixels[1].astype(int) - expected).max() <= 1 and pixels[1].min() >= 50


def test_two_heads_split_the_channels(make_scene, tmp_path):
    a, data = make_scene("A", 2, 90, 100)
    heads = [Head(tmp_path / "first.tif", 1, names=("VV",)), Head(tmp_path / "second.tif", 1)]
    first, second = infer_scene(identity, {"A": a}, heads, TilingConfig(32, 8, 4, 4))
    assert np.array_equal(read(first)[0][0], data[0]) and np.array_equal(read(second)[0][0], data[1])


def test_memory_holds_only_the_chip_rows_in_flight(make_scene, tmp_path, monkeypatch):
    a, _ = make_scene("A", 1, 600, 90)
    tiling = TilingConfig(32, 8, 4, 4)  # 3 chips per row, so a batch spans at most 2 chip rows
    held, reads = [], []
    original_add, original_read = SceneEngine.run.__globals__["BlendAccumulator"].add, SceneReader.read_rows

    def add(self, *args, **kwargs):
        original_add(self, *args, **kwargs)
        held.append(self.rows_held)

    def read_rows(self, start, stop, *cols):
        reads.append(stop - start)
        return original_read(self, start, stop, *cols)

    monkeypatch.setattr(SceneEngine.run.__globals__["BlendAccumulator"], "add", add)
    monkeypatch.setattr(SceneReader, "read_rows", read_rows)
    infer_scene(identity, {"A": a}, [Head(tmp_path / "o.tif", 1)], tiling)
    grid = tiling.grid(600, 90)
    assert max(reads) <= grid.chip
    assert max(held) <= grid.core + 2 * grid.stride  # not the 600 scene rows


def test_interrupted_run_resumes_without_redoing_written_rows(make_scene, tmp_path):
    a, data = make_scene("A", 1, 700, 120)
    head = Head(tmp_path / "out.tif", 1)
    tiling = TilingConfig(64, 16, 8, 4)
    calls = {"n": 0}

    def failing(batch):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt
        return batch["A"]

    with pytest.raises(KeyboardInterrupt):
        infer_scene(failing, {"A": a}, [head], tiling)
    state = json.loads(progress_path(head.path).read_text())
    done = state["rows_done"]
    assert 0 < done < 700 and done % 256 == 0  # whole block rows, on disk
    assert partial_path(head.path).exists() and not head.path.exists()
    with pytest.raises(FileExistsError, match="--resume"):
        infer_scene(identity, {"A": a}, [head], tiling)
    rows_seen = []

    def recording(batch):
        rows_seen.append(batch["A"].shape[0])
        return batch["A"]

    infer_scene(recording, {"A": a}, [head], tiling, resume=True)
    assert np.array_equal(read(head.path)[0], data)
    grid = tiling.grid(700, 120)
    # Only the chip rows touching unwritten rows run again (the one above them just for its blend overlap).
    assert sum(rows_seen) == len(grid.rows_for(done, 700)) * len(grid.col_offsets) < len(grid)
    with pytest.raises(FileExistsError, match="--overwrite"):
        infer_scene(identity, {"A": a}, [head], tiling)


def test_resume_continues_in_the_second_panel(make_scene, tmp_path):
    a, data = make_scene("A", 1, 300, 600)
    head = Head(tmp_path / "out.tif", 1)
    tiling = TilingConfig(64, 16, 8, 8, panel=256)  # panels 0-256, 256-512, 512-600
    calls = {"n": 0}

    def failing(batch):
        calls["n"] += 1
        if calls["n"] == 9:  # 8 batches fill panel 0 (7 chip rows x 6 chip columns = 42 chips)
            raise KeyboardInterrupt
        return batch["A"]

    with pytest.raises(KeyboardInterrupt):
        infer_scene(failing, {"A": a}, [head], tiling)
    state = json.loads(progress_path(head.path).read_text())
    assert state["panel"] == 1 and state["rows_done"] == 0
    infer_scene(identity, {"A": a}, [head], tiling, resume=True)
    assert np.array_equal(read(head.path)[0], data)


def test_resume_with_other_settings_is_refused(make_scene, tmp_path):
    a, _ = make_scene("A", 1, 600, 64)
    head = Head(tmp_path / "out.tif", 1)

    def failing(batch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        infer_scene(failing, {"A": a}, [head], TilingConfig(64, 16, 8, 4))
    with pytest.raises(ValueError, match="since the interrupted run, setting tiling.overlap was 16, now 32"):
        infer_scene(identity, {"A": a}, [head], TilingConfig(64, 32, 8, 4), resume=True)


def test_wrong_model_output_shape_is_explained(make_scene, tmp_path):
    a, _ = make_scene("A", 1, 100, 100)
    with pytest.raises(ValueError, match=r"expects \(B, K, chip, chip\)"):
        infer_scene(lambda b: b["A"][:, :, :10], {"A": a}, [Head(tmp_path / "o.tif", 1)], TilingConfig(64, 16))


def test_cog_output_keeps_pixels_and_georeferencing(make_scene, tmp_path):
    a, data = make_scene("A", 1, 300, 280)
    (out,) = infer_scene(identity, {"A": a}, [Head(tmp_path / "cog.tif", 1, cog=True)], TilingConfig(64, 16, 8, 8))
    with rasterio.open(out) as dst:
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert dst.transform == TRANSFORM and dst.crs == CRS_UTM
        assert np.array_equal(dst.read(), data)
