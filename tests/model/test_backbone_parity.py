"""Backbone parity with the reference implementation (tests/fixtures, manifest tolerances unchanged)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import terratim
from terratim.layers import resize_table, sincos_1d, sincos_2d

from fixture_weights import FIXTURES, assert_close, load_case


@pytest.mark.parametrize("case", ["tiny_backbone_s2l2a_s1grd_mean", "tiny_backbone_s2l2a_s1grd_concat"])
def test_backbone_matches_reference_every_layer(case, tiny_checkpoint):
    entry, io = load_case(case)
    model = terratim.build(entry["name"], ckpt_path=str(tiny_checkpoint), **entry["build_kwargs"]).eval()
    inputs = {name: io[f"input.{name}"] for name in entry["input_order"]}
    with torch.no_grad():
        layers = model(inputs)
    assert len(layers) == 12
    assert model.out_channels == entry["details"]["out_channels"]
    for name, spec in entry["outputs"].items():
        assert_close(layers[int(name.split("_")[1])], io[f"output.{name}"], spec["tolerance"], f"{case} {name}")


def test_position_tables_are_bit_identical_to_the_reference():
    sidecar = load_file(str(FIXTURES / "weights" / "tiny_v1_seed1001.explicit.safetensors"))
    assert torch.equal(sincos_2d(14, 14, 192), sidecar["encoder_embeddings.untok_sen2l2a@224.pos_emb"])
    assert torch.equal(sincos_1d(512, 192), sidecar["encoder_embeddings.coords.pos_emb"])


def test_loaded_position_tables_equal_the_formula(tiny_state):
    for key, table in tiny_state.items():
        if key.endswith("pos_emb") and table.shape[1] == 196:
            assert torch.equal(table, sincos_2d(14, 14, 192)), key


def test_256_input_uses_the_bicubically_resized_table(tiny_checkpoint):
    model = terratim.build("terramind_v1_tiny", modalities=["S2L2A"], ckpt_path=str(tiny_checkpoint)).eval()
    x = torch.randn(1, 12, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layers = model(x)
        embedding = model.encoder_embeddings["untok_sen2l2a@224"]
        tokens, emb = embedding(x)
    assert layers[-1].shape == (1, 256, 192)
    expected = resize_table(embedding.pos_emb, (14, 14), (16, 16)) + embedding.mod_emb
    assert torch.equal(emb[0], expected[0])


def test_built_at_256_recomputes_exact_tables_and_still_loads(tiny_checkpoint):
    model = terratim.build("terramind_v1_tiny", modalities=["S2L2A"], img_size=256,
                           ckpt_path=str(tiny_checkpoint)).eval()  # fmt: skip
    table = model.encoder_embeddings["untok_sen2l2a@224"].pos_emb
    assert torch.equal(table, sincos_2d(16, 16, 192))
    with torch.no_grad():
        assert model(torch.zeros(1, 12, 256, 256))[-1].shape == (1, 256, 192)


def test_rectangular_input(tiny_checkpoint):
    model = terratim.build("terramind_v1_tiny", modalities=["S1GRD"], ckpt_path=str(tiny_checkpoint)).eval()
    with torch.no_grad():
        out = model({"S1GRD": torch.randn(2, 2, 224, 320)})
    assert out[-1].shape == (2, 14 * 20, 192)
