"""Backbone behaviour: sizes, merges, band subsets, new modalities, modality dropout, bad input."""

from __future__ import annotations

import pytest
import torch

import terratim
from terratim.weights import CheckpointError

G = torch.Generator().manual_seed(0)


def tiny(**kwargs):
    kwargs.setdefault("modalities", ["S2L2A", "S1GRD"])
    return terratim.build("terramind_v1_tiny", **kwargs).eval()


def inputs(batch=2, size=64):
    return {"S2L2A": torch.randn(batch, 12, size, size, generator=G),
            "S1GRD": torch.randn(batch, 2, size, size, generator=G)}


def test_base_forward_gives_twelve_layers_of_768():
    model = terratim.build("terramind_v1_base", modalities=["S2L2A", "S1GRD"]).eval()
    with torch.no_grad():
        out = model({"S2L2A": torch.randn(1, 12, 224, 224), "S1GRD": torch.randn(1, 2, 224, 224)})
    assert len(out) == 12 and all(o.shape == (1, 196, 768) for o in out)
    assert model.out_channels == [768] * 12


@pytest.mark.parametrize("size,params", [("tiny", 5_923_968), ("small", 22_464_768)])
def test_parameter_counts_match_the_reference(size, params):
    model = terratim.build(f"terramind_v1_{size}", modalities=["S2L2A"])
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("method,shape", [("mean", (2, 16, 192)), ("max", (2, 16, 192)), ("concat", (2, 16, 384)),
                                          (None, (2, 32, 192))])
def test_merge_methods(method, shape):
    model = tiny(merge_method=method)
    with torch.no_grad():
        out = model(inputs())
    assert out[-1].shape == shape
    assert model.out_channels[-1] == shape[-1]


def test_mean_merge_is_the_average_of_the_dict_merge():
    torch.manual_seed(0)
    mean_model = tiny(merge_method="mean")
    dict_model = tiny(merge_method="dict")
    dict_model.load_state_dict(mean_model.state_dict())
    x = inputs()
    with torch.no_grad():
        merged, parts = mean_model(x)[5], dict_model(x)[5]
    assert set(parts) == {"S2L2A", "S1GRD"}
    torch.testing.assert_close(merged, (parts["S2L2A"] + parts["S1GRD"]) / 2)


def test_token_order_follows_the_input_dict():
    model = tiny(merge_method=None)
    x = inputs()
    with torch.no_grad():
        forward = model(x)[-1]
        backward = model(dict(reversed(list(x.items()))))[-1]
    torch.testing.assert_close(forward[:, :16], backward[:, 16:], atol=1e-5, rtol=1e-5)


def test_band_subset_copies_the_pretrained_columns(tiny_checkpoint):
    full = tiny(modalities=["S2L2A"], ckpt_path=str(tiny_checkpoint))
    subset = tiny(modalities=["S2L2A"], ckpt_path=str(tiny_checkpoint), bands={"S2L2A": ["RED", "B03", "BLUE"]})
    old = full.encoder_embeddings["untok_sen2l2a@224"].proj.weight.view(192, 256, 12)
    new = subset.encoder_embeddings["untok_sen2l2a@224"].proj.weight.view(192, 256, 3)
    assert torch.equal(new[:, :, 0], old[:, :, 3])
    assert torch.equal(new[:, :, 1], old[:, :, 2])
    assert torch.equal(new[:, :, 2], old[:, :, 1])
    with torch.no_grad():
        assert subset(torch.randn(1, 3, 32, 32))[-1].shape == (1, 4, 192)


def test_band_subset_equals_full_model_with_zeroed_other_bands(tiny_checkpoint):
    full = tiny(modalities=["S2L2A"], ckpt_path=str(tiny_checkpoint))
    subset = tiny(modalities=["S2L2A"], ckpt_path=str(tiny_checkpoint), bands={"S2L2A": ["BLUE", "GREEN", "RED"]})
    rgb = torch.randn(1, 3, 32, 32, generator=G)
    padded = torch.zeros(1, 12, 32, 32)
    padded[:, 1:4] = rgb
    with torch.no_grad():
        torch.testing.assert_close(subset(rgb)[-1], full(padded)[-1], atol=1e-5, rtol=1e-5)


def test_integer_band_lists_are_refused():
    with pytest.raises(TypeError, match="by name"):
        tiny(modalities=["S2L2A"], bands={"S2L2A": [1, 2, 3]})


def test_unknown_band_name_warns_and_starts_untrained():
    with pytest.warns(UserWarning, match="not pretrained"):
        model = tiny(modalities=["S2L2A"], bands={"S2L2A": ["RED", "THERMAL"]})
    assert model.encoder_embeddings["untok_sen2l2a@224"].num_channels == 2


def test_new_modality_loads_pretrained_rest(tiny_checkpoint):
    model = tiny(modalities=["S1GRD", {"HLS": 6}], ckpt_path=str(tiny_checkpoint))
    with torch.no_grad():
        out = model({"S1GRD": torch.randn(1, 2, 32, 32), "HLS": torch.randn(1, 6, 32, 32)})
    assert out[-1].shape == (1, 4, 192)
    assert "HLS" in model.encoder_embeddings


def test_token_input_ids():
    model = tiny(modalities=["S1GRD", "LULC"])
    ids = torch.randint(0, 4375, (2, 4, 4), generator=G)
    with torch.no_grad():
        out = model({"S1GRD": torch.randn(2, 2, 64, 64), "LULC": ids})
    assert out[-1].shape == (2, 16, 192)


def test_modality_dropout_is_reproducible_and_keeps_one_input():
    model = tiny(modality_drop_rate=1.0).train()
    x = inputs(batch=1, size=32)
    first = model(x, generator=torch.Generator().manual_seed(3))
    second = model(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first[-1], second[-1])
    kept = model.drop_modalities({"a": 1, "b": 2, "c": 3}, torch.Generator().manual_seed(1))
    assert len(kept) == 1


def test_bare_tensor_is_the_first_modality():
    model = tiny(modalities=["S1GRD"])
    with torch.no_grad():
        assert model(torch.randn(1, 2, 32, 32))[-1].shape == (1, 4, 192)


@pytest.mark.parametrize(
    "bad,error,message",
    [
        ({"S2L2A": torch.randn(1, 10, 32, 32)}, ValueError, r"S2L2A: expected 12 bands \(COASTAL_AEROSOL.*got 10"),
        ({"S2L2A": torch.randn(1, 12, 40, 32)}, ValueError, "multiples of 16"),
        ({"S2L2A": torch.randn(1, 12, 32, 32), "S1GRD": torch.randn(1, 2, 64, 64)}, ValueError, "one token grid"),
        ({"S2L1C": torch.randn(1, 13, 32, 32)}, KeyError, "not a modality of this model"),
        ({"S2L2A": torch.ones(1, 12, 32, 32, dtype=torch.int16)}, TypeError, "float tensor"),
        ({"S2L2A": torch.full((1, 12, 32, 32), float("nan"))}, ValueError, "NaN or inf"),
        ({"S2L2A": torch.full((1, 12, 32, 32), float("inf"))}, ValueError, "NaN or inf"),
    ],
)
def test_bad_input_is_explained(bad, error, message):
    with pytest.raises(error, match=message):
        tiny()(bad)


def test_unknown_modality_lists_valid_names():
    with pytest.raises(KeyError, match="valid names: .*S2L2A"):
        tiny(modalities=["S2L3"])


def test_unknown_build_argument_is_refused():
    with pytest.raises(TypeError, match="unknown arguments"):
        terratim.build("terramind_v1_tiny", modalities=["S2L2A"], backbone_bands=["RED"])


def test_missing_checkpoint_keys_are_reported(tmp_path, tiny_state):
    broken = {k: v for k, v in tiny_state.items() if not k.startswith("encoder.3.")}
    path = tmp_path / "broken.pt"
    torch.save(broken, path)
    with pytest.raises(CheckpointError, match=r"missing \(\d+\):\n    encoder\.3\."):
        tiny(modalities=["S2L2A"], ckpt_path=str(path))


def test_shape_mismatch_is_explained(tmp_path, tiny_state):
    broken = dict(tiny_state)
    broken["encoder.0.mlp.fc1.weight"] = torch.zeros(10, 192)
    path = tmp_path / "broken.pt"
    torch.save(broken, path)
    with pytest.raises(CheckpointError, match=r"encoder.0.mlp.fc1.weight: file \(10, 192\) vs model \(768, 192\)"):
        tiny(modalities=["S2L2A"], ckpt_path=str(path))


def test_autocast_bf16_runs_close_to_fp32():
    model = tiny(modalities=["S1GRD"])
    x = torch.randn(1, 2, 32, 32, generator=G)
    seen = []
    model.encoder[0].attn.qkv.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    with torch.no_grad():
        ref = model(x)[-1]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)[-1]
    assert seen == [torch.float32, torch.bfloat16]  # the matrix products really ran in bf16
    assert torch.isfinite(low).all()
    assert (low.float() - ref).abs().mean() < 0.05


def test_lulc_class_map_is_tokenized_inside():
    from terratim.tokenizers.model import TokenizerConfig

    config = TokenizerConfig.for_modality("LULC", enc_dim=64, enc_depth=1, enc_heads=2, dec_dim=64, dec_depth=1,
                                          dec_heads=2)
    tokenizer = terratim.build("terramind_v1_tokenizer_lulc", config=config)
    model = tiny(modalities=["S1GRD", "LULC"], tokenizers={"LULC": tokenizer})
    classes = torch.randint(0, 10, (2, 64, 64), generator=G).to(torch.uint8)
    _, ids = tokenizer.encode(classes)
    s1 = torch.randn(2, 2, 64, 64, generator=G)
    with torch.no_grad():
        from_map = model({"S1GRD": s1, "LULC": classes})[-1]
        from_ids = model({"S1GRD": s1, "LULC": ids.long()})[-1]
    torch.testing.assert_close(from_map, from_ids)


def test_coordinates_input_as_lon_lat(tmp_path):
    from terratim.tokenizers.coords import CoordsTokenizer, write_coords_vocab

    vocab = write_coords_vocab(tmp_path / "config.json", lats=[45.0, 45.25], lons=[7.5, 7.75])
    model = tiny(modalities=["S1GRD", "COORDS"], tokenizers={"COORDS": CoordsTokenizer.from_file(vocab)})
    with torch.no_grad():
        out = model({"S1GRD": torch.randn(2, 2, 32, 32), "COORDS": torch.tensor([[7.5, 45.0], [7.74, 45.26]])})
    assert out[-1].shape == (2, 4, 192)  # coordinates tokens are not image tokens: the mean merge skips them


def test_a_tokenizer_that_is_not_a_module_is_refused_naming_the_modality(tmp_path):
    from terratim.tokenizers.coords import CoordsTokenizer, write_coords_vocab

    vocab = write_coords_vocab(tmp_path / "config.json", lats=[45.0], lons=[7.5])
    raw = CoordsTokenizer.from_file(vocab).tokenizer  # the bare tokenizers.Tokenizer, not a module
    with pytest.raises(TypeError, match="the COORDS tokenizer must be a torch.nn.Module.*got Tokenizer"):
        tiny(modalities=["S1GRD", "COORDS"], tokenizers={"COORDS": raw})
