"""The bundled simulated-data model: small, loadable by name, and it has learned something."""

from __future__ import annotations

import json

import pytest
import torch

import terratim
from terratim.pretraining.data import SimulatedDataset
from terratim.sim_models import ASSETS, CHECKPOINT, IMG_SIZE, build_sim_tokenizer


def test_bundle_is_small_and_complete() -> None:
    files = sorted(ASSETS.glob("*.safetensors"))
    assert {f.name for f in files} == {"terramind_sim_micro.safetensors", "tokenizer_lulc.safetensors",
                                      "tokenizer_dem.safetensors"}
    assert all(f.with_suffix(".json").is_file() for f in files)
    assert sum(f.stat().st_size for f in ASSETS.iterdir()) <= 20 * 2**20


def test_builds_by_name_from_the_bundled_files() -> None:
    s1 = SimulatedDataset(31, 2, IMG_SIZE, ["S1GRD"], cache=False)
    x = torch.stack([s1[i]["S1GRD"] for i in range(2)])
    backbone = terratim.build("terramind_sim_micro", pretrained=True, modalities=["S1GRD"])
    tim = terratim.build("terramind_sim_micro_tim", pretrained=True, modalities=["S1GRD"], tim_modalities=["LULC"])
    torch.testing.assert_close(backbone.encoder[0].attn.qkv.weight, tim.encoder[0].attn.qkv.weight)
    assert tim({"S1GRD": x}, torch.Generator().manual_seed(0))[-1].shape == (2, (IMG_SIZE // 16) ** 2, 64)
    assert str(CHECKPOINT).endswith("terramind_sim_micro.safetensors")


def test_generator_imagines_water_better_than_chance() -> None:
    """From S1 alone, imagined water (LULC classes 1 and 3) overlaps the simulated water label more than a random
    map with the same water fraction would. (The bundled model is small and briefly trained: its imagined land
    cover is coarse, see docs/pretraining.md.)"""
    data = SimulatedDataset(4242, 16, IMG_SIZE, ["S1GRD", "WATER"], cache=False)
    s1 = torch.stack([data[i]["S1GRD"] for i in range(16)])
    water = torch.stack([data[i]["WATER"] for i in range(16)]).bool()
    generator = terratim.build("terramind_sim_micro_generate", pretrained=True, modalities=["S1GRD"],
                               output_modalities=["LULC"], temps=0.0)
    with torch.no_grad():
        imagined = generator({"S1GRD": s1})["LULC"].argmax(1)
    wet = (imagined == 1) | (imagined == 3)
    iou = ((wet & water).sum() / (wet | water).sum()).item()
    p, q = wet.float().mean().item(), water.float().mean().item()
    chance = p * q / (p + q - p * q)  # expected IoU of independent maps with these fractions
    assert iou > chance + 0.05, (iou, chance)
    assert build_sim_tokenizer("LULC").config.enc_dim == 64


def test_bundle_generates_what_its_weights_can_and_fills_in_its_own_tokenizers() -> None:
    """The encoder has no DEM token embedding (DEM was an image input and a decoder target only), so the bundle
    generates LULC alone; a partial ``tokenizers`` dict is completed with the bundled tokenizers."""
    from terratim.sim_models import generatable

    assert generatable(CHECKPOINT) == ["LULC"]
    with pytest.raises(ValueError, match="cannot generate DEM: .* It can generate: LULC"):
        terratim.build("terramind_sim_micro_generate", pretrained=True, output_modalities=["LULC", "DEM"])
    model = terratim.build("terramind_sim_micro_generate", pretrained=True, modalities=["S1GRD"],
                           output_modalities=["LULC"], tokenizers={})
    assert set(model.tokenizers) == {"LULC"}
    assert model.tokenizers["LULC"].config.enc_dim == build_sim_tokenizer("LULC").config.enc_dim == 64


def test_bundled_tokenizers_decode_for_outputs_and_only_encode_for_token_inputs() -> None:
    """Outputs get their decoder (generation decodes them); token inputs are built encode-only."""
    from terratim.sim_models import _default_tokenizers

    tokenizers = _default_tokenizers(["LULC"], ["DEM"], None)
    assert tokenizers["LULC"].has_decoder and not tokenizers["DEM"].has_decoder
    assert not any(name.startswith("decoder.") for name in tokenizers["DEM"].state_dict())
    assert not build_sim_tokenizer("DEM", decoder=False).has_decoder
    assert build_sim_tokenizer("DEM").has_decoder  # the default decodes, as the registered builders always did
    model = terratim.build("terramind_sim_micro_generate", pretrained=True, modalities=["S1GRD"],
                           output_modalities=["LULC"])
    assert model.tokenizers["LULC"].has_decoder


def test_bundle_architecture_comes_from_its_json(tmp_path):
    from terratim.model.config import SIZES, CheckpointConfig
    from terratim.sim_models import bundled_architecture
    from terratim.weights import CheckpointError

    model = terratim.build("terramind_sim_micro", pretrained=True, modalities=["S1GRD"])
    assert model.config == bundled_architecture() and model.config.img_size == IMG_SIZE == 64
    assert "sim_micro" not in SIZES
    other = tmp_path / "other.safetensors"
    other.symlink_to(CHECKPOINT)
    other.with_suffix(".json").write_text(json.dumps(CheckpointConfig(SIZES["tiny"], "tiny").to_dict()))
    with pytest.raises(CheckpointError, match=r"other\.json describes .*dim=192.*dim=64"):
        terratim.build("terramind_sim_micro", ckpt_path=other, modalities=["S1GRD"])


def test_builders_declare_their_parameters_and_refuse_others():
    """The registry knows what each bundled builder takes (what its creation path takes), so a typo is refused by
    name before anything is built."""
    from terratim import registry

    assert registry.parameters("terramind_sim_micro") == registry.parameters("terramind_v1_tiny")
    assert registry.parameters("terramind_sim_micro_tim") == registry.parameters("terramind_v1_tiny_tim")
    generate = registry.parameters("terramind_sim_micro_generate")
    assert {"output_modalities", "temperature", "token_schedule", "tokenizers"} <= generate
    assert "build_tokenizers_for_outputs" not in generate  # the builder sets it itself
    assert registry.parameters("terramind_sim_micro_tokenizer_dem") == {"pretrained", "ckpt_path", "decoder",
                                                                        "config", "strict", "bands",
                                                                        "fill_missing_bands"}
    with pytest.raises(TypeError, match=r"terramind_sim_micro_tim: unknown arguments \['tim_modality'\]"):
        terratim.build("terramind_sim_micro_tim", pretrained=True, tim_modality=["LULC"])
    with pytest.raises(TypeError, match=r"unknown arguments \['modality'\]"):
        terratim.build("terramind_sim_micro_tokenizer_lulc", modality="DEM")


def test_importing_the_module_changes_no_table():
    """A fresh interpreter: importing ``terratim.sim_models`` adds no size to ``model.config.SIZES``."""
    import subprocess
    import sys

    code = ("from terratim.model import config; before = dict(config.SIZES); import terratim.sim_models; "
            "assert config.SIZES == before, sorted(config.SIZES); print(sorted(before))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['base', 'large', 'small', 'tiny']"
