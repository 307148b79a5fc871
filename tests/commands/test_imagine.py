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
                                          dec_heads=2)  # fmt: skip
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
              f"LULC={lulc_tokenizer}", "--out", str(tmp_path)]  # fmt: skip
    flags = ["--scheme", "maskgit", "--decoding-steps", "2", "--temperature", "0.7", "--top-k", "5", "--top-p", "0.5",
             "--token-schedule", "cosine", "--temperature-schedule", "linear", "--cfg-scale", "2",
             "--independent-outputs", "--steps", "3"]  # fmt: skip
    for args in ([*common, *flags], common):
        with pytest.raises(KeyError):  # no tokens come back from the patched generator
            main(args)
    assert seen == [GenerationSettings(scheme="maskgit", decoding_steps=2, temperature=0.7, top_k=5, top_p=0.5,
                                       token_schedule="cosine", temperature_schedule="linear", cfg_scale=2.0,
                                       chain=False, timesteps=3),
                    GenerationSettings(temperature=0.0, timesteps=10)]  # fmt: skip
