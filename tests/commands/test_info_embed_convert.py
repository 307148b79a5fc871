"""Smoke tests of the real entry point: info, embed, convert."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import terratim
from terratim.cli import main


@pytest.fixture(autouse=True)
def errors_raise(monkeypatch):
    """User errors propagate as exceptions (the CLI otherwise prints one line and returns 2)."""
    monkeypatch.setenv("TERRATIM_DEBUG", "1")


def test_info_lists_models_and_modalities(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "terramind_v1_base_tim" in out and "COASTAL_AEROSOL" in out and "1390.458" in out
    assert main(["info", "--modality", "s1grd"]) == 0
    assert "VV" in capsys.readouterr().out


def test_embed_bundled_sample(tmp_path, capsys):
    out_file = tmp_path / "emb.npy"
    assert main(["embed", "--repeat", "1", "--out", str(out_file)]) == 0
    text = capsys.readouterr().out
    assert "12 layer outputs, each (1, 196, 192)" in text and "ms per sample" in text
    assert np.load(out_file).shape == (1, 196, 192)
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(["embed", "--repeat", "1", "--out", str(out_file)])


def test_embed_wrong_band_count_names_file_and_modality(tmp_path):
    from terratim.samples import terramesh_file

    with pytest.raises(ValueError, match=r"S2L2A file .*S1RTC.*has 2 bands, expected 12"):
        main(["embed", "--input", f"S2L2A={terramesh_file('S1RTC')}"])


def test_convert_round_trip(tmp_path, tiny_checkpoint, capsys):
    dst = tmp_path / "tiny.safetensors"
    assert main(["convert", str(tiny_checkpoint), str(dst)]) == 0
    assert "TerraMind tiny" in capsys.readouterr().out
    assert (tmp_path / "tiny.json").is_file()
    a = terratim.build("terramind_v1_tiny", modalities=["S1GRD"], ckpt_path=str(tiny_checkpoint)).eval()
    b = terratim.build("terramind_v1_tiny", modalities=["S1GRD"], ckpt_path=str(dst)).eval()
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x)[-1], b(x)[-1])
    with pytest.raises(FileExistsError):
        main(["convert", str(tiny_checkpoint), str(dst)])


def test_converted_file_builds_without_a_size_name(tmp_path, tiny_checkpoint):
    from terratim.registry import build_from_file
    from terratim.weights import CheckpointError

    dst = tmp_path / "tiny.safetensors"
    assert main(["convert", str(tiny_checkpoint), str(dst)]) == 0
    named = terratim.build("terramind_v1_tiny", modalities=["S1GRD"], ckpt_path=str(tiny_checkpoint)).eval()
    alone = build_from_file(dst, "backbone", modalities=["S1GRD"]).eval()
    x = torch.randn(1, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(alone(x)[-1], named(x)[-1], rtol=1e-5, atol=1e-5)  # same weights, same kernels
    with pytest.raises(CheckpointError, match=r"tiny\.json describes .*dim=192.*small is dim=384"):
        terratim.build("terramind_v1_small", modalities=["S1GRD"], ckpt_path=str(dst))
