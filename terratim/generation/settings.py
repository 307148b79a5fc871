"""How to generate: one frozen record of every sampling and decoding option.

``GenerationSettings`` is the only place the generation options are listed. Builders take it whole
(``settings=`` / ``tim_settings=``) or as loose keyword arguments named after its fields (with an optional prefix,
``tim_`` for TiM); :func:`generation_options` turns those keywords into the record once, and
:func:`add_cli_arguments` / :func:`from_cli` do the same for the command line.

``temps`` is the older name of ``temperature`` (TerraTorch's name) and keeps working.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from terratim.generation.schedules import TOKEN_SCHEDULES, temperature_schedule

ImageScheme = Literal["roar", "maskgit"]
IMAGE_SCHEMES = ("roar", "maskgit")
ALIASES = {"temps": "temperature"}  # older keyword -> field


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling and decoding options of a generation model (defaults: the reference's settings)."""

    scheme: ImageScheme = "roar"
    """Order in which image tokens are decoded: ``roar`` (random order, the reference) or ``maskgit`` (most
    confident first). Sequences (coordinates) are always decoded left to right."""
    decoding_steps: int = 1
    """Decoding steps per image output, >= 1 (1 = every token in one pass, the reference)."""
    temperature: float = 1.0
    """Sampling temperature, >= 0 (0 = argmax, no randomness)."""
    top_k: int | float = 0
    """Keep the k most likely tokens, >= 0 (0 = off; a float in (0, 1) is a fraction of the vocabulary)."""
    top_p: float = 0.8
    """Nucleus threshold on the T = 1 distribution, in [0, 1] (0 or 1 = off)."""
    token_schedule: str = "linear"
    """How the tokens of an image are split over the decoding steps: ``linear`` (equal shares) or ``cosine``
    (MaskGIT's: few first, more later)."""
    temperature_schedule: str = "constant"
    """Temperature per decoding step: ``constant``, ``linear`` (falls with the tokens left) or ``onex:MIN:POWER``."""
    cfg_scale: float = 1.0
    """Classifier-free guidance scale, finite and >= 0 (1 = off, the reference)."""
    chain: bool = True
    """Condition each output on the tokens of the outputs generated before it (TerraTorch 1.2.13, the default);
    ``False`` generates every output from the inputs alone."""
    timesteps: int = 50
    """Diffusion steps, >= 1, when decoding tokens of continuous modalities to pixels."""

    def __post_init__(self) -> None:
        _choice("scheme", self.scheme, IMAGE_SCHEMES)
        _choice("token_schedule", self.token_schedule, tuple(TOKEN_SCHEDULES))
        _check_temperature_schedule(self.temperature_schedule)
        _integer("decoding_steps", self.decoding_steps, 1)
        _integer("timesteps", self.timesteps, 1)
        _number("temperature", self.temperature, 0.0, math.inf)
        _number("top_p", self.top_p, 0.0, 1.0)
        _number("cfg_scale", self.cfg_scale, 0.0, math.inf)
        _check_top_k(self.top_k)
        if not isinstance(self.chain, bool):
            raise TypeError(f"generation option chain must be True or False, got {self.chain!r}")

    def replace(self, **options: Any) -> GenerationSettings:
        """A copy with ``options`` (field names or their older aliases, e.g. ``temps``) changed."""
        return dataclasses.replace(self, **_field_options(options))


OPTION_NAMES = (*(f.name for f in dataclasses.fields(GenerationSettings)), *ALIASES)
SAMPLING_FLAGS = OPTION_NAMES[:8]  # the fields set by a flag of the same name (``--top-k`` -> top_k)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"generation option {name} must be one of {', '.join(allowed)}; got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(name: str, value: Any, low: float, high: float) -> None:
    if not _is_number(value) or not math.isfinite(value) or not low <= value <= high:
        bounds = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise ValueError(f"generation option {name} must be a finite number {bounds}; got {value!r}")


def _integer(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"generation option {name} must be an integer >= {low}; got {value!r}")


def _check_top_k(value: Any) -> None:
    fraction = isinstance(value, float) and 0 < value < 1
    if not _is_number(value) or value < 0 or not (fraction or float(value).is_integer()):
        raise ValueError(
            f"generation option top_k must be an integer >= 0 (0 = off) or a fraction in (0, 1); got {value!r}"
        )


def _check_temperature_schedule(value: Any) -> None:
    try:
        temperature_schedule(str(value), 1.0, [1, 1])
    except ValueError:
        raise ValueError(
            f"generation option temperature_schedule must be constant, linear or onex:MIN:POWER "
            f"(two numbers, e.g. onex:0.5:1); got {value!r}"
        ) from None


def _field_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with older aliases renamed to fields; an alias given with its field raises."""
    fields: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for name, value in options.items():
        field = ALIASES.get(name, name)
        if field in fields:
            raise TypeError(f"generation options {given_as[field]} and {name} name the same setting; give only {field}")
        fields[field], given_as[field] = value, name
    return fields


def resolve_settings(settings: GenerationSettings | None = None, **options: Any) -> GenerationSettings:
    """``settings`` (default: the defaults) with the loose ``options`` that are not None applied on top."""
    if settings is not None and not isinstance(settings, GenerationSettings):
        raise TypeError(f"settings must be a GenerationSettings, got {type(settings).__name__}")
    given = {k: v for k, v in options.items() if v is not None}
    return (settings or GenerationSettings()).replace(**given)


def generation_options(prefix: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the builder takes ``{prefix}settings`` and every option as ``{prefix}<option>`` keywords.

    The wrapped builder receives only ``{prefix}settings`` (a :class:`GenerationSettings`, loose options applied
    on top). Its signature lists the options (default None: take the value from ``{prefix}settings``), so the
    registry accepts them.
    """
    settings_name = f"{prefix}settings"

    def wrap(builder: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(builder)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            loose = {name: kwargs.pop(prefix + name) for name in OPTION_NAMES if prefix + name in kwargs}
            kwargs[settings_name] = resolve_settings(kwargs.pop(settings_name, None), **loose)
            return builder(*args, **kwargs)

        signature = inspect.signature(builder)
        params = list(signature.parameters.values())
        at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
        added = [inspect.Parameter(prefix + n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in OPTION_NAMES]
        wrapper.__signature__ = signature.replace(parameters=[*params[:at], *added, *params[at:]])  # type: ignore[attr-defined]
        return wrapper

    return wrap


# ----------------------------------------------------------------------------------------------------- CLI
def _top_k(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def add_cli_arguments(parser: argparse.ArgumentParser | Any, temperature: float | None = None) -> None:
    """Sampling flags (``--scheme``, ``--decoding-steps``, ``--temperature``, ``--top-k``, ``--top-p``,
    ``--token-schedule``, ``--temperature-schedule``, ``--cfg-scale``, ``--independent-outputs``); a flag left out
    keeps the :class:`GenerationSettings` default (``temperature`` overrides the temperature's default)."""
    default = GenerationSettings()
    temperature_default = default.temperature if temperature is None else temperature
    add = parser.add_argument
    add("--scheme", choices=IMAGE_SCHEMES, help=f"image token decoding order (default {default.scheme})")
    add("--decoding-steps", type=int, help=f"token decoding steps (default {default.decoding_steps} = one pass)")
    add(
        "--temperature",
        type=float,
        default=temperature,
        help=f"sampling temperature, 0 = argmax (default {temperature_default})",
    )
    add("--top-k", type=_top_k, help="keep the k most likely tokens (0 = off, default; a value < 1 is a fraction)")
    add("--top-p", type=float, help=f"nucleus threshold (0 or 1 = off; default {default.top_p})")
    add("--token-schedule", choices=tuple(TOKEN_SCHEDULES), help="tokens per decoding step (default linear)")
    add("--temperature-schedule", help="temperature per step: constant (default), linear or onex:MIN:POWER")
    add("--cfg-scale", type=float, help="classifier-free guidance scale (default 1 = off)")
    add(
        "--independent-outputs",
        action="store_true",
        help="generate every output from the inputs alone (default: each output is conditioned on the outputs "
        "generated before it, as TerraTorch 1.2.13 does)",
    )


def from_cli(args: argparse.Namespace, timesteps: int | None = None) -> GenerationSettings:
    """The settings the flags of :func:`add_cli_arguments` ask for (``timesteps``: the command's diffusion steps)."""
    sampling = {name: getattr(args, name, None) for name in SAMPLING_FLAGS}
    return resolve_settings(**sampling, chain=not args.independent_outputs, timesteps=timesteps)
