"""Every command that takes a model runs offline on the bundled ``terramind_sim_micro*`` with no extra flags.

The hub is switched off (``HF_HUB_OFFLINE=1``) and any download attempt fails the test. Inputs are simulated
GeoTIFFs written by :func:`terratim.data.sim.write_dataset`.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

import terratim
from terratim.cli import main
from terratim.data.sim import SimConfig, write_dataset
from terratim.generation.generate import TerraMindGenerate


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No network: the hub is offline and a download attempt is an error; user errors raise (no exit status)."""
    import huggingface_hub

    def no_download(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args} {kwargs}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TERRATIM_DEBUG", "1")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)


@pytest.fixture(scope="module")
def sim_files(tmp_path_factory):
    """``{size: {modality: path}}`` of one simulated sample at 64 and 128 pixels."""
    files = {}
    for size in (64, 128):
        folder = tmp_path_factory.mktemp(f"sim{size}")
        (name,) = write_dataset(folder, 1, seed=3, config=SimConfig(size=size), modalities=["S1GRD", "DEM", "LULC"])
        files[size] = {m: folder / m / f"{name}.tif" for m in ("S1GRD", "DEM", "LULC")}
    return files


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".partial", ".progress.json")))


@pytest.mark.parametrize("size", [64, 128])
def test_generate_lulc_with_the_bundled_model(tmp_path, sim_files, size):
    """64 px runs in one pass; 128 px with ``--chip 64`` runs tiled through the scene engine."""
    out = tmp_path / "gen"
    assert main(["generate", "--model", "terramind_sim_micro_generate", "--pretrained", "--input",
                 f"S1GRD={sim_files[size]['S1GRD']}", "--output", "LULC", "--out", str(out), "--chip", "64",
                 "--temperature", "0"]) == 0
    with rasterio.open(out / "LULC.tif") as lulc:
        classes = lulc.read(1)
        assert classes.shape == (size, size) and lulc.dtypes[0] == "uint8"
        assert classes.max() < 10 and len(np.unique(classes)) > 1
    assert _leftovers(out) == [] and (out / "panel.png").is_file()


def test_generate_dem_is_refused_with_what_the_bundle_can_generate(tmp_path, sim_files):
    out = tmp_path / "gen"
    with pytest.raises(ValueError, match=r"cannot generate DEM: .*It can generate: LULC$"):
        main(["generate", "--model", "terramind_sim_micro_generate", "--pretrained", "--input",
              f"S1GRD={sim_files[64]['S1GRD']}", "--output", "DEM", "--out", str(out)])
    assert not out.exists()  # the failed run left no folder behind
    with pytest.raises(ValueError, match=r"terramind_sim_micro_tim cannot generate DEM"):
        main(["imagine", "--model", "terramind_sim_micro_tim", "--pretrained", "--input",
              f"S1GRD={sim_files[64]['S1GRD']}", "--tim", "DEM", "--out", str(out)])
    assert not out.exists()


def test_bundled_generator_reads_dem_and_lulc_inputs(tmp_path, sim_files):
    files = sim_files[64]
    out = tmp_path / "gen"
    assert main(["generate", "--model", "terramind_sim_micro_generate", "--pretrained", "--input",
                 f"S1GRD={files['S1GRD']}", "--input", f"DEM={files['DEM']}", "--output", "LULC",
                 "--out", str(out)]) == 0
    assert (out / "LULC.tif").is_file()


def test_imagine_uses_the_bundled_lulc_tokenizer(tmp_path, sim_files):
    out = tmp_path / "tim"
    assert main(["imagine", "--model", "terramind_sim_micro_tim", "--pretrained", "--input",
                 f"S1GRD={sim_files[64]['S1GRD']}", "--out", str(out)]) == 0
    with rasterio.open(out / "imagined_LULC.tif") as lulc:
        assert lulc.read(1).shape == (64, 64) and lulc.read(1).max() < 10
    assert (out / "imagined.png").is_file()


def test_embed_with_the_bundled_backbone(tmp_path, sim_files, capsys):
    out = tmp_path / "emb.npy"
    assert main(["embed", "--model", "terramind_sim_micro", "--pretrained", "--input",
                 f"S1GRD={sim_files[64]['S1GRD']}", "--repeat", "1", "--out", str(out)]) == 0
    assert np.load(out).shape == (1, 16, 64) and np.isfinite(np.load(out)).all()
    assert "4 layer outputs" in capsys.readouterr().out


def test_independent_outputs_reaches_the_model(tmp_path, sim_files, monkeypatch):
    built = []
    build = terratim.build

    def recording_build(name, **kwargs):
        model = build(name, **kwargs)
        built.append(model)
        return model

    monkeypatch.setattr(terratim, "build", recording_build)
    s1 = f"S1GRD={sim_files[64]['S1GRD']}"
    for flags, chained in (([], True), (["--independent-outputs"], False)):
        out = tmp_path / f"gen{chained}"
        assert main(["generate", "--model", "terramind_sim_micro_generate", "--pretrained", "--input", s1,
                     "--output", "LULC", "--out", str(out), *flags]) == 0
        generators = [m for m in built if isinstance(m, TerraMindGenerate)]
        assert generators[-1].chain is chained
        out = tmp_path / f"tim{chained}"
        assert main(["imagine", "--model", "terramind_sim_micro_tim", "--pretrained", "--input", s1,
                     "--out", str(out), *flags]) == 0
        assert built[-2].generator.chain is chained  # the TiM model, built before its LULC tokenizer


def test_failed_tiled_generation_leaves_no_partial_files_or_folders(tmp_path, sim_files, monkeypatch):
    calls = []
    forward = TerraMindGenerate.forward

    def failing_forward(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory (simulated)")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(TerraMindGenerate, "forward", failing_forward)
    out = tmp_path / "deep" / "gen"
    with pytest.raises(RuntimeError, match="simulated"):
        main(["generate", "--model", "terramind_sim_micro_generate", "--pretrained", "--input",
              f"S1GRD={sim_files[128]['S1GRD']}", "--output", "LULC", "--out", str(out), "--chip", "64",
              "--batch-size", "1"])
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []  # neither partial files nor the folders this run made


@pytest.mark.parametrize("modality", ["LULC", "DEM"])
def test_reconstruct_with_a_bundled_tokenizer(sim_files, tmp_path, modality, capsys):
    out = tmp_path / "out"
    argv = ["reconstruct", "--modality", modality, "--input", str(sim_files[64][modality]), "--out", str(out),
            "--model", f"terramind_sim_micro_tokenizer_{modality.lower()}", "--pretrained", "--steps", "2"]
    assert main(argv) == 0
    assert "bundled" in capsys.readouterr().out
    with rasterio.open(out / f"{sim_files[64][modality].stem}_{modality}_reconstruction.tif") as src:
        recon = src.read(1)
    assert recon.shape == (64, 64) and np.isfinite(recon).all()


def test_reconstruct_refuses_a_tokenizer_of_another_modality(sim_files, tmp_path):
    argv = ["reconstruct", "--modality", "DEM", "--input", str(sim_files[64]["DEM"]), "--out", str(tmp_path),
            "--model", "terramind_sim_micro_tokenizer_lulc", "--pretrained"]
    with pytest.raises(ValueError, match="is a LULC tokenizer, but --modality is DEM"):
        main(argv)
