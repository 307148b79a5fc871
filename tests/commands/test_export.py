"""``terratim export`` then ``terratim infer --onnx``: the scene equals PyTorch's; bad input is one line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import rasterio

from terratim.cli import main as cli_main
from terratim.deploy.onnx import onnx_predictor
from terratim.inference import adapters
from terratim.inference.engine import TilingConfig, infer_scene
from terratim.inference.heads import Head

from rasters import write_tif
from task_models import save_task

TILE, OVERLAP, DELTA = 64, 16, 4
TOLERANCE = 1e-4


def main(argv: list[str]) -> int:
    return cli_main(argv, report_errors=True)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """S1GRD (dB) 150 x 170 with a nodata corner."""
    data = np.random.default_rng(0).normal(-14.0, 4.0, (2, 150, 170)).astype(np.float32)
    data[:, :20, :30] = np.nan
    return write_tif(tmp_path_factory.mktemp("scene") / "s1.tif", data, nodata=np.nan)


@pytest.fixture(scope="module", params=["terramind_v1_tiny", "terramind_v1_tiny_tim"])
def exported(request, tmp_path_factory):
    """(checkpoint with its inference record, exported file, export stdout) per backbone."""
    folder = tmp_path_factory.mktemp(request.param)
    _, ckpt = save_task(folder, "segmentation", request.param)
    out = folder / "model.onnx"
    code = main(["export", "--ckpt", str(ckpt), "--out", str(out), "--tile", str(TILE)])
    assert code == 0 and out.is_file()
    return ckpt, out


def scene_logits(predictor, scene, out) -> np.ndarray:
    """The blended logits of a predictor over the scene (a float head instead of the class map)."""
    tiling = TilingConfig(TILE, OVERLAP, DELTA, batch_size=4)
    head = Head(out, predictor.heads[0].channels)
    infer_scene(predictor.predict, {"S1GRD": scene}, [head], tiling, bands=predictor.bands, fill=predictor.fill)
    with rasterio.open(out) as dst:
        return dst.read()


def infer_cli(model_args: list[str], scene, out) -> np.ndarray:
    args = ["infer", *model_args, "--input", f"S1GRD={scene}", "--out", str(out), "--overlap", str(OVERLAP),
            "--delta", str(DELTA), "--batch-size", "4", "--quiet"]
    assert main(args) == 0
    with rasterio.open(out) as dst:
        return dst.read(1), dst.crs, dst.transform


def test_infer_onnx_equals_pytorch_over_a_scene(exported, scene, tmp_path):
    ckpt, path = exported
    task, data = adapters.load_task_model(None, ckpt)
    torch_logits = scene_logits(adapters.task_predictor(task, data, tmp_path / "t.tif"), scene, tmp_path / "t.tif")
    onnx_logits = scene_logits(onnx_predictor(path, tmp_path / "o.tif"), scene, tmp_path / "o.tif")
    nodata = np.isnan(torch_logits)
    assert np.array_equal(nodata, np.isnan(onnx_logits)) and nodata[:, :20, :30].all()
    assert np.allclose(onnx_logits[~nodata], torch_logits[~nodata], rtol=0, atol=TOLERANCE)

    onnx_map, crs, transform = infer_cli(["--onnx", str(path)], scene, tmp_path / "onnx.tif")
    torch_map, torch_crs, torch_transform = infer_cli(["--ckpt", str(ckpt), "--chip", str(TILE)], scene,
                                                      tmp_path / "torch.tif")
    assert (crs, transform) == (torch_crs, torch_transform) and onnx_map.shape == torch_map.shape == (150, 170)
    top2 = np.sort(np.nan_to_num(torch_logits), axis=0)[-2:]
    clear = (top2[1] - top2[0] > 1e-3) & ~nodata[0]  # not a near-tie
    assert clear.mean() > 0.9
    assert np.array_equal(onnx_map[clear], torch_map[clear])
    assert np.array_equal(torch_map[clear], np.nanargmax(np.where(nodata, -np.inf, torch_logits), axis=0)[clear])
    assert (onnx_map[nodata[0]] == 255).all()


def test_export_prints_what_it_wrote(tmp_path, capsys):
    _, ckpt = save_task(tmp_path, "regression")
    out = tmp_path / "reg.onnx"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out), "--tile", str(TILE), "--quantize", "int8"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}: regression model, inputs S1GRD, tile 64, opset 18, dynamic batch axis" in text
    assert "max |onnxruntime - PyTorch|" in text and "int8 against the fp32 export: max |diff|" in text
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out), "--tile", str(TILE)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_a_checkpoint_without_its_config_needs_c(tmp_path, capsys):
    config, ckpt = save_task(tmp_path, "segmentation", record=False)
    out = tmp_path / "m.onnx"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out), "--tile", str(TILE)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("terratim export: error:") and "pass the `terratim fit` config with -c" in err
    assert err.count("\n") == 1 and not out.exists()
    assert main(["export", "-c", str(config), "--ckpt", str(ckpt), "--out", str(out), "--tile", str(TILE)]) == 0


def one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_infer_onnx_refuses_bad_input(exported, scene, tmp_path, capsys):
    _, path = exported
    base = ["infer", "--onnx", str(path), "--out", str(tmp_path / "o.tif")]
    bare = onnx.load(str(path))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    err = one_line_error(["infer", "--onnx", str(tmp_path / "bare.onnx"), "--input", f"S1GRD={scene}", "--out",
                          str(tmp_path / "b.tif")], capsys)
    assert "has no terratim metadata" in err
    s2 = write_tif(tmp_path / "s2.tif", np.zeros((12, 150, 170), np.float32))
    assert "takes ['S1GRD']" in one_line_error([*base, "--input", f"S2L2A={s2}"], capsys)
    three = write_tif(tmp_path / "s1_3.tif", np.zeros((3, 150, 170), np.float32))
    assert "3 bands" in one_line_error([*base, "--input", f"S1GRD={three}"], capsys)
    assert "exported for 64 px tiles" in one_line_error([*base, "--input", f"S1GRD={scene}", "--chip", "128"],
                                                        capsys)
    assert "leave out -c/--config, --ckpt" in one_line_error([*base, "--input", f"S1GRD={scene}", "--ckpt", "x"],
                                                             capsys)
    assert "an ONNX model runs as exported" in one_line_error([*base, "--input", f"S1GRD={scene}", "--precision",
                                                               "bf16"], capsys)


def test_a_classification_model_does_not_tile(tmp_path, scene, capsys):
    _, ckpt = save_task(tmp_path, "classification")
    out = tmp_path / "cls.onnx"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out), "--tile", str(TILE)]) == 0
    err = one_line_error(["infer", "--onnx", str(out), "--input", f"S1GRD={scene}", "--out", str(tmp_path / "c.tif")],
                         capsys)
    assert "classification model: it does not predict pixels" in err


def test_infer_onnx_precision_auto_says_what_it_runs(exported, scene, tmp_path, capsys):
    _, onnx_path = exported
    args = ["infer", "--onnx", str(onnx_path), "--input", f"S1GRD={scene}", "--out", str(tmp_path / "a.tif"),
            "--overlap", str(OVERLAP), "--delta", str(DELTA), "--precision", "auto"]
    assert main(args) == 0
    assert "precision auto -> as exported" in capsys.readouterr().out
