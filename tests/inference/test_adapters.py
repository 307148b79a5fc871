"""Model adapters over real and generated scenes: LULC generation (acceptance), task models, embeddings."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

import terratim
from terratim import modalities as mods
from terratim.inference import adapters
from terratim.inference.embeddings import export_chip_embeddings, geo_metadata, iter_chip_embeddings, polygon_wkb
from terratim.inference.engine import TilingConfig, infer_scene
from terratim.inference.heads import CLASS_NODATA
from terratim.inference.scene import SceneReader

from rasters import TRANSFORM, write_tif

S1_CHIP = Path(__file__).parents[1] / "data" / "sen1floods11" / "S1Hand" / "Spain_7370579_S1Hand.tif"


def small_lulc_tokenizer():
    from terratim.tokenizers.build import build_tokenizer
    from terratim.tokenizers.model import TokenizerConfig

    config = dataclasses.replace(TokenizerConfig.for_modality("LULC"), enc_dim=32, enc_depth=1, enc_heads=2,
                                 dec_dim=32, dec_depth=1, dec_heads=2)
    return build_tokenizer("LULC", config=config)


def test_lulc_generation_over_a_real_512_chip_keeps_georeferencing(tmp_path):
    """Acceptance: terramind_v1_tiny_generate (random weights) S1GRD -> LULC over 3 x 3 chips of a 512^2 scene."""
    torch.manual_seed(0)
    model = terratim.build("terramind_v1_tiny_generate", modalities=["S1GRD"], output_modalities=["LULC"],
                           standardize=True, tokenizers={"LULC": small_lulc_tokenizer()})
    predictor = adapters.generation_predictor(model, tmp_path / "lulc.tif", torch.Generator().manual_seed(0),
                                              confidence=True)
    assert predictor.bands == {"S1GRD": 2} and np.allclose(predictor.fill["S1GRD"], mods.MODALITIES["S1GRD"].mean)
    (out,) = infer_scene(predictor.predict, {"S1GRD": S1_CHIP}, predictor.heads, TilingConfig(224, 32, 8, 9),
                         bands=predictor.bands, fill=predictor.fill)
    with rasterio.open(S1_CHIP) as src, rasterio.open(out) as dst:
        assert (dst.height, dst.width) == (src.height, src.width) == (512, 512)
        assert dst.crs == src.crs and dst.transform.almost_equals(src.transform)
        classes, confidence = dst.read()
        nodata = ~np.isfinite(src.read()).any(axis=0)
        assert dst.colormap(1)[1][:3] == (0x1F, 0x5F, 0xD1)  # water colour of the LULC scheme
    assert dst.dtypes[0] == "uint8" and classes[~nodata].max() < 10
    assert np.all(classes[nodata] == CLASS_NODATA)
    assert len(np.unique(classes[~nodata])) > 1 and confidence[~nodata].min() >= 10  # >= 1/10 of 100 %


class StubRegression(torch.nn.Module):
    """A stand-in task: 'regression' returning the first standardized channel."""

    task = "regression"

    def forward(self, x):
        return x["S1GRD"][:, 0]  # (B, h, w)


def test_task_predictor_standardizes_like_training(make_scene, tmp_path):
    path, data = make_scene("s1", 2, 120, 130)
    data_args = {"modalities": ["S1GRD"], "means": {"S1GRD": [1.0, 2.0]}, "stds": {"S1GRD": [2.0, 4.0]}}
    predictor = adapters.task_predictor(StubRegression(), data_args, tmp_path / "reg.tif")
    (out,) = infer_scene(predictor.predict, {"S1GRD": path}, predictor.heads, TilingConfig(64, 16, 8, 4),
                         bands=predictor.bands, fill=predictor.fill)
    with rasterio.open(out) as dst:
        assert dst.dtypes == ("float32",) and dst.descriptions == ("value",)
        assert np.allclose(dst.read(1), (data[0] - 1.0) / 2.0, atol=1e-6)
    with pytest.raises(ValueError, match="does not predict pixels"):
        adapters.task_predictor(type("C", (), {"task": "classification"})(), data_args, tmp_path / "x.tif")


def test_per_pixel_embeddings_from_a_tiny_backbone(make_scene, tmp_path):
    path, _ = make_scene("s1", 2, 240, 232)
    backbone = terratim.build("terramind_v1_tiny", modalities=["S1GRD"]).eval()
    predictor = adapters.embedding_predictor(backbone, tmp_path / "emb.tif")
    (out,) = infer_scene(predictor.predict, {"S1GRD": path}, predictor.heads, TilingConfig(224, 32, 8, 4),
                         bands=predictor.bands)
    with rasterio.open(out) as dst:
        assert dst.count == 192 and dst.transform == TRANSFORM
        pixels = dst.read(1, window=((0, 64), (0, 64)))
    # One vector per 16 px patch; the first chip starts delta = 8 px above and left of the scene.
    # (192 channels are blended in float32, so "constant" is up to rounding.)
    assert np.isfinite(pixels).all() and np.allclose(pixels[8:24, 8:24], pixels[8, 8], rtol=1e-5)
    assert not np.isclose(pixels[8, 8], pixels[7, 7], rtol=1e-5)


def test_polygon_wkb_and_geoparquet_metadata():
    wkb = polygon_wkb(0.0, 1.0, 2.0, 3.0)
    order, kind, rings, points = struct.unpack("<BIII", wkb[:13])
    coords = struct.unpack("<10d", wkb[13:])
    assert (order, kind, rings, points) == (1, 3, 1, 5) and coords[:4] == (0.0, 1.0, 2.0, 1.0)
    meta = geo_metadata(rasterio.crs.CRS.from_epsg(32632))
    assert meta["columns"]["geometry"]["crs"]["id"]["code"] == 32632


def test_chip_embeddings_to_geoparquet(make_scene, tmp_path):
    data = np.random.default_rng(0).standard_normal((2, 100, 150)).astype(np.float32)
    data[:, :, 100:] = -9999.0  # the right third is nodata: those chips are left out
    path = write_tif(tmp_path / "s1.tif", data, nodata=-9999.0, tiled=True)

    def embed(batch):
        return batch["S1GRD"].mean(dim=(2, 3))  # (B, 2)

    tiling = TilingConfig(48, 16, 8, 4)
    with SceneReader({"S1GRD": path}) as reader:
        rows = [row for batch in iter_chip_embeddings(embed, reader, tiling) for row in batch]
    _check_chip_rows(rows, data)
    try:
        import pyarrow.parquet as pq
    except ImportError:  # the writer must say how to get it
        with pytest.raises(ImportError, match="pip install pyarrow"):
            export_chip_embeddings(embed, {"S1GRD": path}, tmp_path / "emb.parquet", tiling)
        return
    table = pq.read_table(export_chip_embeddings(embed, {"S1GRD": path}, tmp_path / "emb.parquet", tiling))
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    assert table.to_pylist() == rows


def _check_chip_rows(rows: list[dict], data: np.ndarray) -> None:
    assert rows and all(r["col_off"] < 100 for r in rows) and len(rows[0]["embedding"]) == 2
    first = rows[0]
    assert (first["row_off"], first["col_off"]) == (0, 0)
    coords = struct.unpack("<10d", first["geometry"][13:])
    assert coords[0] == TRANSFORM.c and coords[1] == TRANSFORM.f - first["height"] * 10.0
    # An interior chip (core at row 32, column 32) embeds exactly its 48 px window, starting delta = 8 px earlier.
    inner = next(r for r in rows if (r["chip_row"], r["chip_col"]) == (1, 1))
    assert (inner["row_off"], inner["col_off"], inner["height"], inner["width"]) == (24, 24, 48, 48)
    assert np.allclose(inner["embedding"], data[:, 24:72, 24:72].mean(axis=(1, 2)), atol=1e-5)


class StubGenerate(torch.nn.Module):
    """Stands in for a generation model: LULC logits and an S2L2A image in physical units."""

    outputs = {"LULC": "tok_lulc@224", "S2L2A": "tok_sen2l2a@224"}
    user_inputs = ["S1GRD"]

    def forward(self, x, standardize=None, timesteps=None, generator=None):
        s1 = x["S1GRD"]
        lulc = torch.zeros(s1.shape[0], 10, *s1.shape[-2:])
        lulc[:, 1] = 1.0  # water everywhere
        return {"LULC": lulc, "S2L2A": s1[:, :1].expand(-1, 12, -1, -1) + 1000.0}


def test_generation_heads_one_file_per_output(make_scene, tmp_path):
    path, data = make_scene("s1", 2, 100, 90)
    predictor = adapters.generation_predictor(StubGenerate(), tmp_path / "gen.tif")
    assert [h.path.name for h in predictor.heads] == ["gen_LULC.tif", "gen_S2L2A.tif"]
    lulc, s2 = infer_scene(predictor.predict, {"S1GRD": path}, predictor.heads, TilingConfig(48, 16, 8, 4),
                           bands=predictor.bands, fill=predictor.fill)
    with rasterio.open(lulc) as a, rasterio.open(s2) as b:
        assert a.dtypes == ("uint8",) and np.all(a.read(1) == 1) and a.tags()["CLASS_1"] == "water"
        assert b.count == 12 and b.dtypes[0] == "float32" and b.descriptions[3] == "RED"
        assert np.allclose(b.read(4), data[0] + 1000.0)


def _trained_task_checkpoint(tmp_path: Path, with_record: bool = True) -> Path:
    """A tiny segmentation checkpoint as `terratim fit` writes it, its data module standardizing S1GRD with
    custom statistics (Lightning calls ``on_save_checkpoint`` with the trainer's data module attached)."""
    from types import SimpleNamespace

    from terratim.datamodules import GenericMultiModalDataModule
    from terratim.tasks import SemanticSegmentationTask

    model_args = {"backbone": "terramind_v1_tiny", "backbone_pretrained": False, "backbone_modalities": ["S1GRD"],
                  "necks": [{"name": "SelectIndices", "indices": [11]}, {"name": "ReshapeTokensToImage"}],
                  "decoder": "FCNDecoder", "decoder_channels": 16, "num_classes": 3}
    task = SemanticSegmentationTask(model_args, class_names=["land", "water", "cloud"])
    data = GenericMultiModalDataModule(modalities=["S1GRD"], batch_size=1, means={"S1GRD": [1.0, 2.0]},
                                       stds={"S1GRD": [2.0, 4.0]}, no_data_replace=0.0)
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    if with_record:
        task.trainer = SimpleNamespace(datamodule=data)
        task.on_save_checkpoint(checkpoint)
    path = tmp_path / "model.ckpt"
    torch.save(checkpoint, path)
    return path


def _fit_config(tmp_path: Path, data_args: dict) -> Path:
    import yaml

    config = {"model": {"class_path": "terratim.tasks.SemanticSegmentationTask"},
              "data": {"class_path": "terratim.datamodules.GenericMultiModalDataModule", "init_args": data_args}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_task_checkpoint_carries_its_statistics_and_inference_needs_no_config(tmp_path):
    ckpt = _trained_task_checkpoint(tmp_path)
    record = torch.load(ckpt, weights_only=True)["terratim"]
    assert record["modalities"] == ["S1GRD"] and record["task_class"].endswith("SemanticSegmentationTask")
    assert (record["means"], record["stds"], record["no_data_replace"]) == ({"S1GRD": [1.0, 2.0]},
                                                                          {"S1GRD": [2.0, 4.0]}, 0.0)
    task, data = adapters.load_task_model(None, ckpt)
    predictor = adapters.task_predictor(task, data, tmp_path / "seg.tif")
    assert predictor.fingerprint["standardize"] == {"S1GRD": [[1.0, 2.0], [2.0, 4.0]]}
    assert predictor.bands == {"S1GRD": 2} and predictor.fill["S1GRD"].tolist() == [0.0, 0.0]


def test_a_config_silent_on_statistics_takes_the_checkpoints_and_a_contradicting_one_is_refused(tmp_path):
    ckpt = _trained_task_checkpoint(tmp_path)
    _, data = adapters.load_task_model(_fit_config(tmp_path, {"modalities": ["S1GRD"]}), ckpt)
    assert (data["means"], data["stds"], data["no_data_replace"]) == ({"S1GRD": [1.0, 2.0]},
                                                                      {"S1GRD": [2.0, 4.0]}, 0.0)
    other = {"modalities": ["S1GRD"], "means": {"S1GRD": [1.0, 3.0]}, "stds": {"S1GRD": [2.0, 4.0]}}
    with pytest.raises(ValueError, match=r"standardizes S1GRD with means \[1\.0, 3\.0\].*trained with \[1\.0, 2\.0\]"):
        adapters.load_task_model(_fit_config(tmp_path, other), ckpt)


def test_an_older_checkpoint_without_statistics_needs_the_config(tmp_path):
    ckpt = _trained_task_checkpoint(tmp_path, with_record=False)
    with pytest.raises(ValueError, match="does not carry its modalities.*-c/--config"):
        adapters.load_task_model(None, ckpt)


@pytest.mark.parametrize("tim_sampling", [False, True])
def test_tim_task_imagines_the_most_likely_tokens_unless_sampling_is_asked(tmp_path, tim_sampling):
    """Scene inference with a TiM task is deterministic by default (argmax, one pass, as the ONNX export)."""
    from task_models import build_task

    task = build_task("segmentation", "terramind_v1_tiny_tim")
    tim = task.model.backbone
    tim.generator.settings = tim.generator.settings.replace(temperature=1.0, decoding_steps=4)
    predictor = adapters.task_predictor(task, {"modalities": ["S1GRD"]}, tmp_path / "out.tif",
                                        tim_sampling=tim_sampling)
    settings = tim.generator.settings
    if tim_sampling:
        assert (settings.temperature, settings.decoding_steps) == (1.0, 4)
        assert predictor.fingerprint["tim_imagination"] == "sampled"
        return
    assert (settings.temperature, settings.decoding_steps) == (0.0, 1)
    assert predictor.fingerprint["tim_imagination"] == "most likely, one pass"
    batch = {"S1GRD": torch.randn(2, 2, 64, 64, generator=torch.Generator().manual_seed(0)) * 4 - 14}
    with torch.no_grad():
        first, second = predictor.predict(batch), predictor.predict(batch)
    assert torch.equal(first.argmax(1), second.argmax(1))  # the same computation twice: no sampling left
