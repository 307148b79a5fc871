"""``terratim imagine`` on a real Sen1Floods11 S1 chip, random tiny weights, a small LULC tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio

import terratim
from terratim.cli import main
from terratim.tokenizers.build import save_tokenizer
from terratim.tokenizers.model import TokenizerConfig

S1 = Path(__file__).parents[1] / "data" / "terramesh_examples" / "S1RTC" / "38D_378R_2_3.tif"


@pytest.fixture(autouse=True)
def errors_raise(monkeypatch):
    """User errors propagate as exceptions (the CLI otherwise prints one line and returns 2)."""
    monkeypatch.setenv("TERRATIM_DEBUG", "1")


@pytest.fixture(scope="module")
def lulc_tokenizer(tmp_path_factory):
    config = TokenizerConfig.for_modality("LULC", enc_dim=64, enc_depth=1, enc_heads=2, dec_dim=64, dec_depth=1,
                                          dec_heads=2)
    tokenizer = terratim.build("terramind_v1_tokenizer_lulc", config=config)
    return save_tokenizer(tokenizer, tmp_path_factory.mktemp("tok") / "lulc.safetensors")


def test_imagine_writes_a_georeferenced_land_cover_map(tmp_path, tiny_checkpoint, lulc_tokenizer):
    args = ["imagine", "--input", f"S1RTC={S1}", "--tim", "LULC", "--ckpt", str(tiny_checkpoint),
            "--tokenizer", f"LULC={lulc_tokenizer}", "--out", str(tmp_path)]
    assert main(args) == 0
    with rasterio.open(S1) as src, rasterio.open(tmp_path / "imagined_LULC.tif") as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert out.read(1).shape == (224, 224) and out.read(1).max() < 10
    assert (tmp_path / "imagined.png").stat().st_size > 10_000
    with pytest.raises(FileExistsError):
        main(args)


def test_imagine_needs_a_tokenizer_to_decode(tmp_path, tiny_checkpoint):
    with pytest.raises(SystemExit, match="no tokenizer for \\['LULC'\\]"):
        main(["imagine", "--input", f"S1RTC={S1}", "--ckpt", str(tiny_checkpoint), "--out", str(tmp_path)])


def test_sampling_flags_reach_the_tim_generator(tmp_path, tiny_checkpoint, lulc_tokenizer, monkeypatch):
    from terratim.generation.generate import TerraMindGenerate
    from terratim.generation.settings import GenerationSettings

    seen = []
    monkeypatch.setattr(TerraMindGenerate, "generate_tokens", lambda self, *a, **k: seen.append(self.settings) or {})
    common = ["imagine", "--input", f"S1RTC={S1}", "--ckpt", str(tiny_checkpoint), "--tokenizer",
              f"LULC={lulc_tokenizer}", "--out", str(tmp_path)]
    flags = ["--scheme", "maskgit", "--decoding-steps", "2", "--temperature", "0.7", "--top-k", "5", "--top-p", "0.5",
             "--token-schedule", "cosine", "--temperature-schedule", "linear", "--cfg-scale", "2",
             "--independent-outputs", "--steps", "3"]
    for args in ([*common, *flags], common):
        with pytest.raises(KeyError):  # no tokens come back from the patched generator
            main(args)
    assert seen == [GenerationSettings(scheme="maskgit", decoding_steps=2, temperature=0.7, top_k=5, top_p=0.5,
                                       token_schedule="cosine", temperature_schedule="linear", cfg_scale=2.0,
                                       chain=False, timesteps=3),
                    GenerationSettings(temperature=0.0, timesteps=10)]


S2 = Path(__file__).parents[1] / "data" / "terramesh_examples" / "S2L2A" / "38D_378R_2_3.tif"
HLS_BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]


def test_output_is_an_alias_of_tim_and_keeps_its_order(tmp_path, tiny_checkpoint, lulc_tokenizer, monkeypatch):
    from terratim.generation.generate import TerraMindGenerate

    seen = []
    monkeypatch.setattr(TerraMindGenerate, "generate_tokens",
                        lambda self, *a, **k: seen.append((list(self.outputs), k.get("outputs"))) or {})
    monkeypatch.setattr("terratim.commands.imagine.build_tokenizers", lambda args, names: {})
    with pytest.raises(KeyError):  # no tokens come back from the patched generator
        main(["imagine", "--input", f"S1RTC={S1}", "--output", "ndvi,LULC", "--ckpt", str(tiny_checkpoint),
              "--out", str(tmp_path)])
    assert seen == [(["NDVI", "LULC"], ["NDVI", "LULC"])]


def test_imagine_fills_missing_bands_like_a_mean_filled_file(tmp_path, tiny_checkpoint, lulc_tokenizer):
    import numpy as np

    s2 = terratim.MODALITIES["S2L2A"]
    with rasterio.open(S2) as src:
        data, profile = src.read().astype(np.float32), {**src.profile, "dtype": "float32"}
    full = data.copy()
    for band in s2.missing_bands(HLS_BANDS):
        full[s2.band_index(band)] = s2.mean[s2.band_index(band)]
    hls = data[[s2.band_index(b) for b in HLS_BANDS]]
    for name, array in (("hls.tif", hls), ("full.tif", full)):
        with rasterio.open(tmp_path / name, "w", **{**profile, "count": array.shape[0]}) as dst:
            dst.write(array)
    common = ["imagine", "--tim", "LULC", "--ckpt", str(tiny_checkpoint), "--tokenizer", f"LULC={lulc_tokenizer}"]
    with pytest.warns(UserWarning, match="S2L2A: bands COASTAL_AEROSOL, .* results degrade"):
        assert main([*common, "--input", f"S2L2A={tmp_path / 'hls.tif'}", "--out", str(tmp_path / "a"),
                     "--bands", f"S2L2A={','.join(HLS_BANDS)}", "--fill-missing-bands"]) == 0
    assert main([*common, "--input", f"S2L2A={tmp_path / 'full.tif'}", "--out", str(tmp_path / "b")]) == 0
    with rasterio.open(tmp_path / "a" / "imagined_LULC.tif") as a, \
            rasterio.open(tmp_path / "b" / "imagined_LULC.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))  # class maps from the same computation
    with pytest.raises(ValueError, match=r"has 6 bands, expected 12; .* --bands S2L2A=BAND"):
        main([*common, "--input", f"S2L2A={tmp_path / 'hls.tif'}", "--out", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()
