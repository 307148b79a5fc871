"""Thinking-in-Modalities: ``terramind_v1_{size}_tim``.

TiM = a frozen generator (:class:`~terratim.generation.generate.TerraMindGenerate`, tokens only) + the trainable
backbone (:class:`~terratim.model.backbone.TerraMindBackbone`), composed. In ``forward`` the generator imagines
token ids of the TiM modalities from the inputs; the backbone embeds inputs + imagined tokens (appended after
the inputs) and returns its per-layer features, merged as for the plain backbone.

Both parts load from the same official file, as TerraTorch's ``TerraMindTiM`` does
(terratorch/models/backbones/terramind/model/terramind_tim.py). The trainable part's parameter names equal the reference
``TerraMindTiM``'s top-level names; the frozen copy lives under ``generator.``.

Inputs lacking pretrained bands are refused unless the model is built with ``bands={"S2L2A": [the bands the input
holds]}`` and ``fill_missing_bands="mean"``: the absent bands are then filled with their pretraining mean (0
after standardization) before both the generator and the backbone, with a warning that the result degrades.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from terratim import modalities as mods
from terratim.generation.generate import TerraMindGenerate, build_generate, input_band_fill
from terratim.generation.settings import GenerationSettings, generation_options
from terratim.model.backbone import MergeMethod, TerraMindBackbone
from terratim.model.config import TerraMindConfig, size_config
from terratim.registry import register_sizes
from terratim.weights import load_weights, terramind_state_dict


class TerraMindTiM(TerraMindBackbone):
    """A backbone that first imagines extra modalities with a frozen TerraMind generator.

    Args:
        config: architecture.
        modalities: inputs (pretrained modality names).
        tim_modalities: modalities to imagine, in order (e.g. ``["LULC"]``).
        generator: the frozen generator producing the TiM tokens.
        merge_method: as for the backbone; TiM tokens count as image modalities, and with ``dict`` they keep
            their own entry.
        modality_drop_rate: training-time modality dropout over inputs and imagined modalities.
        input_bands: ``{input modality: the bands it holds, in order}`` for inputs lacking pretrained bands; the
            absent bands are filled with their pretraining mean (0 in standardized inputs).
    """

    nested_prefixes = ("tokenizers.", "generator.")

    def __init__(
        self,
        config: TerraMindConfig,
        modalities: Sequence[str],
        tim_modalities: Sequence[str],
        generator: TerraMindGenerate,
        merge_method: MergeMethod = "mean",
        modality_drop_rate: float = 0.0,
        input_bands: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        tim_keys = {mods.resolve(n).name: mods.token_key(n) for n in tim_modalities}
        super().__init__(config, modalities, merge_method, modality_drop_rate, token_inputs=tim_keys)
        self.tim_modalities = list(tim_keys)
        self.generator = generator.eval().requires_grad_(False)
        self.input_bands = {mods.resolve(k).name: tuple(v) for k, v in (input_bands or {}).items()}

    def train(self, mode: bool = True) -> TerraMindTiM:
        """The generator stays in eval mode while the backbone trains."""
        super().train(mode)
        self.generator.eval()
        return self

    @property
    def imagined(self) -> list[str]:
        """TiM modalities the generator produces (those not given as inputs)."""
        return list(self.generator.outputs)

    def with_all_bands(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named standardized inputs, those built with ``input_bands`` completed to every pretrained band."""
        named = self.as_input_dict(x)
        for name, given in self.input_bands.items():
            if name in named:
                named[name] = mods.resolve(name).fill_bands(named[name], given, standardized=True)  # (B, C, H, W)
        return named

    def imagine(
        self,
        x: torch.Tensor | Mapping[str, torch.Tensor],
        generator: torch.Generator | None = None,
        outputs: Sequence[str] | str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Token ids the model imagines for an input: ``{name: (B, h, w)}`` (inputs standardized).

        ``outputs``: which of the imagined modalities, in which order (default: all, in the built order).
        """
        return self._imagine(self.with_all_bands(x), generator, outputs)

    def _imagine(
        self,
        named: Mapping[str, torch.Tensor],
        generator: torch.Generator | None,
        outputs: Sequence[str] | str | None = None,
    ) -> dict[str, torch.Tensor]:
        """:meth:`imagine` for named inputs that already hold every pretrained band."""
        given = {n: v for n, v in named.items() if n in self.generator.user_inputs}
        if not given:
            raise ValueError(f"TiM needs at least one of its inputs {self.generator.user_inputs}")
        return self.generator.generate_tokens(given, generator, standardize=False, outputs=outputs)

    def forward(
        self, x: torch.Tensor | Mapping[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> list[Any]:
        """Imagine the TiM modalities, append their tokens after the inputs, encode and merge.

        Args:
            x: standardized inputs ``{name: tensor}`` (or a bare tensor for the first modality). A TiM
                modality given here is used as given, not imagined.
            generator: randomness for sampling TiM tokens and for modality dropout.
        """
        named = self.with_all_bands(x)
        missing = [n for n in self.imagined if n not in named]
        if missing:
            imagined = self._imagine(named, generator)
            named.update({n: imagined[n] for n in missing})
        return super().forward(named, generator)


@generation_options(prefix="tim_")
def build_tim(
    size: str,
    modalities: Sequence[str] = ("S2L2A",),
    tim_modalities: Sequence[str] = ("LULC",),
    tim_settings: GenerationSettings | None = None,
    merge_method: MergeMethod = "mean",
    img_size: int = 224,
    pretrained: bool = False,
    ckpt_path: str | None = None,
    modality_drop_rate: float = 0.0,
    tokenizers: Mapping[str, nn.Module] | None = None,
    bands: Any = None,
    fill_missing_bands: str | None = None,
    **unknown: Any,
) -> TerraMindTiM:
    """Build a TiM backbone; the generator and the trainable encoder load from one official file.

    How the TiM modalities are imagined: ``tim_settings=GenerationSettings(...)`` and/or the options as ``tim_``
    keywords (``tim_temperature`` or ``tim_temps``, ``tim_decoding_steps``, ``tim_scheme``, ``tim_top_k``,
    ``tim_top_p``, ``tim_token_schedule``, ``tim_temperature_schedule``, ``tim_cfg_scale``, ``tim_chain``), which
    override ``tim_settings``. ``tim_chain`` (default True, as TerraTorch 1.2.13): each imagined modality is
    conditioned on the ones imagined before it; ``False`` imagines each from the inputs alone.

    ``bands={"S2L2A": [...]}`` with ``fill_missing_bands="mean"``: the inputs hold those bands; the absent
    pretrained bands are filled with their pretraining mean (a warning names them; results degrade).
    """
    if unknown:
        raise TypeError(f"terramind_v1_{size}_tim: unknown arguments {sorted(unknown)}")
    if bands and mods.check_fill_method(fill_missing_bands) is None:
        raise ValueError(
            "TiM cannot use band subsets: its frozen generator imagines the TiM modalities from the full "
            "pretrained bands of each input. Provide all pretrained bands, pass fill_missing_bands='mean' to fill "
            "the missing ones with their pretraining mean (results degrade), or use the plain backbone with bands=..."
        )
    if any(isinstance(m, Mapping) for m in modalities):
        raise ValueError(
            "TiM inputs must be pretrained modalities: the frozen generator has no embedding for "
            "new modalities. Use the plain backbone for new modalities."
        )
    if not tim_modalities:
        raise ValueError("tim_modalities is empty; name at least one modality to imagine, e.g. ['LULC']")
    input_bands = input_band_fill(modalities, bands, fill_missing_bands)
    input_names = {mods.resolve(m).name for m in modalities}
    to_imagine = [m for m in tim_modalities if mods.resolve(m).name not in input_names]
    generator = build_generate(
        size,
        modalities,
        to_imagine or tim_modalities[:1],
        settings=tim_settings,
        img_size=img_size,
        pretrained=False,
        build_tokenizers_for_outputs=False,
        tokenizers=tokenizers,
    )
    if not to_imagine:
        generator.outputs = {}
    config = size_config(size).with_(img_size=img_size)
    model = TerraMindTiM(config, modalities, tim_modalities, generator, merge_method, modality_drop_rate, input_bands)
    loaded = terramind_state_dict(size, pretrained, ckpt_path)
    if loaded is not None:
        state, source = loaded
        load_weights(generator.network, generator.network, state, source)
        load_weights(model, model, state, source)
    for name, tokenizer in (tokenizers or {}).items():
        if mods.resolve(name).name in input_names:
            model.attach_tokenizer(name, tokenizer)
    return model


register_sizes(
    "terramind_v1_{size}_tim",
    build_tim,
    "TerraMind v1 {size} with Thinking-in-Modalities (imagines e.g. LULC, then encodes).",
)
