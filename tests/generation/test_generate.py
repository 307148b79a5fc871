"""Generation: parity with the reference, multi-step ROAR / MaskGIT, chaining, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import terratim
from terratim.generation.settings import GenerationSettings

from fixture_weights import assert_close, load_case


@pytest.fixture(scope="module")
def parity_model(tiny_checkpoint):
    entry, io = load_case("tiny_generate_s2l2a_to_lulc")
    model = terratim.build(entry["name"], ckpt_path=str(tiny_checkpoint), build_tokenizers_for_outputs=False,
                           **entry["build_kwargs"])
    return model.eval(), entry, io


def test_tokens_and_first_step_logits_match_the_reference(parity_model):
    model, entry, io = parity_model
    inputs = {name: io[f"input.{name}"] for name in entry["input_order"]}
    states = model.generate_tokens(inputs, return_states=True)
    assert torch.equal(states["LULC"].ids, io["output.tokens.LULC"].view(2, -1))
    spec = entry["outputs"]["logits_step0.tok_lulc@224"]
    assert_close(states["LULC"].first_logits, io["output.logits_step0.tok_lulc@224"], spec["tolerance"], "logits")
    tokens = model.generate_tokens(inputs)
    assert tokens["LULC"].shape == (2, 14, 14) and tokens["LULC"].dtype == torch.long


def logits_tolerance() -> dict[str, float]:
    """First-step logits of the tiny model agree to this between two float32 runs (the manifest's tolerance:
    10x the reference's float32-vs-float64 error); MKL may round a repeated run differently (memory alignment)."""
    entry, _ = load_case("tiny_generate_s2l2a_to_lulc")
    return entry["outputs"]["logits_step0.tok_lulc@224"]["tolerance"]


def small_generator(tiny_checkpoint, **kwargs):
    kwargs.setdefault("modalities", ["S2L2A"])
    kwargs.setdefault("output_modalities", ["LULC"])
    return terratim.build("terramind_v1_tiny_generate", ckpt_path=str(tiny_checkpoint),
                          build_tokenizers_for_outputs=False, **kwargs).eval()


@pytest.mark.parametrize("scheme", ["roar", "maskgit"])
def test_multi_step_runs_and_is_deterministic_for_a_generator(tiny_checkpoint, scheme):
    model = small_generator(tiny_checkpoint, decoding_steps=3, temps=1.0, scheme=scheme)
    x = {"S2L2A": torch.randn(2, 12, 64, 64, generator=torch.Generator().manual_seed(0))}
    a = model.generate_tokens(x, generator=torch.Generator().manual_seed(7))["LULC"]
    b = model.generate_tokens(x, generator=torch.Generator().manual_seed(7))["LULC"]
    c = model.generate_tokens(x, generator=torch.Generator().manual_seed(8))["LULC"]
    assert a.shape == (2, 4, 4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    states = model.generate_tokens(x, generator=torch.Generator().manual_seed(7), return_states=True)
    assert [len(p[0]) if p.dim() == 2 else len(p) for p in states["LULC"].orders] == [6, 5, 5]
    assert bool(states["LULC"].decoded.all())


def test_later_steps_see_earlier_tokens(tiny_checkpoint):
    """In step 2 the encoder sees the tokens decoded in step 1 (and only those), which changes the logits."""
    from terratim.generation.sampler import Sampler, Target, TargetState

    model = small_generator(tiny_checkpoint, temps=0.0)
    x = {"S2L2A": torch.randn(1, 12, 64, 64, generator=torch.Generator().manual_seed(1))}
    keyed = model.network.keyed_inputs(x)
    sampler = Sampler(model.network)
    target = Target("tok_lulc@224", 16, GenerationSettings(decoding_steps=2, temperature=0.0))
    state = TargetState(torch.zeros(1, 16, dtype=torch.long), torch.zeros(1, 16, dtype=torch.bool))
    ctx0, bias0 = sampler.context(keyed, {})
    sampler.roar_step(target, state, 8, 0.0, ctx0, bias0, torch.Generator().manual_seed(0))
    ctx1, bias1 = sampler.context(keyed, {"tok_lulc@224": state})
    assert ctx0.shape[1] == 16 and bias0 is None
    assert ctx1.shape[1] == 32
    hidden = bias1[0, 0, 0, 16:] < 0  # the undecoded LULC tokens are masked out
    assert torch.equal(hidden, ~state.decoded[0])
    rest = (~state.decoded[0]).nonzero()[:, 0][None]
    queries = model.network.image_queries("tok_lulc@224", rest, 4)
    with torch.no_grad():
        before = sampler._logits(target, queries, ctx0, bias0)
        after = sampler._logits(target, queries, ctx1, bias1)
    assert not torch.allclose(before, after, atol=1e-4)


def test_outputs_are_chained_by_default_as_in_the_reference(tiny_checkpoint):
    """TerraTorch 1.2.13 feeds the first output's tokens to the encoder for the second; so does the default."""
    x = {"S2L2A": torch.randn(1, 12, 64, 64, generator=torch.Generator().manual_seed(2))}
    kwargs = dict(output_modalities=["LULC", "NDVI"], temps=0.0)
    default = small_generator(tiny_checkpoint, **kwargs)
    assert default.chain
    default_states = default.generate_tokens(x, return_states=True)
    chained = small_generator(tiny_checkpoint, chain=True, **kwargs).generate_tokens(x, return_states=True)
    independent = small_generator(tiny_checkpoint, chain=False, **kwargs).generate_tokens(x, return_states=True)
    for name in ("LULC", "NDVI"):
        assert torch.equal(default_states[name].ids, chained[name].ids)
    # the first output sees only the inputs either way; the second depends on the first output's tokens
    assert_close(independent["LULC"].first_logits, chained["LULC"].first_logits, logits_tolerance(), "LULC logits")
    assert torch.equal(independent["LULC"].ids, chained["LULC"].ids)
    assert not torch.allclose(independent["NDVI"].first_logits, chained["NDVI"].first_logits, atol=1e-3)


def test_second_output_logits_follow_the_first_outputs_tokens(tiny_checkpoint):
    """Changing the tokens of the first output (and nothing else) changes the second output's logits."""
    from terratim.generation.sampler import Sampler, Target, TargetState

    model = small_generator(tiny_checkpoint, output_modalities=["LULC", "NDVI"], temps=0.0)
    keyed = model.network.keyed_inputs({"S2L2A": torch.randn(1, 12, 64, 64)})
    sampler = Sampler(model.network)
    ndvi = Target("tok_ndvi@224", 16, GenerationSettings(temperature=0.0))
    queries = model.network.image_queries(ndvi.key, torch.arange(16)[None], ndvi.grid)
    logits = []
    for fill in (0, 5):  # two different, fully decoded LULC token maps
        lulc = TargetState(torch.full((1, 16), fill), torch.ones(1, 16, dtype=torch.bool))
        ctx, bias = sampler.context(keyed, {"tok_lulc@224": lulc})
        with torch.no_grad():
            logits.append(sampler._logits(ndvi, queries, ctx, bias))
    assert not torch.allclose(logits[0], logits[1], atol=1e-3)


def test_single_output_is_the_same_chained_or_not(tiny_checkpoint):
    x = {"S2L2A": torch.randn(2, 12, 64, 64, generator=torch.Generator().manual_seed(3))}
    chained = small_generator(tiny_checkpoint, temps=0.0).generate_tokens(x, return_states=True)["LULC"]
    independent = small_generator(tiny_checkpoint, temps=0.0, chain=False).generate_tokens(x, return_states=True)
    assert torch.equal(chained.ids, independent["LULC"].ids)
    assert_close(chained.first_logits, independent["LULC"].first_logits, logits_tolerance(), "LULC logits")


def test_standardize_and_offset_do_not_leak_between_models(tiny_checkpoint):
    shifted = small_generator(tiny_checkpoint, standardize=True, offset={"S2L2A": 1000.0})
    plain = small_generator(tiny_checkpoint, standardize=True)
    x = torch.full((1, 12, 32, 32), 2000.0)
    mean_shifted, _ = shifted.statistics("S2L2A", x)
    mean_plain, _ = plain.statistics("S2L2A", x)
    torch.testing.assert_close(mean_shifted - mean_plain, torch.full_like(mean_plain, 1000.0))
    assert terratim.MODALITIES["S2L2A"].mean[0] == 1390.458


def test_temperature_zero_is_argmax_and_ignores_the_generator(tiny_checkpoint):
    model = small_generator(tiny_checkpoint, temps=0.0)
    x = {"S2L2A": torch.randn(1, 12, 32, 32)}
    a = model.generate_tokens(x, generator=torch.Generator().manual_seed(1))["LULC"]
    b = model.generate_tokens(x, generator=torch.Generator().manual_seed(2))["LULC"]
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (dict(output_modalities=["S2L1C"]), ValueError, "S2L1C cannot be generated"),
        (dict(modalities=["LULC"], output_modalities=["LULC"]), ValueError, "both an input and an output"),
        (dict(output_modalities=[]), ValueError, "output_modalities is empty"),
    ],
)
def test_bad_configuration(tiny_checkpoint, kwargs, error, message):
    with pytest.raises(error, match=message):
        small_generator(tiny_checkpoint, **kwargs)


def test_bad_inputs(tiny_checkpoint):
    model = small_generator(tiny_checkpoint)
    with pytest.raises(ValueError, match="square"):
        model.generate_tokens({"S2L2A": torch.randn(1, 12, 32, 64)})
    with pytest.raises(ValueError, match="expected 12 bands"):
        model.generate_tokens({"S2L2A": torch.randn(1, 4, 32, 32)})
    with pytest.raises(ValueError, match="multiples of 16"):
        model.generate_tokens({"S2L2A": torch.randn(1, 12, 40, 40)})


def test_decode_without_tokenizer_says_what_is_missing(tiny_checkpoint):
    model = small_generator(tiny_checkpoint)
    with pytest.raises(ValueError, match="no LULC tokenizer"):
        model.decode({"LULC": torch.zeros(1, 2, 2, dtype=torch.long)})


def test_classifier_free_guidance_changes_logits_and_scale_one_is_plain(tiny_checkpoint):
    x = {"S2L2A": torch.randn(1, 12, 32, 32, generator=torch.Generator().manual_seed(4))}
    plain = small_generator(tiny_checkpoint, temps=0.0).generate_tokens(x, return_states=True)["LULC"]
    guided = small_generator(tiny_checkpoint, temps=0.0, cfg_scale=3.0).generate_tokens(x, return_states=True)["LULC"]
    assert not torch.allclose(plain.first_logits, guided.first_logits, atol=1e-3)
    assert torch.isfinite(guided.first_logits).all()


def test_coordinates_are_decoded_autoregressively(tiny_checkpoint):
    model = small_generator(tiny_checkpoint, output_modalities=["COORDS"], temps=1.0)
    x = {"S2L2A": torch.randn(2, 12, 32, 32, generator=torch.Generator().manual_seed(5))}
    a = model.generate_tokens(x, generator=torch.Generator().manual_seed(3))["COORDS"]
    b = model.generate_tokens(x, generator=torch.Generator().manual_seed(3))["COORDS"]
    assert a.dim() == 2 and a.shape[0] == 2 and 1 <= a.shape[1] <= 4
    assert torch.equal(a, b) and int(a.max()) < 30000


def test_coordinates_decode_through_the_coordinates_tokenizer_module(tiny_checkpoint, tmp_path):
    from terratim.tokenizers.coords import CoordsTokenizer, write_coords_vocab

    coords = CoordsTokenizer.from_file(write_coords_vocab(tmp_path / "config.json", lats=[45.0], lons=[7.5]))
    model = small_generator(tiny_checkpoint, output_modalities=["COORDS"], tokenizers={"COORDS": coords})
    assert model.tokenizers["COORDS"] is coords
    lonlat = torch.tensor([[7.5, 45.0]])
    decoded = model.decode({"COORDS": coords.encode(lonlat)})["COORDS"]
    torch.testing.assert_close(decoded.double(), lonlat.double())  # grid points decode exactly


def test_a_tokenizer_that_is_not_a_module_is_refused(tiny_checkpoint):
    with pytest.raises(TypeError, match="the LULC tokenizer must be a torch.nn.Module.*got dict"):
        small_generator(tiny_checkpoint, tokenizers={"LULC": {}})


def test_token_inputs_get_encoder_only_tokenizers_and_outputs_keep_their_decoder(tiny_checkpoint):
    """A LULC input is only encoded (no 0.2-0.7 GB decoder allocated for it); a LULC output is decoded."""
    as_input = terratim.build("terramind_v1_tiny_generate", modalities=["S1GRD", "LULC"], output_modalities=["NDVI"],
                              ckpt_path=str(tiny_checkpoint), build_tokenizers_for_outputs=False)
    lulc_encoder = as_input.network.tokenizers["tok_lulc@224"]
    assert lulc_encoder.decoder is None and lulc_encoder.encoder is not None
    as_output = terratim.build("terramind_v1_tiny_generate", modalities=["S1GRD"], output_modalities=["LULC"],
                               ckpt_path=str(tiny_checkpoint))
    assert as_output.tokenizers["LULC"].decoder is not None


# ------------------------------------------------------------------------------------ outputs chosen per call
HLS_BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]


def assert_same_generation(a: dict, b: dict) -> None:
    """Two runs of the same computation: first-step logits agree to the manifest tolerance, and the token ids
    agree exactly wherever the two best logits are well apart (argmax cannot flip there)."""
    tolerance = logits_tolerance()
    assert list(a) == list(b)
    for name in a:
        assert_close(a[name].first_logits, b[name].first_logits, tolerance, f"{name} logits")
        top = a[name].first_logits.topk(2, dim=-1).values  # (B, N, 2)
        clear = (top[..., 0] - top[..., 1]) > 100 * tolerance["atol"]
        assert bool(clear.float().mean() > 0.5)  # most positions are clear
        assert torch.equal(a[name].ids[clear], b[name].ids[clear])


@pytest.fixture(scope="module")
def lulc_dem_model(tiny_checkpoint):
    return small_generator(tiny_checkpoint, output_modalities=["LULC", "DEM"], temperature=0.0)


def states_of(model, x, **kwargs):
    return model.generate_tokens(x, generator=torch.Generator().manual_seed(3), return_states=True, **kwargs)


def test_an_output_subset_equals_a_model_built_for_that_subset(tiny_checkpoint, lulc_dem_model):
    x = {"S2L2A": torch.randn(2, 12, 32, 32, generator=torch.Generator().manual_seed(5))}
    dem_only = small_generator(tiny_checkpoint, output_modalities=["DEM"], temperature=0.0)
    chosen = states_of(lulc_dem_model, x, outputs=["DEM"])
    assert list(chosen) == ["DEM"]
    assert_same_generation(chosen, states_of(dem_only, x))
    assert list(lulc_dem_model.generate_tokens(x, outputs="DEM")) == ["DEM"]  # one name as a string
    assert list(lulc_dem_model.generate_tokens(x)) == ["LULC", "DEM"]  # the default: every built output


def test_a_new_output_order_equals_a_model_built_in_that_order(tiny_checkpoint, lulc_dem_model):
    x = {"S2L2A": torch.randn(1, 12, 32, 32, generator=torch.Generator().manual_seed(6))}
    dem_first = small_generator(tiny_checkpoint, output_modalities=["DEM", "LULC"], temperature=0.0)
    reordered = states_of(lulc_dem_model, x, outputs=["dem", "LULC"])
    assert list(reordered) == ["DEM", "LULC"]
    assert_same_generation(reordered, states_of(dem_first, x))
    # chained in the order given: LULC generated after DEM is conditioned on it
    built_order = states_of(lulc_dem_model, x)
    assert not torch.allclose(reordered["LULC"].first_logits, built_order["LULC"].first_logits, atol=1e-3)


@pytest.mark.parametrize("outputs, message", [
    (["FOREST"], r"unknown output 'FOREST'; this model generates \['LULC', 'DEM'\]"),
    (["NDVI"], r"NDVI is not an output of this model; available outputs: \['LULC', 'DEM'\]"),
    (["S2L2A"], r"S2L2A is not an output of this model; available outputs: \['LULC', 'DEM'\]"),
    (["DEM", "dem"], r"output DEM is named twice"),
    ([], r"outputs is empty; .*\['LULC', 'DEM'\]"),
])
def test_unknown_or_unbuilt_outputs_raise_with_the_available_ones(lulc_dem_model, outputs, message):
    x = {"S2L2A": torch.randn(1, 12, 32, 32)}
    with pytest.raises(ValueError, match=message):
        lulc_dem_model.generate_tokens(x, outputs=outputs)
    with pytest.raises(ValueError, match=message):
        lulc_dem_model(x, outputs=outputs)


# --------------------------------------------------------------------------------------------- missing bands
def hls_like(raw: torch.Tensor) -> torch.Tensor:
    """The six HLS-like bands of a (B, 12, H, W) S2L2A tensor."""
    index = [terratim.MODALITIES["S2L2A"].band_index(b) for b in HLS_BANDS]
    return raw[:, index]


def test_filled_bands_equal_the_full_input_with_those_bands_at_their_mean(tiny_checkpoint):
    s2 = terratim.MODALITIES["S2L2A"]
    raw = torch.rand(1, 12, 32, 32, generator=torch.Generator().manual_seed(2)) * 4000
    with pytest.warns(UserWarning, match="S2L2A: bands COASTAL_AEROSOL, RED_EDGE_1, .*WATER_VAPOR are missing and "
                                         "filled with their pretraining mean .* results degrade"):
        filled = small_generator(tiny_checkpoint, temperature=0.0, standardize=True, bands={"S2L2A": HLS_BANDS},
                                 fill_missing_bands="mean")
    full = small_generator(tiny_checkpoint, temperature=0.0, standardize=True)
    at_mean = raw.clone()
    for band in s2.missing_bands(HLS_BANDS):
        at_mean[:, s2.band_index(band)] = s2.mean[s2.band_index(band)]
    assert_same_generation(states_of(filled, {"S2L2A": hls_like(raw)}), states_of(full, {"S2L2A": at_mean}))
    # standardized inputs (standardize=False): the absent bands become 0
    z = s2.standardize(raw)
    zeroed = z.clone()
    zeroed[:, [s2.band_index(b) for b in s2.missing_bands(HLS_BANDS)]] = 0.0
    assert_same_generation(states_of(filled, {"S2L2A": hls_like(z)}, standardize=False),
                           states_of(full, {"S2L2A": zeroed}, standardize=False))
    with pytest.raises(ValueError, match=r"S2L2A: this model takes the 6 bands BLUE, GREEN, .*SWIR_2 \(the other "
                                         r"pretrained bands are filled\), got shape \(1, 12, 32, 32\)"):
        filled.generate_tokens({"S2L2A": raw})


def test_fill_bands_places_each_band_and_the_means():
    s2 = terratim.MODALITIES["S2L2A"]
    given = ["B12", "B02"]  # any order, Sentinel-2 ids allowed
    x = np.stack([np.full((2, 2), 7.0), np.full((2, 2), 5.0)]).astype(np.float32)  # (2, H, W)
    raw = s2.fill_bands(x, given, standardized=False)
    assert raw.shape == (12, 2, 2) and raw.dtype == np.float32
    assert raw[s2.band_index("SWIR_2"), 0, 0] == 7.0 and raw[s2.band_index("BLUE"), 0, 0] == 5.0
    assert np.allclose(raw[s2.band_index("RED"), 0, 0], s2.mean[s2.band_index("RED")])
    z = s2.fill_bands(torch.ones(3, 2, 2, 2), given)
    assert z.shape == (3, 12, 2, 2) and float(z[:, s2.band_index("RED")].abs().max()) == 0.0


def test_missing_bands_are_an_error_unless_filled(tiny_checkpoint):
    with pytest.raises(ValueError, match=r"S2L2A: pretrained bands \['COASTAL_AEROSOL', .*\] are missing .*"
                                         "fill_missing_bands='mean'"):
        small_generator(tiny_checkpoint, bands={"S2L2A": HLS_BANDS})
    model = small_generator(tiny_checkpoint)  # the default: every pretrained band, or the backbone's clear error
    with pytest.raises(ValueError, match=r"S2L2A: expected 12 bands \(COASTAL_AEROSOL, .*\), got 6 channels"):
        model.generate_tokens({"S2L2A": torch.randn(1, 6, 32, 32)})


@pytest.mark.parametrize("options, message", [
    (dict(bands={"S2L2A": ["BLUE", "B10"]}, fill_missing_bands="mean"),
     r"S2L2A has no band 'B10'; pretrained bands are \['COASTAL_AEROSOL', 'BLUE', .*'SWIR_2'\]"),
    (dict(bands={"S2L2A": ["BLUE", "RED", "B04"]}, fill_missing_bands="mean"), r"bands \['RED'\] are given twice"),
    (dict(bands={"S1GRD": ["VV"]}, fill_missing_bands="mean"), r"S1GRD, which is not an input of this model"),
    (dict(fill_missing_bands="mean"), r"fill_missing_bands needs bands="),
    (dict(bands={"S2L2A": ["BLUE"]}, fill_missing_bands="zero"), r"fill_missing_bands must be None or one of"),
])
def test_bad_band_fill_options_raise(tiny_checkpoint, options, message):
    with pytest.raises(ValueError, match=message):
        small_generator(tiny_checkpoint, **options)
