"""The real ``terratim infer`` entry point on small generated scenes: task models, generation, bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import rasterio
import torch
import yaml

import terratim
from terratim.cli import main as cli_main
from terratim.inference.scene import progress_path

from rasters import CRS_UTM, TRANSFORM, write_tif


def main(argv: list[str]) -> int:
    """``terratim ...`` as run from a shell: user errors one line with status 2, Ctrl-C status 130."""
    return cli_main(argv, report_errors=True)


@pytest.fixture
def s1_scene(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(-12.0, 4.0, (2, 260, 300)).astype(np.float32)
    data[:, :40, :50] = np.nan
    return write_tif(tmp_path / "s1.tif", data, nodata=np.nan), data


def save_task(tmp_path, backbone: str):
    """A tiny segmentation task saved the way `terratim fit` saves it: config + Lightning checkpoint."""
    from terratim.tasks import SemanticSegmentationTask

    model_args = {"backbone": backbone, "backbone_pretrained": False, "backbone_modalities": ["S1GRD"],
                  "necks": [{"name": "SelectIndices", "indices": [11]}, {"name": "ReshapeTokensToImage"}],
                  "decoder": "FCNDecoder", "decoder_channels": 16, "num_classes": 3}
    if backbone.endswith("_tim"):
        model_args["backbone_tim_modalities"] = ["LULC"]
    torch.manual_seed(0)
    task = SemanticSegmentationTask(model_args, class_names=["land", "water", "cloud"])
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, ckpt)
    config = {"model": {"class_path": "terratim.tasks.SemanticSegmentationTask",
                        "init_args": {"model_args": model_args, "class_names": ["land", "water", "cloud"]}},
              "data": {"class_path": "terratim.datamodules.GenericMultiModalDataModule",
                       "init_args": {"modalities": ["S1GRD"], "no_data_replace": 0}}}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return config_path, ckpt


@pytest.fixture(params=["terramind_v1_tiny", "terramind_v1_tiny_tim"])
def task_files(request, tmp_path):
    """A plain backbone, and a TiM backbone (which imagines LULC inside each chip)."""
    return (*save_task(tmp_path, request.param), request.param)


def test_task_model_writes_a_georeferenced_class_map(s1_scene, task_files, tmp_path, capsys):
    scene, data = s1_scene
    config, ckpt, backbone = task_files
    out = tmp_path / "pred.tif"
    args = ["infer", "-c", str(config), "--ckpt", str(ckpt), "--input", f"S1GRD={scene}", "--out", str(out),
            "--chip", "224", "--overlap", "32", "--batch-size", "4", "--confidence"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "chips 4/4 (100%)" in captured.err and "ETA" in captured.err and f"wrote {out}" in captured.out
    with rasterio.open(out) as dst:
        assert dst.crs == CRS_UTM and dst.transform == TRANSFORM and dst.count == 2
        classes = dst.read(1)
        tab10_blue, tab10_orange = (31, 119, 180), (255, 127, 14)  # the task palette of the PNG legends
        assert dst.colormap(1)[0][:3] == tab10_blue and dst.colormap(1)[1][:3] == tab10_orange
        assert dst.tags()["CLASS_1"] == "water"
    assert np.all(classes[:40, :50] == 255) and classes[40:].max() <= 2
    assert main(args) == 2  # no silent overwrite
    assert "exists; pass --overwrite" in capsys.readouterr().err
    if not backbone.endswith("_tim"):  # (once is enough)
        assert main([*args, "--overwrite"]) == 0


def test_generate_lulc_through_the_cli(s1_scene, tmp_path, monkeypatch):
    from terratim.tokenizers.build import build_tokenizer
    from terratim.tokenizers.model import TokenizerConfig

    build = terratim.build
    small = dataclasses.replace(TokenizerConfig.for_modality("LULC"), enc_dim=32, enc_depth=1, enc_heads=2,
                                dec_dim=32, dec_depth=1, dec_heads=2)

    def build_small(name, **kwargs):  # the real model, with a small random LULC tokenizer to keep CI fast
        return build(name, tokenizers={"LULC": build_tokenizer("LULC", config=small)}, **kwargs)

    monkeypatch.setattr(terratim, "build", build_small)
    scene, data = s1_scene
    out = tmp_path / "lulc.tif"
    assert main(["infer", "--model", "terramind_v1_tiny_generate", "--outputs", "LULC", "--input",
                 f"S1GRD={scene}", "--out", str(out), "--batch-size", "4", "--quiet"]) == 0
    with rasterio.open(out) as dst:
        lulc = dst.read(1)
        assert dst.transform == TRANSFORM and dst.dtypes == ("uint8",) and dst.nodata == 255
    assert lulc[40:].max() <= 9 and np.all(lulc[:40, :50] == 255)


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda s, o, t: ["--input", f"S2L2A={s}"], "S2L2A input .* has 2 bands, expected 12"),
        (lambda s, o, t: ["--input", f"S1GRD={s}", "--chip", "512"], "smaller than one chip"),
        (lambda s, o, t: ["--input", f"S1GRD={t / 'nope.tif'}"], "S1GRD input not found"),
        (lambda s, o, t: ["--input", f"{s}"], "expected MODALITY=PATH"),
        (lambda s, o, t: ["--input", f"SAR={s}"], "unknown modality 'SAR'"),
        (lambda s, o, t: ["--input", f"S1GRD={s}", "--input", f"S2L2A={o}"], "not co-registered"),
    ],
)
def test_bad_input_is_explained(s1_scene, tmp_path, capsys, make_args, message):
    scene, _ = s1_scene
    other = write_tif(tmp_path / "s2.tif", np.zeros((12, 260, 301), np.float32))
    args = ["infer", "--model", "terramind_v1_tiny", "--embeddings", "pixel", "--out", str(tmp_path / "o.tif"),
            *make_args(scene, other, tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("terratim infer: error:")
    import re

    assert re.search(message, err), err


def test_model_source_must_be_given(s1_scene, tmp_path, capsys):
    scene, _ = s1_scene
    assert main(["infer", "--input", f"S1GRD={scene}", "--out", str(tmp_path / "o.tif")]) == 2
    assert "name a model" in capsys.readouterr().err


def test_chip_embeddings_through_the_cli(s1_scene, tmp_path, capsys):
    scene, _ = s1_scene
    out = tmp_path / "emb.parquet"
    rc = main(["infer", "--model", "terramind_v1_tiny", "--embeddings", "chip", "--input", f"S1GRD={scene}",
               "--out", str(out), "--quiet"])
    try:
        import pyarrow.parquet as pq
    except ImportError:  # GeoParquet is optional: the error names the package to install
        assert rc == 2 and "pip install pyarrow" in capsys.readouterr().err
        return
    assert rc == 0
    table = pq.read_table(out)
    assert table.num_rows == 4 and len(table.column("embedding")[0]) == 192  # 2 x 2 chips, tiny D = 192
    assert b"geo" in table.schema.metadata


def interrupt_batch(monkeypatch, at: int) -> None:
    """Make the tile loop raise KeyboardInterrupt (as Ctrl-C does) at its ``at``-th batch."""
    from terratim.inference import engine

    original, calls = engine._Loop._run_batch, {"n": 0}

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(engine._Loop, "_run_batch", interrupted)


@pytest.fixture
def interrupted_run(tmp_path, monkeypatch, capsys):
    """A task model run over a 600-row scene, interrupted by Ctrl-C after output rows 0-255 were written."""
    config, ckpt = save_task(tmp_path, "terramind_v1_tiny")
    data = np.random.default_rng(1).normal(-12.0, 4.0, (2, 600, 260)).astype(np.float32)
    scene = write_tif(tmp_path / "tall.tif", data)
    common = ["infer", "-c", str(config), "--ckpt", str(ckpt), "--input", f"S1GRD={scene}", "--batch-size", "2",
              "--quiet"]
    out = tmp_path / "resumed.tif"
    with monkeypatch.context() as patch:
        interrupt_batch(patch, 4)  # one batch per chip row; rows 0-2 are done, so output rows 0-255 are on disk
        assert main([*common, "--out", str(out)]) == 130
    return {"common": common, "out": out, "scene": scene, "data": data, "ckpt": ckpt, "config": config,
            "err": capsys.readouterr().err}


def test_ctrl_c_says_how_to_resume_and_exits_130(interrupted_run):
    out, err = interrupted_run["out"], interrupted_run["err"]
    state = json.loads(progress_path(out).read_text())
    assert (state["panel"], state["rows_done"]) == (0, 256)  # the record matches what is on disk
    with rasterio.open(str(out) + ".partial") as partial:
        assert partial.read(1, window=((0, 256), (0, 260))).max() <= 2  # the recorded rows are there
    assert "panel 1 of 1, rows up to 256 done" in err
    *_, command, last = err.strip().splitlines()
    assert last == "terratim infer: interrupted"
    command = command.strip()
    config, ckpt, scene = (interrupted_run[k] for k in ("config", "ckpt", "scene"))
    assert command == (f"terratim infer --input S1GRD={scene} --out {out} --config {config} --ckpt {ckpt} "
                       "--batch-size 2 --quiet --resume")


def test_resume_after_an_interruption_matches_a_clean_run(interrupted_run, tmp_path, capsys):
    common, out = interrupted_run["common"], interrupted_run["out"]
    assert main([*common, "--out", str(tmp_path / "clean.tif")]) == 0
    assert main([*common, "--out", str(out)]) == 2 and "--resume" in capsys.readouterr().err
    assert main([*common, "--out", str(out), "--resume"]) == 0
    with rasterio.open(tmp_path / "clean.tif") as a, rasterio.open(out) as b:
        assert np.array_equal(a.read(), b.read())


def test_resume_refuses_an_input_rewritten_in_place(interrupted_run, capsys):
    scene, data = interrupted_run["scene"], interrupted_run["data"]
    size = scene.stat().st_size
    write_tif(scene, data[:, ::-1].copy())  # another scene of the same size at the same path
    assert scene.stat().st_size == size
    assert main([*interrupted_run["common"], "--out", str(interrupted_run["out"]), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"the S1GRD input {scene} has changed (same size, other content)" in err
    assert "without --resume and with --overwrite" in err and err.count("\n") == 1  # one line


def test_resume_refuses_a_changed_checkpoint(interrupted_run, capsys):
    ckpt = interrupted_run["ckpt"]
    state = torch.load(ckpt, weights_only=True)
    size = ckpt.stat().st_size
    for tensor in state["state_dict"].values():
        if tensor.is_floating_point():
            tensor.add_(0.01)
    torch.save(state, ckpt)  # the same model, trained a little further
    assert ckpt.stat().st_size == size
    assert main([*interrupted_run["common"], "--out", str(interrupted_run["out"]), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"the model checkpoint {ckpt.resolve()} has changed (same size, other content)" in err


def test_an_all_nodata_input_is_an_error_and_writes_nothing(tmp_path, capsys):
    scene = write_tif(tmp_path / "empty.tif", np.full((2, 260, 300), np.nan, np.float32), nodata=np.nan)
    out = tmp_path / "o.tif"
    args = ["infer", "--model", "terramind_v1_tiny", "--embeddings", "pixel", "--input", f"S1GRD={scene}",
            "--out", str(out), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    expected = (f"S1GRD input {scene} has no valid pixel: every pixel is nodata or NaN in every band; check the "
                "file, its nodata value and the window you cut")
    assert err == f"terratim infer: error: {expected}\n"
    assert list(tmp_path.iterdir()) == [scene]  # no output, no partial, no progress file


def edit_config(path, change) -> None:
    config = yaml.safe_load(path.read_text())
    change(config["model"]["init_args"], config["data"]["init_args"])
    path.write_text(yaml.safe_dump(config))


def infer_task(config, ckpt, scene, out) -> int:
    return main(["infer", "-c", str(config), "--ckpt", str(ckpt), "--input", f"S1GRD={scene}", "--out", str(out),
                 "--batch-size", "4", "--quiet"])


def test_a_config_that_contradicts_the_checkpoint_is_refused_naming_both_values(s1_scene, tmp_path, capsys):
    config, ckpt = save_task(tmp_path, "terramind_v1_tiny")  # trained on S1GRD, decoder_channels 16

    def contradict(model, data):
        model["model_args"]["decoder_channels"] = 32
        data["modalities"] = ["S1GRD", "S2L1C"]

    edit_config(config, contradict)
    assert infer_task(config, ckpt, s1_scene[0], tmp_path / "o.tif") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{config} does not match {ckpt} (the checkpoint wins" in err
    assert "model.init_args.model_args.decoder_channels is 32 in the config, 16 in the checkpoint" in err
    edit_config(config, lambda model, data: model["model_args"].update(decoder_channels=16))
    assert infer_task(config, ckpt, s1_scene[0], tmp_path / "o.tif") == 2
    err = capsys.readouterr().err
    assert 'data.init_args.modalities is ["S1GRD", "S2L1C"] in the config, but the checkpoint\'s model takes ' \
        '["S1GRD"]' in err
    assert "--input gave" not in err and "not a modality of this model" not in err


@pytest.mark.parametrize(
    ("typo", "message"),
    [
        (lambda m, d: m["model_args"].update(decoder_chanels=16),
         "model.init_args.model_args.decoder_chanels is not in the checkpoint's model_args (did you mean "
         "decoder_channels?)"),
        (lambda m, d: m.update(clas_names=["land", "water", "cloud"]),
         "model.init_args.clas_names is not an argument of SemanticSegmentationTask (did you mean class_names?)"),
        (lambda m, d: d.update(mean={"S1GRD": [0.0, 0.0]}),
         "data.init_args.mean is not an argument of GenericMultiModalDataModule (did you mean means?)"),
    ],
)
def test_a_typo_in_the_config_is_an_error(s1_scene, tmp_path, capsys, typo, message):
    config, ckpt = save_task(tmp_path, "terramind_v1_tiny")
    edit_config(config, typo)
    assert infer_task(config, ckpt, s1_scene[0], tmp_path / "o.tif") == 2
    assert message in capsys.readouterr().err


def test_the_checkpoint_supplies_what_the_config_leaves_out(s1_scene, tmp_path):
    """Modalities and model_args come from the checkpoint; a config that omits them still runs."""
    config, ckpt = save_task(tmp_path, "terramind_v1_tiny")

    def trim(model, data):
        del model["model_args"]["backbone_modalities"], model["model_args"]["decoder_channels"], data["modalities"]

    edit_config(config, trim)
    assert infer_task(config, ckpt, s1_scene[0], tmp_path / "o.tif") == 0
    with rasterio.open(tmp_path / "o.tif") as dst:
        assert dst.read(1)[40:].max() <= 2


def test_precision_auto_says_what_it_chose_and_bf16_stays_close(s1_scene, tmp_path, monkeypatch, capsys):
    from terratim import precision

    scene, _ = s1_scene
    config, ckpt = save_task(tmp_path, "terramind_v1_tiny")
    base = ["infer", "-c", str(config), "--ckpt", str(ckpt), "--input", f"S1GRD={scene}", "--batch-size", "4"]
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert main([*base, "--out", str(tmp_path / "auto.tif"), "--precision", "auto"]) == 0
    assert "precision auto -> fp32 (cpu has no native bf16)" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "fp32.tif")]) == 0
    assert main([*base, "--out", str(tmp_path / "bf16.tif"), "--precision", "bf16"]) == 0
    with rasterio.open(tmp_path / "auto.tif") as a, rasterio.open(tmp_path / "fp32.tif") as f:
        assert np.array_equal(a.read(1), f.read(1))  # auto fell back: the same fp32 run
        fp32 = f.read(1)
    with rasterio.open(tmp_path / "bf16.tif") as b:
        bf16 = b.read(1)
    assert np.array_equal(bf16 == 255, fp32 == 255) and (bf16 == fp32).mean() > 0.9
