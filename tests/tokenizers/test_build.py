"""Registry builders, strict loading of official-layout files, converted files with their config, offline hub;
tokenizers built with or without their decoder, from one read of the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from tokenizer_helpers import randomize, tiny_config

import terratim
import terratim.tokenizers.build as build_module
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
    assert loaded.has_decoder  # built and loaded with the rest by default
    x = torch.randn(1, 1, 32, 32)
    assert torch.equal(loaded.latents(x), tok.latents(x))
    noise = torch.randn(1, 1, 32, 32)
    assert torch.equal(loaded.decode_tokens(tok.encode(x)[1], noise=noise, timesteps=2),
                       tok.decode_tokens(tok.encode(x)[1], noise=noise, timesteps=2))


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
    with pytest.raises(CheckpointError, match=r"(?s)shape mismatches \(1\).*decoder.out.2.weight"):
        build_tokenizer("DEM", ckpt_path=path, config=tiny_config("DEM"))  # checked at build, not at first use
    encoder_only = build_tokenizer("DEM", ckpt_path=path, config=tiny_config("DEM"), decoder=False)
    torch.testing.assert_close(encoder_only.quant_proj.weight, tok.quant_proj.weight, rtol=0, atol=0)  # a copy


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


# -- built with or without the decoder ------------------------------------------------------------------------


@pytest.mark.parametrize(("modality", "decoder_side"), [("DEM", {"decoder"}), ("LULC", {"post_quant_proj", "decoder"})])
def test_built_without_decoder_has_no_decoder_parameters(modality, decoder_side):
    full = build_tokenizer(modality, config=tiny_config(modality))
    encode_only = build_tokenizer(modality, config=tiny_config(modality), decoder=False)
    assert {name.split(".")[0] for name, _ in full.named_parameters()} == {"encoder", "quant_proj", *decoder_side}
    assert {name.split(".")[0] for name, _ in encode_only.named_parameters()} == {"encoder", "quant_proj"}
    assert {key.split(".")[0] for key in encode_only.state_dict()} == {"encoder", "quant_proj"}
    assert full.has_decoder and not encode_only.has_decoder and encode_only.decoder is None
    with torch.device("meta"):
        released = build_tokenizer("S2L2A", decoder=False)
    assert sum(p.numel() for p in released.parameters()) == 92_335_104 + 5 * 768 + 5  # encoder + quant_proj


@pytest.mark.parametrize("modality", ["DEM", "LULC"])
def test_decoding_without_decoder_says_how_to_build_one(modality):
    tok = build_tokenizer(modality, config=tiny_config(modality), decoder=False)
    x = torch.randint(0, 10, (1, 32, 32)) if modality == "LULC" else torch.randn(1, 1, 32, 32)
    codes, ids = tok.encode(x)  # encoding works
    message = rf"{modality} tokenizer was built without its decoder \(decoder=False\).*build it with decoder=True"
    with pytest.raises(RuntimeError, match=message):
        tok.decode_tokens(ids, timesteps=1)
    with pytest.raises(RuntimeError, match=message):
        tok(x, timesteps=1)
    if modality == "DEM":
        with pytest.raises(RuntimeError, match=message):
            tok.denoise(torch.zeros(1, 1, 32, 32), 999, codes)
    with pytest.raises(ValueError, match=r"without its decoder.*decoder=True to save"):
        save_tokenizer(tok, Path("never-written.safetensors"))


def test_encode_only_build_encodes_like_the_full_one(tmp_path):
    tok, path = _official_layout_file(tmp_path, "LULC")
    encode_only = terratim.build("terramind_v1_tokenizer_lulc", ckpt_path=path, config=tiny_config("LULC"),
                                 decoder=False)
    ids = torch.randint(0, 10, (2, 32, 32), generator=torch.Generator().manual_seed(0))
    assert torch.equal(encode_only.encode(ids)[1], tok.encode(ids)[1])  # same weights, same kernels


@pytest.mark.parametrize("decoder", [True, False])
def test_checkpoint_is_read_once_for_a_build_and_decodes(tmp_path, monkeypatch, decoder):
    _, path = _official_layout_file(tmp_path)
    reads = []
    real_read = build_module.read_state_dict
    monkeypatch.setattr(build_module, "read_state_dict", lambda p: reads.append(p) or real_read(p))
    tok = terratim.build("terramind_v1_tokenizer_dem", ckpt_path=path, config=tiny_config("DEM"), decoder=decoder)
    ids = tok.encode(torch.randn(1, 1, 32, 32))[1]
    if decoder:
        for _ in range(2):
            tok.decode_tokens(ids, timesteps=1, generator=torch.Generator().manual_seed(0))
    assert reads == [path]


def test_the_decoder_exists_from_the_build_on():
    """The decoder is an ordinary submodule from construction: dtype moves and freezing reach it before any
    decode (a lazily built decoder would miss both)."""
    tok = build_tokenizer("DEM", config=tiny_config("DEM")).to(torch.float64).requires_grad_(False)
    decoder_params = [p for name, p in tok.named_parameters() if name.startswith("decoder.")]
    assert decoder_params and all(p.dtype == torch.float64 and not p.requires_grad for p in decoder_params)


def test_no_private_module_writes_in_the_package():
    """In addition to the behavioural tests above: no code assigns into ``_modules`` / ``_parameters`` /
    ``_buffers`` by hand."""
    package = Path(terratim.__file__).parent
    pattern = re.compile(r"\._(modules|parameters|buffers)\[[^\]]*\]\s*=[^=]")
    offenders = [f"{path.relative_to(package)}:{number}" for path in sorted(package.rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


HLS_BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]


def test_missing_bands_filled_with_the_mean_encode_like_the_full_input_at_the_mean():
    full = randomize(build_tokenizer("S2L2A", config=tiny_config("S2L2A"), decoder=False))
    with pytest.warns(UserWarning, match=r"S2L2A: bands .*COASTAL_AEROSOL.* filled with their pretraining mean"):
        filled = build_tokenizer("S2L2A", config=tiny_config("S2L2A"), decoder=False, bands=HLS_BANDS,
                                 fill_missing_bands="mean")
    filled.load_state_dict(full.state_dict())
    six = torch.randn(2, 6, 32, 32, generator=torch.Generator().manual_seed(1))  # standardized
    twelve = torch.zeros(2, 12, 32, 32)  # every absent band at its mean (0 after standardization)
    for source, band in enumerate(HLS_BANDS):
        twelve[:, full.modality.band_index(band)] = six[:, source]
    assert torch.equal(filled.encode(six)[1], full.encode(twelve)[1])  # the same tensor reaches the same kernels
    with pytest.raises(ValueError, match=r"expected 6 bands \(BLUE, GREEN"):
        filled.encode(twelve)


def test_missing_bands_are_an_error_unless_filled_and_bad_bands_are_named():
    config = tiny_config("S2L2A")
    with pytest.raises(ValueError, match=r"pretrained bands \['COASTAL_AEROSOL'.*fill_missing_bands='mean'"):
        build_tokenizer("S2L2A", config=config, bands=HLS_BANDS)
    with pytest.raises(ValueError, match=r"S2L2A has no band 'B10'"):
        build_tokenizer("S2L2A", config=config, bands=["BLUE", "B10"], fill_missing_bands="mean")
    with pytest.raises(ValueError, match=r"fill_missing_bands needs bands="):
        build_tokenizer("S2L2A", config=config, fill_missing_bands="mean")
    with pytest.raises(ValueError, match=r"fill_missing_bands must be None or one of"):
        build_tokenizer("S2L2A", config=config, bands=HLS_BANDS, fill_missing_bands="zeros")
    with pytest.raises(ValueError, match=r"LULC tokenizer: bands can only be filled for raw image"):
        build_tokenizer("LULC", config=tiny_config("LULC"), bands=["x"], fill_missing_bands="mean")
