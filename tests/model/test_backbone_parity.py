"""Backbone parity with the reference implementation (tests/fixtures, manifest tolerances unchanged)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import terratim
from terratim.layers import resize_table, set_fused_inference, sincos_1d, sincos_2d

from fixture_weights import FIXTURES, assert_close, load_case


@pytest.mark.parametrize("fused", [True, False], ids=["fused-linear", "plain-linear"])
@pytest.mark.parametrize("case", ["tiny_backbone_s2l2a_s1grd_mean", "tiny_backbone_s2l2a_s1grd_concat"])
def test_backbone_matches_reference_every_layer(case, fused, tiny_checkpoint):
    """Both paths of ``layers.Linear`` (oneDNN at inference, ``F.linear`` in training) are at parity."""
    entry, io = load_case(case)
    model = terratim.build(entry["name"], ckpt_path=str(tiny_checkpoint), **entry["build_kwargs"]).eval()
    inputs = {name: io[f"input.{name}"] for name in entry["input_order"]}
    set_fused_inference(fused)
    try:
        with torch.no_grad():
            layers = model(inputs)
    finally:
        set_fused_inference(True)
    assert len(layers) == 12
    assert model.out_channels == entry["details"]["out_channels"]
    for name, spec in entry["outputs"].items():
        assert_close(layers[int(name.split("_")[1])], io[f"output.{name}"], spec["tolerance"], f"{case} {name}")


def exact_tables(grid: int, length: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sin-cos formulas in float64: 2-D table (1, grid*grid, dim), 1-D table (1, length, dim), and the largest
    angle of each (the float32 tables' error grows with it)."""
    omega_2d = 1.0 / 10000.0 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="ij")
    first, second = rows.flatten()[:, None] * omega_2d, cols.flatten()[:, None] * omega_2d
    table_2d = torch.cat([first.sin(), first.cos(), second.sin(), second.cos()], dim=1)[None]
    omega_1d = 1.0 / 10000.0 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * omega_1d
    table_1d = torch.cat([angles.sin(), angles.cos()], dim=1)[None]
    return table_2d, table_1d, first.max(), angles.max()


def float32_table_bound(max_angle: torch.Tensor) -> float:
    """Error bound of a float32 sin-cos table: the angle carries a few float32 roundings (pow, division,
    product: 4 half-ulps relative), which sin/cos pass on at most 1:1, plus 2 ulps of sin/cos itself."""
    eps = 2.0**-24
    return float(max_angle) * 4 * eps + 2 * 2 * eps


def test_position_tables_agree_with_the_float64_formula_as_the_reference_ones_do():
    """Ours and the reference's float32 tables are both the formula rounded to float32; the libm / vector kernel
    that rounds them differs between CPUs, so both are checked against float64, never bit for bit."""
    sidecar = load_file(str(FIXTURES / "weights" / "tiny_v1_seed1001.explicit.safetensors"))
    exact_2d, exact_1d, angle_2d, angle_1d = exact_tables(14, 512, 192)
    for ours, reference, exact, angle in (
        (sincos_2d(14, 14, 192), sidecar["encoder_embeddings.untok_sen2l2a@224.pos_emb"], exact_2d, angle_2d),
        (sincos_1d(512, 192), sidecar["encoder_embeddings.coords.pos_emb"], exact_1d, angle_1d),
    ):
        bound = float32_table_bound(angle)
        assert ours.dtype == torch.float32 and ours.shape == exact.shape
        assert (ours.double() - exact).abs().max() <= bound
        assert (reference.double() - exact).abs().max() <= bound
    # a table built another way (rows and columns swapped) is far outside the bound
    swapped = torch.cat([exact_2d[..., 96:], exact_2d[..., :96]], dim=-1)
    assert (sincos_2d(14, 14, 192).double() - swapped).abs().max() > 100 * float32_table_bound(angle_2d)


def test_loaded_position_tables_equal_the_formula(tiny_state):
    exact_2d, _, angle_2d, _ = exact_tables(14, 1, 192)
    bound = float32_table_bound(angle_2d)
    tables = {key: table for key, table in tiny_state.items() if key.endswith("pos_emb") and table.shape[1] == 196}
    assert tables
    for key, table in tables.items():
        assert (table.double() - exact_2d).abs().max() <= bound, key


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
                           ckpt_path=str(tiny_checkpoint)).eval()
    table = model.encoder_embeddings["untok_sen2l2a@224"].pos_emb
    assert torch.equal(table, sincos_2d(16, 16, 192))
    with torch.no_grad():
        assert model(torch.zeros(1, 12, 256, 256))[-1].shape == (1, 256, 192)


def test_rectangular_input(tiny_checkpoint):
    model = terratim.build("terramind_v1_tiny", modalities=["S1GRD"], ckpt_path=str(tiny_checkpoint)).eval()
    with torch.no_grad():
        out = model({"S1GRD": torch.randn(2, 2, 224, 320)})
    assert out[-1].shape == (2, 14 * 20, 192)
