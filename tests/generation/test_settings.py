"""GenerationSettings: validation, the old keyword arguments, every option reachable from ``build()``."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import terratim
from terratim.generation.settings import GenerationSettings, resolve_settings


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("scheme", "autoregressive", "scheme must be one of roar, maskgit"),
        ("decoding_steps", 0, "decoding_steps must be an integer >= 1"),
        ("decoding_steps", 2.0, "decoding_steps must be an integer"),
        ("decoding_steps", True, "decoding_steps must be an integer"),
        ("temperature", -0.1, "temperature must be a finite number >= 0"),
        ("temperature", float("nan"), "temperature must be a finite number"),
        ("top_k", -1, "top_k must be an integer >= 0"),
        ("top_k", 2.5, "top_k must be an integer >= 0 .* or a fraction in"),
        ("top_p", 1.5, r"top_p must be a finite number in \[0, 1\]"),
        ("token_schedule", "square", "token_schedule must be one of linear, cosine"),
        ("temperature_schedule", "onex:0.5", "temperature_schedule must be constant, linear or onex:MIN:POWER"),
        ("temperature_schedule", "falling", "temperature_schedule must be"),
        ("cfg_scale", -1.0, "cfg_scale must be a finite number >= 0"),
        ("timesteps", 0, "timesteps must be an integer >= 1"),
    ],
)
def test_bad_values_name_the_option_and_what_is_allowed(field, value, message):
    with pytest.raises(ValueError, match=message):
        GenerationSettings(**{field: value})


def test_chain_must_be_a_bool():
    with pytest.raises(TypeError, match="chain must be True or False"):
        GenerationSettings(chain="no")


@pytest.mark.parametrize("top_k", [0, 5, 5.0, 0.25])
def test_good_top_k_values_are_kept(top_k):
    assert GenerationSettings(top_k=top_k).top_k == top_k


def test_defaults_are_the_references_and_the_record_is_frozen():
    settings = GenerationSettings()
    assert (settings.scheme, settings.decoding_steps, settings.temperature, settings.top_k, settings.top_p) == (
        "roar", 1, 1.0, 0, 0.8)
    assert (settings.token_schedule, settings.temperature_schedule, settings.cfg_scale, settings.chain) == (
        "linear", "constant", 1.0, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.temperature = 0.0  # type: ignore[misc]


def test_old_name_temps_maps_to_temperature_and_may_not_be_given_twice():
    assert resolve_settings(temps=0.0).temperature == 0.0
    assert GenerationSettings().replace(temps=0.5).temperature == 0.5
    with pytest.raises(TypeError, match="temps and temperature name the same setting; give only temperature"):
        resolve_settings(temps=0.0, temperature=1.0)


def test_loose_options_override_the_settings_given():
    base = GenerationSettings(decoding_steps=4, scheme="maskgit")
    expected = GenerationSettings(decoding_steps=2, scheme="maskgit")
    assert resolve_settings(base, decoding_steps=2, top_p=None) == expected
    with pytest.raises(TypeError, match="settings must be a GenerationSettings"):
        resolve_settings({"temperature": 0.0})  # type: ignore[arg-type]


def small_generator(tiny_checkpoint, **kwargs):
    return terratim.build("terramind_v1_tiny_generate", ckpt_path=str(tiny_checkpoint), modalities=["S2L2A"],
                          output_modalities=["LULC"], build_tokenizers_for_outputs=False, **kwargs).eval()


def test_old_keyword_arguments_still_build_the_same_settings(tiny_checkpoint):
    old = dict(decoding_steps=2, temps=0.5, top_p=0.9, top_k=3, scheme="maskgit", chain=False, timesteps=7,
               cfg_scale=2.0)
    model = small_generator(tiny_checkpoint, **old)
    assert model.settings == GenerationSettings(decoding_steps=2, temperature=0.5, top_p=0.9, top_k=3,
                                                scheme="maskgit", chain=False, timesteps=7, cfg_scale=2.0)
    assert not model.chain
    whole = small_generator(tiny_checkpoint, settings=model.settings)
    assert whole.settings == model.settings
    assert small_generator(tiny_checkpoint, settings=model.settings, temps=0.0).settings.temperature == 0.0


def test_tim_takes_the_prefixed_keywords_or_the_settings_whole(tiny_checkpoint):
    def tim(**kwargs):
        return terratim.build("terramind_v1_tiny_tim", ckpt_path=str(tiny_checkpoint), modalities=["S1GRD"],
                              **kwargs)

    old = tim(tim_temps=0.0, tim_decoding_steps=2, tim_scheme="maskgit", tim_top_k=4, tim_top_p=0.5, tim_chain=False)
    assert old.generator.settings == GenerationSettings(temperature=0.0, decoding_steps=2, scheme="maskgit", top_k=4,
                                                        top_p=0.5, chain=False)
    whole = tim(tim_settings=GenerationSettings(token_schedule="cosine"), tim_temperature_schedule="linear")
    assert whole.generator.settings == GenerationSettings(token_schedule="cosine", temperature_schedule="linear")


def test_bad_option_in_build_names_it(tiny_checkpoint):
    with pytest.raises(ValueError, match="token_schedule must be one of linear, cosine; got 'square'"):
        small_generator(tiny_checkpoint, token_schedule="square")
    with pytest.raises(TypeError, match="temprature"):
        small_generator(tiny_checkpoint, temprature=0.0)


def decoded_per_step(model, seed: int = 0) -> list[int]:
    x = {"S2L2A": torch.randn(1, 12, 64, 64, generator=torch.Generator().manual_seed(seed))}
    states = model.generate_tokens(x, generator=torch.Generator().manual_seed(seed), return_states=True)
    assert bool(states["LULC"].decoded.all())
    return [p.shape[-1] for p in states["LULC"].orders]


@pytest.mark.parametrize("scheme", ["roar", "maskgit"])
def test_token_schedule_from_build_changes_the_tokens_per_step(tiny_checkpoint, scheme):
    """16 tokens in 3 steps: linear 6, 5, 5; cosine (MaskGIT's, few first) 4, 8, 4."""
    linear = small_generator(tiny_checkpoint, decoding_steps=3, scheme=scheme)
    cosine = small_generator(tiny_checkpoint, decoding_steps=3, scheme=scheme, token_schedule="cosine")
    assert decoded_per_step(linear) == [6, 5, 5]
    assert decoded_per_step(cosine) == [4, 8, 4]


def test_temperature_schedule_from_build_reaches_the_sampler(tiny_checkpoint, monkeypatch):
    """``linear`` lowers the temperature as tokens are decoded: 16 tokens in 2 steps -> T, T/2."""
    from terratim.generation import sampler

    seen = []
    monkeypatch.setattr(sampler, "sample_tokens",
                        lambda logits, temperature, *_, **__: _argmax(logits, temperature, seen))
    model = small_generator(tiny_checkpoint, decoding_steps=2, temperature=0.8, temperature_schedule="linear")
    decoded_per_step(model)
    assert seen == pytest.approx([0.8, 0.4])


def _argmax(logits: torch.Tensor, temperature: float, seen: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    seen.append(temperature)
    return logits.argmax(-1), logits.max(-1).values
