"""One creation path: ``terratim.build(name, **kwargs)`` and ``terratim.list_models()``.

Builders register themselves with :func:`register`. Modules that hold builders are imported lazily the first
time the registry is consulted, so ``import terratim`` stays cheap. :func:`parameters` and :func:`accepts` say
which keyword arguments a builder takes, so callers (the fine-tuning factory) can check arguments before building.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch.nn as nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_PARAMETERS: dict[str, frozenset[str] | None] = {}  # None: the builder takes any keyword (forwards **kwargs)

# Modules whose import registers builders. A module missing here (not written yet) is skipped.
_BUILDER_MODULES = (
    "terratim.model.backbone",
    "terratim.tokenizers.build",
    "terratim.generation.generate",
    "terratim.tim",
    "terratim.sim_models",
)
_loaded = False


def named_parameters(fn: Callable[..., Any], skip: int = 0) -> frozenset[str]:
    """Names ``fn`` takes by keyword, after its first ``skip`` parameters (``*args``/``**kwargs`` left out)."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _takes_any_keyword(fn: Callable[..., Any]) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


def register(
    name: str, description: str = "", parameters: Iterable[str] | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a builder under ``name``.

    Args:
        name: the registry name.
        description: one line for ``list-models``; default the docstring's first line.
        parameters: the keyword arguments the builder takes, when its signature cannot say (it forwards
            ``**kwargs``); :func:`build` refuses any other. Default: the signature's names, or any keyword when
            the signature has ``**kwargs``.
    """

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS and _BUILDERS[name] is not fn:
            raise ValueError(f"model name {name!r} is registered twice")
        _BUILDERS[name] = fn
        doc_lines = (fn.__doc__ or "").strip().splitlines()
        _DESCRIPTIONS[name] = description or (doc_lines[0] if doc_lines else "")
        if parameters is not None:
            _PARAMETERS[name] = frozenset(parameters)
        else:
            _PARAMETERS[name] = None if _takes_any_keyword(fn) else named_parameters(fn)
        return fn

    return wrap


def register_sizes(pattern: str, build_fn: Callable[..., nn.Module], description: str) -> None:
    """Register ``pattern.format(size=...)`` for the four TerraMind sizes, each calling ``build_fn(size, **kw)``.

    Each builder takes exactly ``build_fn``'s named parameters after ``size``; :func:`build` refuses any other
    keyword (a ``**`` catch-all in ``build_fn`` is not taken to accept more).
    """
    accepted = named_parameters(build_fn, skip=1)
    for size in ("tiny", "small", "base", "large"):

        def builder(_size: str = size, **kwargs: Any) -> nn.Module:
            return build_fn(_size, **kwargs)

        register(pattern.format(size=size), description.format(size=size), parameters=accepted)(builder)


def _load_builders() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILDER_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a real missing dependency inside an existing module
                raise


def _known(name: str) -> None:
    _load_builders()
    if name not in _BUILDERS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_BUILDERS))}")


def parameters(name: str) -> frozenset[str] | None:
    """The keyword arguments the builder ``name`` takes, or None when it takes any (it forwards ``**kwargs``)."""
    _known(name)
    return _PARAMETERS[name]


def accepts(name: str, argument: str) -> bool:
    """Whether the builder ``name`` takes ``argument`` (True for a builder that takes any keyword)."""
    accepted = parameters(name)
    return accepted is None or argument in accepted


def unknown_arguments(name: str, arguments: Iterable[str]) -> list[str]:
    """The ``arguments`` the builder ``name`` does not take, sorted (empty when it takes any keyword)."""
    return sorted(a for a in set(arguments) if not accepts(name, a))


def list_models() -> list[str]:
    """Names accepted by :func:`build`."""
    _load_builders()
    return sorted(_BUILDERS)


def describe_models() -> dict[str, str]:
    """``{name: one-line description}`` for every registered model."""
    _load_builders()
    return {name: _DESCRIPTIONS.get(name, "") for name in sorted(_BUILDERS)}


BUILD_MODES = ("backbone", "generate", "tim")


def build_from_file(path: str, mode: str = "backbone", **kwargs: Any) -> nn.Module:
    """Build a TerraMind from a weights file and the JSON config next to it, without a size name.

    Args:
        path: a ``.safetensors`` written by ``terratim convert`` or ``terratim pretrain`` (or any file with its
            ``.json``).
        mode: ``"backbone"``, ``"generate"`` or ``"tim"``.
        **kwargs: the arguments of that builder (``modalities``, ``output_modalities``, ``tokenizers``...);
            ``img_size`` defaults to the size the file was trained at.
    """
    from terratim.weights import CheckpointError, checkpoint_config

    if mode not in BUILD_MODES:
        raise ValueError(f"mode must be one of {BUILD_MODES}, got {mode!r}")
    if "pretrained" in kwargs or "ckpt_path" in kwargs:
        raise TypeError("build_from_file takes the weights from `path`; do not pass pretrained or ckpt_path")
    saved = checkpoint_config(path)
    if saved is None:
        raise CheckpointError(
            f"{path} has no .json config next to it; build it by size name "
            "(terratim.build('terramind_v1_<size>', ckpt_path=...)) or re-run `terratim convert`"
        )
    kwargs.setdefault("img_size", saved.architecture.img_size)
    return _mode_builder(mode)(saved.architecture, ckpt_path=str(path), **kwargs)


def _mode_builder(mode: str) -> Callable[..., nn.Module]:
    if mode == "backbone":
        from terratim.model.backbone import build_backbone

        return build_backbone
    if mode == "generate":
        from terratim.generation.generate import build_generate

        return build_generate
    from terratim.tim import build_tim

    return build_tim


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: a registry name such as ``terramind_v1_base`` (see :func:`list_models`).
        **kwargs: passed to the builder (``modalities``, ``pretrained``, ``ckpt_path``, ...).
    """
    _known(name)  # loads the builder modules, so any registered name builds in a fresh process
    unknown = unknown_arguments(name, kwargs)
    if unknown:
        raise TypeError(f"{name}: unknown arguments {unknown}; it takes {sorted(parameters(name) or ())}")
    return _BUILDERS[name](**kwargs)
