"""Registry builders, strict loading of official-layout files, converted files with their config, offline hub."""

from __future__ import annotations

import pytest
import torch
from tokenizer_helpers import randomize, tiny_config

import terratim
from terratim.tokenizers import TokenizerConfig, build_tokenizer, save_tokenizer
from terratim.weights import CheckpointError

NAMES = [f"terramind_v1_tokenizer_{m}" for m in ("s2l2a", "s1grd", "s1rtc", "dem", "lulc", "ndvi")]


def test_all_tokenizers_are_registered():
    assert set(NAMES) <= set(terratim.list_models())
    assert "diffusion" in terratim.registry.describe_models()["terramind_v1_tokenizer_dem"]


@pytest.mark.parametrize(
    ("modality", "encoder_params"), [("S2L2A", 92_335_104), ("S1GRD", 90_369_024), ("LULC", 91_941_888)]
)
def test_released_encoder_sizes(modality, encoder_params):
    with torch.device("meta"):
        tok = build_tokenizer(modality)
    assert sum(p.numel() for p in tok.encoder.parameters()) == encoder_params
    assert tok.quant_proj.weight.shape == (5, 768, 1, 1)


def _official_layout_file(tmp_path, modality="DEM"):
    tok = randomize(build_tokenizer(modality, config=tiny_config(modality)))
    randomize(tok.decoder, seed=1)
    path = tmp_path / f"TerraMind_Tokenizer_{modality}.pt"
    torch.save(tok.state_dict(), path)  # flat state dict, official key names
    return tok, path


def test_strict_official_layout_round_trip(tmp_path):
    tok, path = _official_layout_file(tmp_path)
    loaded = terratim.build("terramind_v1_tokenizer_dem", ckpt_path=path, config=tiny_config("DEM"))
    assert not loaded.has_decoder
    x = torch.randn(1, 1, 32, 32)
    assert torch.equal(loaded.latents(x), tok.latents(x))
    noise = torch.randn(1, 1, 32, 32)
    assert torch.equal(loaded.decode_tokens(tok.encode(x)[1], noise=noise, timesteps=2),
                       tok.decode_tokens(tok.encode(x)[1], noise=noise, timesteps=2))  # fmt: skip


def test_missing_unexpected_and_misshaped_keys_are_reported(tmp_path):
    tok, path = _official_layout_file(tmp_path)
    state = torch.load(path)
    del state["quant_proj.bias"]
    state["encoder.extra"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"(?s)missing \(1\).*quant_proj.bias.*unexpected \(1\)"):
        build_tokenizer("DEM", ckpt_path=path, config=tiny_config("DEM"))
    state = tok.state_dict()
    state["decoder.out.2.weight"] = torch.zeros(3, 32, 3, 3)
    torch.save(state, path)
    with pytest.raises(
        CheckpointError, match=r"(?s)decoder does not fit.*decoder.out.2.weight"
    ):  # checked at build, not at first use
        build_tokenizer("DEM", ckpt_path=path, config=tiny_config("DEM"))


def test_converted_file_carries_its_config(tmp_path):
    tok, _ = _official_layout_file(tmp_path, "LULC")
    path = save_tokenizer(tok, tmp_path / "lulc.safetensors")
    assert path.with_suffix(".json").is_file()
    loaded = build_tokenizer("LULC", ckpt_path=path)  # tiny architecture read from lulc.json
    assert loaded.config == tok.config
    ids = torch.randint(0, 10, (1, 32, 32))
    assert torch.equal(loaded(ids), tok(ids))
    assert TokenizerConfig.from_dict(tok.config.to_dict()) == tok.config


def test_pretrained_offline_raises_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError, match="TerraMind_Tokenizer_DEM.pt.*ckpt_path"):
        terratim.build("terramind_v1_tokenizer_dem", pretrained=True)


def test_wrong_modality_or_config_raise():
    with pytest.raises(ValueError, match="no TerraMind v1 image tokenizer"):
        build_tokenizer("S2L1C")
    with pytest.raises(ValueError, match="config is for DEM"):
        build_tokenizer("NDVI", config=tiny_config("DEM"))
    with pytest.raises(ValueError, match="unknown tokenizer config fields"):
        TokenizerConfig.from_dict({**tiny_config("DEM").to_dict(), "width": 3})


def _recording_compiler(tmp_path):
    """A ``CC`` that records each call in ``cc-calls`` and fails, so a build attempt is seen and never succeeds."""
    calls = tmp_path / "cc-calls"
    compiler = tmp_path / "recording-cc"
    compiler.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\nexit 1\n')
    compiler.chmod(0o755)
    return compiler, calls


def test_building_models_compiles_and_writes_nothing(tmp_path, monkeypatch):
    compiler, calls = _recording_compiler(tmp_path)
    home, cache = tmp_path / "home", tmp_path / "kernels"
    home.mkdir()
    monkeypatch.setenv("CC", str(compiler))
    monkeypatch.setenv("TERRATIM_KERNEL_CACHE", str(cache))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.delenv("TERRATIM_NATIVE_KERNELS", raising=False)
    for modality in ("DEM", "LULC"):
        tok = build_tokenizer(modality, config=tiny_config(modality))
        assert tok.decoder is not None  # the decoder (UNet or ViT) is built on first access
    with torch.device("meta"):
        released = build_tokenizer("S2L2A").decoder  # the released 196M-parameter UNet, without memory
    assert sum(p.numel() for p in released.parameters()) == 196_951_744
    assert not calls.exists(), f"a C compiler was run: {calls.read_text()}"
    assert not cache.exists() and list(home.iterdir()) == []  # nothing written
    assert {p.name for p in tmp_path.iterdir()} == {"recording-cc", "home"}
