"""Checkpoint files: .pt and .safetensors reading, hub errors, conversion."""

from __future__ import annotations

import pytest
import torch

import terratim
from terratim import weights
from terratim.model.config import SIZES, CheckpointConfig


def test_pt_and_safetensors_load_the_same_model(tmp_path, tiny_checkpoint, tiny_state):
    st_path = tmp_path / "tiny.safetensors"
    saved = CheckpointConfig(SIZES["tiny"], "tiny", ("untok_sen1grd@224",), {"source": "test"})
    weights.save_safetensors(tiny_state, st_path, config=saved)
    assert weights.checkpoint_config(st_path) == saved
    a = terratim.build("terramind_v1_tiny", modalities=["S1GRD"], ckpt_path=str(tiny_checkpoint)).eval()
    b = terratim.build("terramind_v1_tiny", modalities=["S1GRD"], ckpt_path=str(st_path)).eval()
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x)[-1], b(x)[-1])


def test_pretrained_offline_error_says_how_to_pass_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(weights.CheckpointError, match="ckpt_path=.*TerraMind_v1_tiny.pt"):
        terratim.build("terramind_v1_tiny", modalities=["S2L2A"], pretrained=True)


def _offline_download(repo_id, filename):
    from huggingface_hub.errors import LocalEntryNotFoundError

    raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing traffic has "
                                  "been disabled.\nTo enable hf.co look-ups, set HF_HUB_OFFLINE=0.")


def test_offline_hub_error_says_what_the_file_is_and_the_python_call(monkeypatch):
    import huggingface_hub

    from terratim.tokenizers.build import build_tokenizer

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _offline_download)
    with pytest.raises(weights.HubDownloadError) as model_error:
        terratim.build("terramind_v1_tiny", modalities=["S2L2A"], pretrained=True)
    assert (model_error.value.weights, model_error.value.modality) == ("model", None)
    message = str(model_error.value)
    assert "\n" not in message and "(LocalEntryNotFoundError: Cannot find the requested files" in message
    assert "in Python ckpt_path='/path/to/TerraMind_v1_tiny.pt'" in message
    with pytest.raises(weights.HubDownloadError) as tokenizer_error:
        build_tokenizer("LULC", pretrained=True)
    assert (tokenizer_error.value.weights, tokenizer_error.value.modality) == ("tokenizer", "LULC")
    assert ("in Python terratim.build('terramind_v1_tokenizer_lulc', "
            "ckpt_path='/path/to/TerraMind_Tokenizer_LULC.pt')") in str(tokenizer_error.value)


def test_hub_download_goes_through_the_hub_cache(monkeypatch, tmp_path, tiny_checkpoint):
    calls = []

    def fake_download(repo_id, filename):
        calls.append((repo_id, filename))
        return str(tiny_checkpoint)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = terratim.build("terramind_v1_tiny", modalities=["S2L2A"], pretrained=True)
    assert calls == [("ibm-esa-geospatial/TerraMind-1.0-tiny", "TerraMind_v1_tiny.pt")]
    assert model.out_channels[0] == 192


def test_missing_file_and_garbage_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        weights.read_state_dict(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(weights.CheckpointError, match=r"garbage.pt is not a readable PyTorch checkpoint \("
                       r"weights_only load: Unsupported operand \d+\)$"):
        weights.read_state_dict(garbage)
    bad_safetensors = tmp_path / "garbage.safetensors"
    bad_safetensors.write_bytes(b"not a checkpoint")
    with pytest.raises(weights.CheckpointError, match="garbage.safetensors is not a readable safetensors file"):
        weights.read_state_dict(bad_safetensors)


def test_nonzero_norm_bias_is_not_silently_dropped(tiny_state):
    model = terratim.build("terramind_v1_tiny", modalities=["S1GRD"])
    state = dict(tiny_state)
    state["encoder.0.norm1.bias"] = torch.ones(192)
    _, report = weights.convert_state_dict(state, model)
    assert any(k.startswith("encoder.0.norm1.bias") for k in report.unexpected)


def test_list_models_has_reference_names():
    names = terratim.list_models()
    for size in ("tiny", "small", "base", "large"):
        assert f"terramind_v1_{size}" in names
        assert f"terramind_v1_{size}_tim" in names
        assert f"terramind_v1_{size}_generate" in names


def test_file_without_json_needs_a_size_name(tmp_path, tiny_checkpoint):
    from terratim.registry import build_from_file

    with pytest.raises(weights.CheckpointError, match=r"no \.json config next to it.*terramind_v1_<size>"):
        build_from_file(tiny_checkpoint)
    with pytest.raises(weights.CheckpointError, match="architecture is unknown"):
        weights.terramind_architecture(None, tiny_checkpoint)
    assert weights.terramind_architecture("tiny", tiny_checkpoint) == SIZES["tiny"]


def test_unreadable_old_config_says_to_rerun_convert(tmp_path, tiny_state):
    st_path = tmp_path / "old.safetensors"
    weights.save_safetensors({"encoder_norm.weight": tiny_state["encoder_norm.weight"]}, st_path,
                             config={"size": "tiny"})
    with pytest.raises(ValueError, match="re-run `terratim convert`"):
        terratim.build("terramind_v1_tiny", modalities=["S1GRD"], ckpt_path=str(st_path))
