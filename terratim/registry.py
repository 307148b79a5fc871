"""One creation path: ``terratim.build(name, **kwargs)`` and ``terratim.list_models()``.

Builders register themselves with :func:`register`. Modules that hold builders are imported lazily the first
time the registry is consulted, so ``import terratim`` stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch.nn as nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}

# Modules whose import registers builders. A module missing here (not written yet) is skipped.
_BUILDER_MODULES = (
    "terratim.model.backbone",
    "terratim.tokenizers.build",
    "terratim.generation.generate",
    "terratim.tim",
    "terratim.sim_models",
)
_loaded = False


def register(name: str, description: str = "") -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a builder under ``name``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS and _BUILDERS[name] is not fn:
            raise ValueError(f"model name {name!r} is registered twice")
        _BUILDERS[name] = fn
        doc_lines = (fn.__doc__ or "").strip().splitlines()
        _DESCRIPTIONS[name] = description or (doc_lines[0] if doc_lines else "")
        return fn

    return wrap


def register_sizes(pattern: str, build_fn: Callable[..., nn.Module], description: str) -> None:
    """Register ``pattern.format(size=...)`` for the four TerraMind sizes, each calling ``build_fn(size, **kw)``."""
    for size in ("tiny", "small", "base", "large"):

        def builder(_size: str = size, **kwargs: Any) -> nn.Module:
            return build_fn(_size, **kwargs)

        register(pattern.format(size=size), description.format(size=size))(builder)


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


def list_models() -> list[str]:
    """Names accepted by :func:`build`."""
    _load_builders()
    return sorted(_BUILDERS)


def describe_models() -> dict[str, str]:
    """``{name: one-line description}`` for every registered model."""
    _load_builders()
    return {name: _DESCRIPTIONS.get(name, "") for name in sorted(_BUILDERS)}


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: a registry name such as ``terramind_v1_base`` (see :func:`list_models`).
        **kwargs: passed to the builder (``modalities``, ``pretrained``, ``ckpt_path``, ...).
    """
    _load_builders()
    if name not in _BUILDERS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[name](**kwargs)
