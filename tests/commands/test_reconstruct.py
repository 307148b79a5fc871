"""``terratim reconstruct`` on real TerraMesh samples with small random-weight tokenizers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from terratim.cli import main
from terratim.data.geotiff import read_geotiff
from terratim.tokenizers import TokenizerConfig, build_tokenizer, save_tokenizer

EXAMPLES = Path(__file__).parents[1] / "data" / "terramesh_examples"
SAMPLE = "38D_378R_2_3"
TINY = dict(
    enc_dim=32, enc_depth=1, enc_heads=2, dec_dim=32, dec_depth=1, dec_heads=2,
    unet={"channels": 32, "channel_mult": (1, 1, 2, 2), "num_res_blocks": 1, "attention_ds": (4, 8)},
)


@pytest.fixture(autouse=True)
def errors_raise(monkeypatch):
    """User errors propagate as exceptions (the CLI otherwise prints one line and returns 2)."""
    monkeypatch.setenv("TERRATIM_DEBUG", "1")


def _checkpoint(tmp_path: Path, modality: str) -> Path:
    torch.manual_seed(0)
    tok = build_tokenizer(modality, config=TokenizerConfig.for_modality(modality, **TINY))
    with torch.no_grad():
        tok.decoder.out[-1].bias.fill_(0.1) if modality != "LULC" else None  # a non-zero output
    return save_tokenizer(tok, tmp_path / f"tiny_{modality}.safetensors")


@pytest.mark.parametrize("modality", ["DEM", "S1RTC", "LULC"])
def test_reconstruct_writes_georeferenced_tif_and_png(tmp_path, modality, capsys):
    source = EXAMPLES / modality / f"{SAMPLE}.tif"
    out = tmp_path / "out"
    argv = ["reconstruct", "--modality", modality.lower(), "--input", str(source), "--out", str(out),
            "--steps", "2", "--ckpt", str(_checkpoint(tmp_path, modality))]
    assert main(argv) == 0
    tif = out / f"{SAMPLE}_{modality}_reconstruction.tif"
    png = out / f"{SAMPLE}_{modality}_reconstruction.png"
    assert f"wrote {tif}" in capsys.readouterr().out
    original, recon = read_geotiff(source), read_geotiff(tif)
    assert recon.data.shape == original.data.shape
    assert recon.profile["crs"] == original.profile["crs"]
    assert recon.profile["transform"] == original.profile["transform"]
    if modality == "LULC":
        assert recon.profile["dtype"] == "uint8" and set(np.unique(recon.data)) <= set(range(10))
    else:
        from terratim.modalities import MODALITIES

        mod = MODALITIES[modality]
        lo = np.array(mod.mean) - np.array(mod.std)
        hi = np.array(mod.mean) + np.array(mod.std)
        per_band = recon.data.reshape(mod.num_bands, -1)
        assert (per_band.min(1) >= lo - 1e-3).all() and (per_band.max(1) <= hi + 1e-3).all()  # clipped x0
    from matplotlib.image import imread

    image = imread(png)
    assert image.shape[1] > 2 * 224 and image.std() > 0.05  # two readable panels, not a blank figure
    with pytest.raises(FileExistsError, match="exists; pass --overwrite"):
        main(argv)
    assert main([*argv, "--overwrite"]) == 0


def test_reconstruct_bad_arguments(tmp_path):
    dem = str(EXAMPLES / "DEM" / f"{SAMPLE}.tif")
    with pytest.raises(ValueError, match="S2L1C has no tokenizer"):
        main(["reconstruct", "--modality", "S2L1C", "--input", dem, "--out", str(tmp_path)])
    with pytest.raises(KeyError, match="unknown modality"):
        main(["reconstruct", "--modality", "nope", "--input", dem, "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="has 1 bands, expected 2"):
        main(["reconstruct", "--modality", "S1GRD", "--input", dem, "--out", str(tmp_path),
              "--ckpt", str(_checkpoint(tmp_path, "S1GRD"))])
