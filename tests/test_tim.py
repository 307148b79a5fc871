"""Thinking-in-Modalities: parity, determinism, multi-step, composition, no dead weight, bad input."""

from __future__ import annotations

import pytest
import torch

import terratim
from terratim.generation.generate import TerraMindGenerate
from terratim.model.backbone import TerraMindBackbone

from fixture_weights import assert_close, load_case


@pytest.fixture(scope="module")
def parity(tiny_checkpoint):
    entry, io = load_case("tiny_tim_s1grd_lulc")
    model = terratim.build(entry["name"], ckpt_path=str(tiny_checkpoint), **entry["build_kwargs"]).eval()
    return model, entry, io


def test_imagined_tokens_and_every_layer_match_the_reference(parity):
    model, entry, io = parity
    inputs = {name: io[f"input.{name}"] for name in entry["input_order"]}
    states = model.generator.generate_tokens(inputs, return_states=True)
    assert torch.equal(states["LULC"].ids, io["output.tim_tokens.tok_lulc@224"])
    spec = entry["outputs"]["tim_logits_step0.tok_lulc@224"]
    assert_close(states["LULC"].first_logits[:, :32], io["output.tim_logits_step0.tok_lulc@224"],
                 spec["tolerance"], "tim logits")
    with torch.no_grad():
        layers = model(inputs)
    assert len(layers) == 12
    for name, spec in entry["outputs"].items():
        if name.startswith("layer_"):
            assert_close(layers[int(name[6:])], io[f"output.{name}"], spec["tolerance"], name)
    imagined = model.imagine(inputs)
    assert torch.equal(imagined["LULC"].view(2, -1), io["output.tim_tokens.tok_lulc@224"])


def test_tim_is_a_composition_of_generator_and_backbone(parity):
    model, _, _ = parity
    assert isinstance(model, TerraMindBackbone)
    assert isinstance(model.generator, TerraMindGenerate)
    assert not any(p.requires_grad for p in model.generator.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("generator."))
    model.train()
    assert not model.generator.training and model.training
    model.eval()


def test_no_lulc_tokenizer_is_built(parity):
    model, _, _ = parity
    assert len(model.tokenizers) == 0 and len(model.generator.tokenizers) == 0
    params = sum(p.numel() for p in model.parameters())
    assert params < 20_000_000  # the reference carries an extra 184M-parameter LULC tokenizer here


def tim(tiny_checkpoint, **kwargs):
    kwargs.setdefault("modalities", ["S1GRD"])
    return terratim.build("terramind_v1_tiny_tim", ckpt_path=str(tiny_checkpoint), **kwargs).eval()


def test_sampling_is_deterministic_with_a_seeded_generator(tiny_checkpoint):
    model = tim(tiny_checkpoint, tim_temps=1.0, tim_decoding_steps=2)
    x = {"S1GRD": torch.randn(1, 2, 64, 64, generator=torch.Generator().manual_seed(0))}
    a = model.imagine(x, torch.Generator().manual_seed(5))["LULC"]
    b = model.imagine(x, torch.Generator().manual_seed(5))["LULC"]
    assert torch.equal(a, b) and a.shape == (1, 4, 4)
    with torch.no_grad():
        first = model(x, torch.Generator().manual_seed(5))[-1]
        second = model(x, torch.Generator().manual_seed(5))[-1]
    torch.testing.assert_close(first, second)


@pytest.mark.parametrize("steps,scheme", [(1, "roar"), (3, "maskgit")])
def test_temperature_zero_is_deterministic_and_multi_step_works(tiny_checkpoint, steps, scheme):
    """Argmax with one pass, or with MaskGIT's confidence order, needs no randomness at all."""
    model = tim(tiny_checkpoint, tim_temps=0.0, tim_decoding_steps=steps, tim_scheme=scheme)
    x = {"S1GRD": torch.randn(2, 2, 64, 64, generator=torch.Generator().manual_seed(1))}
    with torch.no_grad():
        a = model(x, torch.Generator().manual_seed(1))[-1]
        b = model(x, torch.Generator().manual_seed(2))[-1]
    assert a.shape == (2, 16, 192)
    torch.testing.assert_close(a, b)


def test_given_tim_modality_is_used_not_imagined(tiny_checkpoint):
    model = tim(tiny_checkpoint, tim_temps=0.0)
    x = torch.randn(1, 2, 32, 32)
    ids = torch.randint(0, 4375, (1, 2, 2))
    calls = []
    model.generator.generate_tokens = lambda *a, **k: calls.append(1) or {}
    with torch.no_grad():
        out = model({"S1GRD": x, "LULC": ids})
    assert calls == [] and out[-1].shape == (1, 4, 192)


def test_merges_count_tim_tokens(tiny_checkpoint):
    x = {"S1GRD": torch.randn(1, 2, 32, 32)}
    with torch.no_grad():
        concat = tim(tiny_checkpoint, tim_temps=0.0, merge_method="concat")
        assert concat.out_channels[0] == 384 and concat(x)[-1].shape == (1, 4, 384)
        parts = tim(tiny_checkpoint, tim_temps=0.0, merge_method="dict")(x)[-1]
    assert set(parts) == {"S1GRD", "LULC"}  # the reference drops the TiM entry


def test_several_tim_modalities(tiny_checkpoint):
    model = tim(tiny_checkpoint, tim_modalities=["LULC", "NDVI"], tim_temps=0.0, merge_method="dict")
    with torch.no_grad():
        parts = model({"S1GRD": torch.randn(1, 2, 32, 32)})[-1]
    assert list(parts) == ["S1GRD", "LULC", "NDVI"]


def test_several_tim_modalities_are_chained_by_default(tiny_checkpoint):
    """As TerraTorch 1.2.13: NDVI is imagined with the imagined LULC tokens in the encoder."""
    x = {"S1GRD": torch.randn(1, 2, 64, 64, generator=torch.Generator().manual_seed(4))}
    kwargs = dict(tim_modalities=["LULC", "NDVI"], tim_temps=0.0)
    default, independent = tim(tiny_checkpoint, **kwargs), tim(tiny_checkpoint, tim_chain=False, **kwargs)
    assert default.generator.chain and not independent.generator.chain
    chained = default.generator.generate_tokens(x, return_states=True)
    alone = independent.generator.generate_tokens(x, return_states=True)
    assert torch.equal(chained["LULC"].ids, alone["LULC"].ids)
    assert not torch.allclose(chained["NDVI"].first_logits, alone["NDVI"].first_logits, atol=1e-3)


def test_bands_are_refused_with_an_explanation(tiny_checkpoint):
    with pytest.raises(ValueError, match="frozen generator imagines .* full pretrained bands.* fill_missing_bands="):
        tim(tiny_checkpoint, bands={"S1GRD": ["VV"]})


HLS_BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]


def test_missing_bands_filled_equal_the_full_input_with_zeros(tiny_checkpoint):
    """Standardized inputs: the absent bands become 0 (their mean) for the generator and the backbone alike."""
    s2 = terratim.MODALITIES["S2L2A"]
    with pytest.warns(UserWarning, match="S2L2A: bands COASTAL_AEROSOL, .* are missing .* results degrade"):
        filled = tim(tiny_checkpoint, modalities=["S2L2A"], tim_temps=0.0, bands={"S2L2A": HLS_BANDS},
                     fill_missing_bands="mean")
    full = tim(tiny_checkpoint, modalities=["S2L2A"], tim_temps=0.0)
    z = torch.randn(1, 12, 32, 32, generator=torch.Generator().manual_seed(4))
    z[:, [s2.band_index(b) for b in s2.missing_bands(HLS_BANDS)]] = 0.0
    hls = z[:, [s2.band_index(b) for b in HLS_BANDS]]
    assert torch.equal(filled.with_all_bands({"S2L2A": hls})["S2L2A"], z)
    a = filled.generator.generate_tokens(filled.with_all_bands(hls), return_states=True)["LULC"]
    b = full.generator.generate_tokens({"S2L2A": z}, return_states=True)["LULC"]
    torch.testing.assert_close(a.first_logits, b.first_logits, atol=1e-4, rtol=1e-5)
    top = b.first_logits.topk(2, dim=-1).values
    clear = (top[..., 0] - top[..., 1]) > 1e-2
    assert bool(clear.any()) and torch.equal(a.ids[clear], b.ids[clear])
    with torch.no_grad():
        torch.testing.assert_close(filled({"S2L2A": hls})[-1], full({"S2L2A": z})[-1], atol=1e-4, rtol=1e-4)
    assert list(filled.imagine(hls)) == ["LULC"]


def test_a_band_the_modality_lacks_is_named_with_its_bands(tiny_checkpoint):
    with pytest.raises(ValueError, match=r"S1GRD has no band 'HH'; pretrained bands are \['VV', 'VH'\]"):
        tim(tiny_checkpoint, bands={"S1GRD": ["VV", "HH"]}, fill_missing_bands="mean")


def test_imagine_takes_a_subset_or_order_of_the_tim_modalities(tiny_checkpoint):
    model = tim(tiny_checkpoint, tim_modalities=["LULC", "NDVI"], tim_temps=0.0)
    x = {"S1GRD": torch.randn(1, 2, 32, 32, generator=torch.Generator().manual_seed(2))}
    assert list(model.imagine(x, outputs=["NDVI"])) == ["NDVI"]
    assert list(model.imagine(x, outputs=["NDVI", "LULC"])) == ["NDVI", "LULC"]
    with pytest.raises(ValueError, match=r"DEM is not an output of this model; available outputs: \['LULC', 'NDVI'\]"):
        model.imagine(x, outputs=["DEM"])


def test_new_modalities_are_refused(tiny_checkpoint):
    with pytest.raises(ValueError, match="pretrained modalities"):
        tim(tiny_checkpoint, modalities=[{"HLS": 6}])
