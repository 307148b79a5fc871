"""Load TerraTorch's TerraMind model code (the reference) without the rest of TerraTorch.

terratim never imports TerraTorch; only comparison scripts under ``benchmarks/`` use this loader. Importing
``terratorch`` normally pulls a large dependency tree (torchgeo, albumentations, lightning, ...). The TerraMind
model files need only torch, einops and huggingface_hub, so this module registers small stand-ins for the
packages above them and imports ``terratorch.models.backbones.terramind.model.terramind_register`` from a folder
that holds the installed files. Install the reference there once, without its dependencies::

    pip install --no-deps --target DIR terratorch==1.2.13 timm einops diffusers

then pass ``--reference-site DIR`` to a comparison script or set ``TERRATIM_REFERENCE_SITE=DIR``.

What is replaced, and why:

- ``terratorch``, ``terratorch.models``, ``terratorch.models.backbones``, ``...terramind`` and
  ``...terramind.tokenizer``: empty packages pointing at the real folders, so their ``__init__`` files (which
  import the whole library) do not run, while the real submodules still load from the folder.
- ``terratorch.registry``: a tiny registry with the ``register`` decorator the register module uses.
- ``...terramind.tokenizer.tokenizer_register``: every tokenizer builder returns :class:`InertTokenizer`. The
  comparisons feed raw inputs and read token ids, so no tokenizer is ever run; its ``decode_tokens`` returns the
  tokens, which makes the reference's generation outputs token ids (as the parity fixtures do).
- ``torchvision`` (only while ``...terramind.utils`` is imported, and only when it is not installed): that
  module imports it for a function the model code never calls.

Weights load through the reference's own ``pretrained=True`` path, with ``hf_hub_download`` in the register
module returning a local official-layout ``.pt`` (see :func:`build_reference`), so TerraTorch's own checkpoint
filters run unchanged.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

SITE_VARIABLE = "TERRATIM_REFERENCE_SITE"
INSTALL_LINE = "pip install --no-deps --target DIR terratorch==1.2.13 timm einops diffusers"
TERRAMIND = "terratorch.models.backbones.terramind"
REGISTER = f"{TERRAMIND}.model.terramind_register"
STUB_PACKAGES = ("terratorch", "terratorch.models", "terratorch.models.backbones", TERRAMIND, f"{TERRAMIND}.tokenizer")


class InertTokenizer(nn.Module):
    """Stands in for a TerraMind tokenizer that the comparison never runs; decoding returns the token ids."""

    patch_size = 16

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def decode_tokens(self, tokens: Any, **_: Any) -> Any:
        return tokens

    def encode(self, *_: Any, **__: Any) -> Any:
        raise RuntimeError(f"{self.name} is a stub in this comparison: pass raw inputs, not tokenized modalities")


class Registry:
    """The part of TerraTorch's registry API that terramind_register uses: ``@REGISTRY.register``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.builders: dict[str, Callable[..., nn.Module]] = {}

    def register(self, builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        self.builders[builder.__name__] = builder
        return builder

    def build(self, name: str, **kwargs: Any) -> nn.Module:
        return self.builders[name](**kwargs)


def resolve_site(site: str | os.PathLike | None = None) -> Path:
    """The folder that holds the reference's ``terratorch`` package (argument, else $TERRATIM_REFERENCE_SITE)."""
    chosen = site or os.environ.get(SITE_VARIABLE)
    if not chosen:
        raise SystemExit(
            f"no reference given: pass --reference-site DIR or set {SITE_VARIABLE}=DIR, "
            f"after installing it with: {INSTALL_LINE}"
        )
    root = Path(chosen).expanduser().resolve()
    register_file = root / REGISTER.replace(".", "/")
    if not register_file.with_suffix(".py").is_file():
        raise SystemExit(
            f"{root} holds no TerraTorch TerraMind code (looked for {register_file}.py); "
            f"install it with: {INSTALL_LINE.replace('DIR', str(root))}"
        )
    return root


def installed_version(root: Path) -> str:
    """TerraTorch version recorded by pip in the folder ('unknown' when no metadata is there)."""
    for metadata in sorted(root.glob("terratorch-*.dist-info/METADATA")):
        for line in metadata.read_text().splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _package(name: str, folder: Path) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = [str(folder)]  # submodules load from the real folder; its __init__ does not run
    module.__package__ = name
    return module


def _tokenizer_register() -> types.ModuleType:
    module = types.ModuleType(f"{TERRAMIND}.tokenizer.tokenizer_register")

    def builder(name: str) -> Callable[..., nn.Module]:
        if not name.startswith("terramind_"):
            raise AttributeError(name)
        return lambda **_: InertTokenizer(name)

    module.__getattr__ = builder  # any `from ... import terramind_v1_tokenizer_xyz` gets a stub builder
    return module


@contextmanager
def _without_torchvision() -> Iterator[None]:
    """Provide an empty torchvision.transforms.functional while the block runs, if torchvision is absent."""
    if importlib.util.find_spec("torchvision") is not None:
        yield
        return
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
    try:
        yield
    finally:
        for name in names:
            sys.modules.pop(name, None)


def load_reference(site: str | os.PathLike | None = None) -> types.ModuleType:
    """Import the reference's ``terramind_register`` module (its builders are module functions)."""
    root = resolve_site(site)
    loaded = sys.modules.get("terratorch")
    if loaded is not None and not getattr(loaded, "_terratim_stub", False):
        raise RuntimeError("the real terratorch is already imported in this process; run the comparison alone")
    if loaded is not None:
        return sys.modules[REGISTER]
    if str(root) not in sys.path:
        sys.path.append(str(root))  # for einops (and nothing that shadows the environment's own packages)
    for name in STUB_PACKAGES:
        sys.modules[name] = _package(name, root / name.replace(".", "/"))
    sys.modules["terratorch"]._terratim_stub = True
    registry = types.ModuleType("terratorch.registry")
    registry.TERRATORCH_BACKBONE_REGISTRY = Registry("backbone")
    registry.TERRATORCH_FULL_MODEL_REGISTRY = Registry("full_model")
    sys.modules["terratorch.registry"] = registry
    sys.modules[f"{TERRAMIND}.tokenizer.tokenizer_register"] = _tokenizer_register()
    with _without_torchvision():
        importlib.import_module(f"{TERRAMIND}.utils")
    return importlib.import_module(REGISTER)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def build_reference(
    register: types.ModuleType, name: str, weights: str | os.PathLike | None, **kwargs: Any
) -> tuple[nn.Module, list[str]]:
    """Build ``name`` (e.g. ``terramind_v1_tiny_generate``) with the reference's own loading path.

    Args:
        register: the module returned by :func:`load_reference`.
        name: a builder of the register module.
        weights: an official-layout ``.pt``; the reference's ``pretrained=True`` path loads it through its own
            checkpoint filter (``hf_hub_download`` answers with this file). ``None`` keeps the random init.
        **kwargs: passed to the builder (``modalities``, ``output_modalities``, ``temps``, ...).

    Returns:
        The model in eval mode, and the warnings the reference logged while building it (e.g. keys it
        left at random init).
    """
    builder = getattr(register, name, None)
    if builder is None:
        raise SystemExit(f"the reference has no model {name!r}")
    collect = _Collect()
    logger = logging.getLogger("terramind")
    logger.addHandler(collect)
    propagate, logger.propagate = logger.propagate, False  # reported to the caller instead of printed
    download = register.hf_hub_download
    if weights is not None:
        register.hf_hub_download = lambda **_: str(weights)
    try:
        model = builder(pretrained=weights is not None, **kwargs)
    finally:
        register.hf_hub_download = download
        logger.removeHandler(collect)
        logger.propagate = propagate
    return model.eval(), collect.messages
