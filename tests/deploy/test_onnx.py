"""ONNX export: onnxruntime equals PyTorch (plain and TiM, batch 1 and 3), the metadata, int8, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import terratim
from terratim.deploy.onnx import OPSET, OnnxModel, export_task, imagine_argmax, read_card, sample_inputs

from task_models import CLASS_NAMES, build_task

TILE = 64
DATA = {"modalities": ["S1GRD"], "no_data_replace": 0}
TOLERANCE = 1e-4


def standardized(card, raw: torch.Tensor) -> dict[str, torch.Tensor]:
    spec = card.inputs[0]
    mean, std = torch.tensor(spec.mean).view(1, -1, 1, 1), torch.tensor(spec.std).view(1, -1, 1, 1)
    return {"S1GRD": (raw - mean) / std}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``exported(kind, backbone, quantize=None)`` -> (task, OnnxModel, export report), built once each."""
    cache: dict = {}

    def get(kind: str, backbone: str = "terramind_v1_tiny", quantize: str | None = None):
        key = (kind, backbone, quantize)
        if key not in cache:
            task = build_task(kind, backbone)
            path = tmp_path_factory.mktemp("onnx") / f"{kind}.onnx"
            report = export_task(task, DATA, path, tile_size=TILE, quantize=quantize)
            cache[key] = task, OnnxModel(path), report
        return cache[key]

    return get


@pytest.mark.parametrize("backbone", ["terramind_v1_tiny", "terramind_v1_tiny_tim"])
@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_equals_pytorch(exported, backbone, batch):
    task, model, report = exported("segmentation", backbone)
    assert report["max_abs_diff"] < TOLERANCE and report["tim"] == backbone.endswith("_tim")
    raw = sample_inputs(model.card, batch, seed=7)[0]
    with torch.no_grad():
        expected = task(standardized(model.card, raw))  # the task's own forward (TiM: its sampler, temperature 0)
    got = model({"S1GRD": raw})
    assert got.shape == (batch, 3, TILE, TILE)
    assert torch.allclose(got, expected, rtol=0, atol=TOLERANCE), (got - expected).abs().max()


@pytest.mark.parametrize("kind,shape", [("regression", (3, 1, TILE, TILE)), ("classification", (3, 3))])
def test_regression_and_classification_export(exported, kind, shape):
    task, model, _ = exported(kind)
    raw = sample_inputs(model.card, 3, seed=3)[0]
    with torch.no_grad():
        expected = task(standardized(model.card, raw))
    got = model({"S1GRD": raw})
    assert got.shape == shape and torch.allclose(got, expected.reshape(shape), rtol=0, atol=TOLERANCE)
    assert model.card.task == kind


def test_imagination_equals_the_tim_backbone_at_temperature_zero():
    """One argmax pass = the backbone's sampler with temperature 0 (token ids, exact where not near-tied)."""
    tim = terratim.build("terramind_v1_tiny_tim", modalities=["S1GRD"], tim_modalities=["LULC"],
                         tim_temperature=0.0, tim_scheme="maskgit").eval()
    x = {"S1GRD": torch.randn(2, 2, TILE, TILE, generator=torch.Generator().manual_seed(0))}
    ours = imagine_argmax(tim, x)["LULC"]  # (B, N)
    theirs = tim.imagine(x)["LULC"].reshape(2, -1)
    assert ours.shape == theirs.shape == (2, (TILE // 16) ** 2)
    assert torch.equal(ours, theirs)


def test_metadata_describes_the_model(exported):
    _, model, _ = exported("segmentation")
    props = {p.key: p.value for p in onnx.load(str(model.path)).metadata_props}
    assert props["terratim_version"] == terratim.__version__ and props["opset"] == str(OPSET)
    assert props["tile_size"] == str(TILE) and props["task"] == "segmentation"
    assert json.loads(props["class_names"]) == CLASS_NAMES
    (spec,) = json.loads(props["inputs"])
    mean, std = terratim.resolve("S1GRD").statistics()
    assert spec["name"] == "S1GRD" and spec["bands"] == ["VV", "VH"] and spec["fill"] == [0.0, 0.0]
    assert np.allclose(spec["mean"], mean) and np.allclose(spec["std"], std)
    assert "raw units" in props["standardization"] and props["quantization"] == "none"
    graph = onnx.load(str(model.path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch axis
    assert any(op.version == OPSET for op in onnx.load(str(model.path)).opset_import if op.domain in ("", "ai.onnx"))


def test_tim_metadata_names_the_imagination(exported):
    _, model, _ = exported("segmentation", "terramind_v1_tiny_tim")
    assert model.card.tim["imagined"] == ["LULC"] and "argmax" in model.card.tim["imagination"]


def test_int8_stays_close_to_fp32(exported):
    _, fp32, _ = exported("segmentation")
    _, int8, report = exported("segmentation", quantize="int8")
    assert int8.card.quantization.startswith("int8") and report["max_abs_diff"] < TOLERANCE
    raw = sample_inputs(fp32.card, 2, seed=11)[0]
    a, b = fp32({"S1GRD": raw}), int8({"S1GRD": raw})
    scale = a.abs().max()
    assert 0 < (a - b).abs().max() < 0.1 * scale  # quantized (not identical), yet close
    assert report["int8_class_agreement"] > 0.9
    assert int8.path.stat().st_size < fp32.path.stat().st_size


def test_a_file_without_terratim_metadata_is_refused(exported, tmp_path):
    _, model, _ = exported("segmentation")
    bare = onnx.load(str(model.path))
    del bare.metadata_props[:]
    path = tmp_path / "bare.onnx"
    onnx.save(bare, str(path))
    with pytest.raises(ValueError, match="has no terratim metadata"):
        read_card(path)
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        read_card(tmp_path / "missing.onnx")


def test_mismatched_inputs_are_refused(exported):
    _, model, _ = exported("segmentation")
    with pytest.raises(ValueError, match=r"takes \['S1GRD'\].*got \['S2L2A'\]"):
        model({"S2L2A": torch.zeros(1, 12, TILE, TILE)})
    with pytest.raises(ValueError, match=r"S1GRD: .* expects \(B, 2, H, W\) with bands VV, VH; got shape \(1, 3"):
        model({"S1GRD": torch.zeros(1, 3, TILE, TILE)})
    with pytest.raises(ValueError, match="exported for 64 x 64 tiles"):
        model({"S1GRD": torch.zeros(1, 2, 32, 32)})


def test_bad_export_options_are_refused(tmp_path):
    task = build_task("segmentation")
    with pytest.raises(ValueError, match="multiple of 16"):
        export_task(task, DATA, tmp_path / "m.onnx", tile_size=60)
    with pytest.raises(ValueError, match="--quantize must be int8"):
        export_task(task, DATA, tmp_path / "m.onnx", tile_size=TILE, quantize="int4")


@pytest.mark.parametrize("backbone", ["terramind_v1_tiny", "terramind_v1_tiny_tim"])
def test_two_inputs_and_two_imagined_modalities(backbone, tmp_path):
    """Several image inputs (and chained TiM modalities): token spans stay right in the traced graph."""
    from terratim.tasks import SemanticSegmentationTask

    args = {"backbone": backbone, "backbone_pretrained": False, "backbone_modalities": ["S2L2A", "S1GRD"],
            "necks": [{"name": "SelectIndices", "indices": [11]}, {"name": "ReshapeTokensToImage"}],
            "decoder": "FCNDecoder", "decoder_channels": 16, "num_classes": 4}
    if backbone.endswith("_tim"):
        args.update(backbone_tim_modalities=["LULC", "NDVI"], backbone_tim_temperature=0.0)
    torch.manual_seed(0)
    task = SemanticSegmentationTask(args).eval()
    export_task(task, {"modalities": ["S2L2A", "S1GRD"]}, tmp_path / "two.onnx", tile_size=TILE)
    model = OnnxModel(tmp_path / "two.onnx")
    assert [s.name for s in model.card.inputs] == ["S2L2A", "S1GRD"]
    raw = sample_inputs(model.card, 2, seed=4)
    standardized = {s.name: (x - torch.tensor(s.mean).view(1, -1, 1, 1)) / torch.tensor(s.std).view(1, -1, 1, 1)
                    for s, x in zip(model.card.inputs, raw)}
    with torch.no_grad():
        expected = task(standardized)
    got = model({s.name: x for s, x in zip(model.card.inputs, raw)})
    assert torch.allclose(got, expected, rtol=0, atol=TOLERANCE), (got - expected).abs().max()


def test_a_lora_fine_tune_exports_with_its_adapters_merged(tmp_path):
    """A PEFT (LoRA) TiM task exports like a plain one; the graph equals the adapter model to the tolerance."""
    from terratim.tasks import SemanticSegmentationTask

    lora = {"method": "LORA", "replace_qkv": "qkv",
            "peft_config_kwargs": {"target_modules": ["qkv.q_linear", "qkv.v_linear", "mlp.fc1", "mlp.fc2"],
                                   "r": 4, "lora_alpha": 8}}
    args = {"backbone": "terramind_v1_tiny_tim", "backbone_pretrained": False,
            "backbone_modalities": ["S2L2A", "S1GRD"], "backbone_tim_modalities": ["LULC"],
            "backbone_tim_temperature": 0.0, "necks": [{"name": "SelectIndices", "indices": [11]},
                                                       {"name": "ReshapeTokensToImage"}],
            "decoder": "FCNDecoder", "decoder_channels": 16, "num_classes": 3, "peft_config": lora}
    torch.manual_seed(0)
    task = SemanticSegmentationTask(args).eval()
    with torch.no_grad():  # adapters that change the outputs (peft starts lora_B at zero)
        for name, param in task.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    export_task(task, {"modalities": ["S2L2A", "S1GRD"]}, tmp_path / "lora.onnx", tile_size=TILE)
    model = OnnxModel(tmp_path / "lora.onnx")
    raw = sample_inputs(model.card, 2, seed=5)
    standardized = {s.name: (x - torch.tensor(s.mean).view(1, -1, 1, 1)) / torch.tensor(s.std).view(1, -1, 1, 1)
                    for s, x in zip(model.card.inputs, raw)}
    with torch.no_grad():
        expected = task(standardized)  # the adapter model, untouched by the export
    got = model({s.name: x for s, x in zip(model.card.inputs, raw)})
    assert torch.allclose(got, expected, rtol=0, atol=TOLERANCE), (got - expected).abs().max()
    assert any("lora_B" in name for name, _ in task.named_parameters())  # the export merged a copy


def test_the_standalone_snippet_of_the_docs_runs_as_written(exported, tmp_path, monkeypatch):
    """docs/deploy.md's "onnxruntime alone" block, executed unchanged, equals OnnxModel (nodata filled alike)."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    section = docs.split("## Without terratim: onnxruntime alone", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "import terratim" not in code and "torch" not in code
    _, model, _ = exported("segmentation")
    raw = sample_inputs(model.card, 1, seed=5)[0]
    raw[0, :, :7, :9] = float("nan")  # a nodata corner: the snippet fills it from the metadata
    filled = torch.where(raw.isnan(), torch.tensor(model.card.inputs[0].fill).view(1, -1, 1, 1), raw)

    def read_tile(name: str, bands: list[str], tile: int) -> np.ndarray:
        assert (name, bands, tile) == ("S1GRD", ["VV", "VH"], TILE)
        return raw[0].numpy()

    (tmp_path / "water.onnx").write_bytes(model.path.read_bytes())
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"read_tile": read_tile}
    exec(compile(code, "docs/deploy.md", "exec"), namespace)  # noqa: S102 (the documented code itself)
    expected = model({"S1GRD": filled})
    assert namespace["logits"].shape == (1, 3, TILE, TILE)
    assert np.allclose(namespace["logits"], expected.numpy(), rtol=0, atol=TOLERANCE)
    assert np.array_equal(namespace["class_map"], expected.argmax(1)[0].numpy())
