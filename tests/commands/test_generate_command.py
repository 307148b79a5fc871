"""``terratim generate`` end to end on real samples, with random tiny weights and small tokenizers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

import terratim
from terratim.cli import main
from terratim.tokenizers.build import save_tokenizer
from terratim.tokenizers.model import TokenizerConfig

DATA = Path(__file__).parents[1] / "data"
S2 = DATA / "terramesh_examples" / "S2L2A" / "38D_378R_2_3.tif"
S1_512 = sorted((DATA / "sen1floods11" / "S1Hand").glob("*.tif"))[0]
SMALL = dict(enc_dim=64, enc_depth=1, enc_heads=2, dec_dim=64, dec_depth=1, dec_heads=2)


@pytest.fixture(autouse=True)
def errors_raise(monkeypatch):
    """User errors propagate as exceptions (the CLI otherwise prints one line and returns 2)."""
    monkeypatch.setenv("TERRATIM_DEBUG", "1")


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizers")
    lulc = terratim.build("terramind_v1_tokenizer_lulc", config=TokenizerConfig.for_modality("LULC", **SMALL))
    unet = dict(channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_ds=(2,), num_groups=8)
    dem = terratim.build("terramind_v1_tokenizer_dem", config=TokenizerConfig.for_modality("DEM", unet=unet, **SMALL))
    return {"LULC": save_tokenizer(lulc, folder / "lulc.safetensors"),
            "DEM": save_tokenizer(dem, folder / "dem.safetensors")}


def test_generate_lulc_and_dem_from_s2(tmp_path, tiny_checkpoint, tokenizers):
    out = tmp_path / "gen"
    args = ["generate", "--input", f"S2L2A={S2}", "--output", "LULC,DEM", "--ckpt", str(tiny_checkpoint),
            "--tokenizer", f"LULC={tokenizers['LULC']}", "--tokenizer", f"DEM={tokenizers['DEM']}",
            "--out", str(out), "--steps", "2", "--seed", "1"]
    assert main(args) == 0
    with rasterio.open(S2) as src, rasterio.open(out / "LULC.tif") as lulc, rasterio.open(out / "DEM.tif") as dem:
        assert lulc.crs == src.crs and lulc.transform == src.transform and dem.crs == src.crs
        classes = lulc.read(1)
        assert lulc.dtypes[0] == "uint8" and classes.shape == (224, 224) and classes.max() < 10
        assert lulc.colormap(1)[1][:3] == (31, 95, 209)
        heights = dem.read(1)
        # standardized outputs are clipped to [-1, 1] and de-standardized with the DEM statistics
        mean, std = terratim.MODALITIES["DEM"].mean[0], terratim.MODALITIES["DEM"].std[0]
        assert heights.dtype == np.float32 and np.all(np.abs(heights - mean) <= std * 1.0001)
    assert (out / "panel.png").stat().st_size > 10_000
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(args)
    assert main(args + ["--overwrite"]) == 0


def test_generate_tiles_a_512_scene(tmp_path, tiny_checkpoint, tokenizers):
    out = tmp_path / "gen"
    args = ["generate", "--input", f"S1GRD={S1_512}", "--output", "LULC", "--ckpt", str(tiny_checkpoint),
            "--tokenizer", f"LULC={tokenizers['LULC']}", "--out", str(out), "--temperature", "0"]
    assert main(args) == 0
    with rasterio.open(S1_512) as src, rasterio.open(out / "LULC.tif") as lulc:
        assert (lulc.width, lulc.height) == (512, 512)
        assert lulc.crs == src.crs and lulc.transform == src.transform
        assert lulc.read(1).max() < 10 or lulc.nodata == 255


def test_generate_refuses_s2l1c_output(tmp_path, tiny_checkpoint, tokenizers):
    with pytest.raises(ValueError, match="S2L1C cannot be generated"):
        main(["generate", "--input", f"S2L2A={S2}", "--output", "S2L1C", "--ckpt", str(tiny_checkpoint),
              "--tokenizer", f"LULC={tokenizers['LULC']}", "--out", str(tmp_path), "--pretrained"])


class Recorded(Exception):
    """Stops a command once the model has been asked to generate."""


def record_settings(monkeypatch) -> list:
    """Patch generation so that it records the model's settings and stops."""
    from terratim.generation.generate import TerraMindGenerate

    seen = []

    def generate_tokens(self, *args, **kwargs):
        seen.append(self.settings)
        raise Recorded

    monkeypatch.setattr(TerraMindGenerate, "generate_tokens", generate_tokens)
    return seen


SAMPLING_FLAGS = ["--scheme", "maskgit", "--decoding-steps", "3", "--temperature", "0.5", "--top-k", "0.25",
                  "--top-p", "0.9", "--token-schedule", "cosine", "--temperature-schedule", "onex:0.1:2",
                  "--cfg-scale", "1.5", "--independent-outputs"]
SAMPLING_SETTINGS = dict(scheme="maskgit", decoding_steps=3, temperature=0.5, top_k=0.25, top_p=0.9,
                         token_schedule="cosine", temperature_schedule="onex:0.1:2", cfg_scale=1.5, chain=False)


def test_sampling_flags_reach_the_model(tmp_path, tiny_checkpoint, tokenizers, monkeypatch):
    from terratim.generation.settings import GenerationSettings

    seen = record_settings(monkeypatch)
    common = ["generate", "--input", f"S2L2A={S2}", "--output", "LULC", "--ckpt", str(tiny_checkpoint),
              "--tokenizer", f"LULC={tokenizers['LULC']}", "--out", str(tmp_path / "gen")]
    with pytest.raises(Recorded):
        main([*common, *SAMPLING_FLAGS, "--steps", "2"])
    with pytest.raises(Recorded):
        main(common)
    assert seen == [GenerationSettings(**SAMPLING_SETTINGS, timesteps=2), GenerationSettings(timesteps=10)]
    assert not (tmp_path / "gen" / "LULC.tif").exists()


def test_infer_takes_the_sampling_flags_for_generation_models_only(tmp_path, tiny_checkpoint, monkeypatch):
    from terratim.generation.settings import GenerationSettings

    built = []
    monkeypatch.setattr(terratim, "build", lambda name, **kwargs: built.append(kwargs["settings"]) or 1 / 0)
    common = ["infer", "--input", f"S1GRD={S1_512}", "--out", str(tmp_path / "o.tif"), "--quiet"]
    with pytest.raises(ZeroDivisionError):
        main([*common, "--model", "terramind_v1_tiny_generate", "--outputs", "LULC", *SAMPLING_FLAGS,
              "--timesteps", "4"])
    assert built == [GenerationSettings(**SAMPLING_SETTINGS, timesteps=4)]
    with pytest.raises(ValueError, match="generation options .* apply only to a \\*_generate --model"):
        main([*common, "--model", "terramind_v1_tiny", "--embeddings", "pixel", "--temperature", "0"])


# ------------------------------------------------------------------------------------ outputs and missing bands
HLS_BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]


def hls_and_mean_filled(folder: Path, sample: Path = S2) -> tuple[Path, Path]:
    """Float32 copies of a real S2L2A sample: its six HLS-like bands, and all 12 with the others at their mean."""
    s2 = terratim.MODALITIES["S2L2A"]
    with rasterio.open(sample) as src:
        data, profile = src.read().astype(np.float32), src.profile
    profile.update(dtype="float32")
    full = data.copy()
    for band in s2.missing_bands(HLS_BANDS):
        full[s2.band_index(band)] = s2.mean[s2.band_index(band)]
    paths = folder / "hls.tif", folder / "mean_filled.tif"
    for path, array in zip(paths, (data[[s2.band_index(b) for b in HLS_BANDS]], full)):
        with rasterio.open(path, "w", **{**profile, "count": array.shape[0]}) as dst:
            dst.write(array)
    return paths


def test_output_order_maps_to_the_per_call_outputs(tmp_path, tiny_checkpoint, tokenizers, monkeypatch):
    from terratim.generation.generate import TerraMindGenerate

    seen = []

    def generate_tokens(self, *args, **kwargs):
        seen.append((list(self.outputs), kwargs.get("outputs")))
        raise Recorded

    monkeypatch.setattr(TerraMindGenerate, "generate_tokens", generate_tokens)
    with pytest.raises(Recorded):
        main(["generate", "--input", f"S2L2A={S2}", "--output", "dem,LULC", "--ckpt", str(tiny_checkpoint),
              "--tokenizer", f"LULC={tokenizers['LULC']}", "--tokenizer", f"DEM={tokenizers['DEM']}",
              "--out", str(tmp_path / "gen")])
    assert seen == [(["DEM", "LULC"], ["DEM", "LULC"])]
    with pytest.raises(ValueError, match=r"--output names \['LULC'\] more than once"):
        main(["generate", "--input", f"S2L2A={S2}", "--output", "LULC,lulc", "--ckpt", str(tiny_checkpoint),
              "--out", str(tmp_path / "gen")])


def test_missing_bands_filled_give_the_map_of_the_mean_filled_file(tmp_path, tiny_checkpoint, tokenizers):
    hls, mean_filled = hls_and_mean_filled(tmp_path)
    common = ["generate", "--output", "LULC", "--ckpt", str(tiny_checkpoint), "--tokenizer",
              f"LULC={tokenizers['LULC']}", "--temperature", "0"]
    with pytest.warns(UserWarning, match="S2L2A: bands COASTAL_AEROSOL, .* filled with their pretraining mean"):
        assert main([*common, "--input", f"S2L2A={hls}", "--out", str(tmp_path / "hls"),
                     "--bands", f"S2L2A={','.join(HLS_BANDS)}", "--fill-missing-bands"]) == 0
    assert main([*common, "--input", f"S2L2A={mean_filled}", "--out", str(tmp_path / "full")]) == 0
    with rasterio.open(tmp_path / "hls" / "LULC.tif") as a, rasterio.open(tmp_path / "full" / "LULC.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))  # class maps from the same computation
    assert (tmp_path / "hls" / "panel.png").stat().st_size > 10_000


@pytest.mark.parametrize("flags, message", [
    ([], r"S2L2A input .*hls.tif has 6 bands, expected 12; .* --bands S2L2A=BAND,\.\.\. .* --fill-missing-bands"),
    (["--bands", "S2L2A=BLUE,GREEN,RED,NIR_NARROW,SWIR_1,SWIR_2"], r"are missing .* fill_missing_bands='mean'"),
    (["--bands", "S2L2A=BLUE,GREEN,RED,NIR_NARROW,SWIR_1,B10", "--fill-missing-bands"],
     r"S2L2A has no band 'B10'; pretrained bands are \['COASTAL_AEROSOL', 'BLUE'"),
    (["--fill-missing-bands"], r"--fill-missing-bands needs --bands"),
    (["--bands", "S2L2A"], r"--bands 'S2L2A': expected MODALITY=BAND,BAND"),
])
def test_bad_band_options_fail_before_any_output(tmp_path, tiny_checkpoint, flags, message):
    hls, _ = hls_and_mean_filled(tmp_path)
    with pytest.raises(ValueError, match=message):
        main(["generate", "--input", f"S2L2A={hls}", "--output", "LULC", "--ckpt", str(tiny_checkpoint),
              "--pretrained", "--out", str(tmp_path / "gen"), *flags])
    assert not (tmp_path / "gen").exists()


def test_infer_takes_the_band_fill_for_generation_models_only(tmp_path, tiny_checkpoint, monkeypatch):
    hls, _ = hls_and_mean_filled(tmp_path)
    built = []
    monkeypatch.setattr(terratim, "build", lambda name, **kwargs: built.append(kwargs) or 1 / 0)
    common = ["infer", "--input", f"S2L2A={hls}", "--out", str(tmp_path / "o.tif"), "--quiet"]
    bands = ["--bands", f"S2L2A={','.join(HLS_BANDS)}", "--fill-missing-bands"]
    with pytest.warns(UserWarning, match="S2L2A: bands COASTAL_AEROSOL"), pytest.raises(ZeroDivisionError):
        main([*common, "--model", "terramind_v1_tiny_generate", "--outputs", "LULC", *bands])
    assert built[0]["bands"] == {"S2L2A": HLS_BANDS} and built[0]["fill_missing_bands"] == "mean"
    with pytest.raises(ValueError, match="--bands and --fill-missing-bands apply only to a \\*_generate --model"):
        main([*common, "--model", "terramind_v1_tiny", "--embeddings", "pixel", *bands])


def test_missing_bands_in_a_tiled_scene(tmp_path, tiny_checkpoint, tokenizers):
    """A scene that is not one square chip goes through the tiling engine, which reads the six bands."""
    hls, _ = hls_and_mean_filled(tmp_path)
    with rasterio.open(hls) as src:
        profile, data = src.profile, src.read()
    wide = np.concatenate([data, data[:, :, :32]], axis=2)  # (6, 224, 256)
    with rasterio.open(tmp_path / "wide.tif", "w", **{**profile, "width": 256}) as dst:
        dst.write(wide)
    out = tmp_path / "gen"
    with pytest.warns(UserWarning, match="results degrade"):
        assert main(["generate", "--input", f"S2L2A={tmp_path / 'wide.tif'}", "--output", "LULC", "--ckpt",
                     str(tiny_checkpoint), "--tokenizer", f"LULC={tokenizers['LULC']}", "--out", str(out),
                     "--bands", f"S2L2A={','.join(HLS_BANDS)}", "--fill-missing-bands", "--temperature", "0"]) == 0
    with rasterio.open(out / "LULC.tif") as lulc:
        assert (lulc.width, lulc.height) == (256, 224) and lulc.read(1).max() < 10
