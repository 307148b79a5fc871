"""Parameter-efficient fine-tuning of the backbone with the ``peft`` library, in TerraTorch's config form.

``model_args.peft_config`` (as TerraTorch's ``EncoderDecoderFactory`` takes it)::

    peft_config:
      method: LORA                    # a peft tuner type (LORA is the tested one)
      replace_qkv: qkv                # optional: split each fused ``*.qkv`` Linear into q_linear/k_linear/v_linear
      peft_config_kwargs:             # passed to the method's peft config class (``peft.LoraConfig`` for LORA)
        target_modules: [qkv.q_linear, qkv.v_linear, mlp.fc1, mlp.fc2]
        r: 4
        lora_alpha: 8

Only the backbone gets adapters. Every backbone weight that is not an adapter is frozen, except the patch
embedding of a new modality (``{"HLS": 6}``), which has no pretrained weights to keep. Frozen parts nested in
the backbone (TiM's generator, tokenizers of token inputs: a module's ``nested_prefixes``) get no adapters and stay
frozen. Necks, decoder and head train as usual.

:func:`merge_peft` folds the adapters into the weights and fuses split qkv projections again: the result has
the plain backbone's parameter names (``terratim merge-peft`` writes it as a plain task checkpoint).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from terratim.layers import Linear

PEFT_CONFIG_KEYS = ("method", "replace_qkv", "peft_config_kwargs")
TESTED_METHODS = ("LORA",)


@dataclasses.dataclass(frozen=True)
class PeftSettings:
    """A validated ``peft_config``: the peft method, the qkv suffix to split (or None), the method's options."""

    method: str
    replace_qkv: str | None
    options: dict[str, Any]


class SplitQKV(nn.Module):
    """A fused ``Linear(D, 3D)`` as three ``Linear(D, D)`` (``q_linear``, ``k_linear``, ``v_linear``).

    The output is ``cat([q, k, v], -1)``, the fused projection's output (weights are the fused weight's row
    blocks), so adapters can target q and v separately.
    """

    def __init__(self, fused: nn.Linear) -> None:
        super().__init__()
        dim = fused.in_features
        if fused.out_features != 3 * dim:
            raise ValueError(f"replace_qkv: a qkv projection maps D to 3 D features, got {dim} -> {fused.out_features}")
        has_bias = fused.bias is not None
        self.q_linear, self.k_linear, self.v_linear = (Linear(dim, dim, bias=has_bias) for _ in range(3))
        with torch.no_grad():
            for i, part in enumerate(self.parts()):
                part.to(fused.weight)
                part.weight.copy_(fused.weight[i * dim : (i + 1) * dim])  # (D, D) row block i
                if has_bias:
                    part.bias.copy_(fused.bias[i * dim : (i + 1) * dim])
                part.weight.requires_grad_(fused.weight.requires_grad)
                if has_bias:
                    part.bias.requires_grad_(fused.bias.requires_grad)

    def parts(self) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        """``(q_linear, k_linear, v_linear)``."""
        return self.q_linear, self.k_linear, self.v_linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(x) for part in self.parts()], dim=-1)  # (..., 3 D)

    def fused(self) -> nn.Linear:
        """The equivalent fused ``Linear(D, 3D)`` (weights concatenated; plain Linears only)."""
        q = self.q_linear
        if not all(type(part) in (nn.Linear, Linear) for part in self.parts()):
            raise ValueError("SplitQKV.fused: merge the adapters first; q/k/v must be plain Linear layers")
        fused = Linear(q.in_features, 3 * q.out_features, bias=q.bias is not None).to(q.weight)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([part.weight for part in self.parts()]))  # (3 D, D)
            if q.bias is not None:
                fused.bias.copy_(torch.cat([part.bias for part in self.parts()]))
        return fused


# ------------------------------------------------------------------------------------------------ config
def _method_classes(method: str) -> tuple[type, type]:
    """The peft config class and tuner class of ``method`` (a ``peft.PeftType`` name)."""
    try:
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
    except ImportError as err:
        raise ImportError("model_args.peft_config needs the peft package: pip install peft") from err
    tuners = {str(getattr(k, "value", k)): v for k, v in PEFT_TYPE_TO_TUNER_MAPPING.items()}
    if method not in tuners:
        raise ValueError(
            f"model_args.peft_config.method: unknown or unsupported PEFT method {method!r}; expected "
            f"one of {', '.join(sorted(tuners))} (LORA is the tested one)"
        )
    configs = {str(getattr(k, "value", k)): v for k, v in PEFT_TYPE_TO_CONFIG_MAPPING.items()}
    return configs[method], tuners[method]


def parse_peft_config(peft_config: Mapping[str, Any]) -> PeftSettings:
    """Check a TerraTorch-style ``peft_config`` (keys, method, option names) and return its settings."""
    if not isinstance(peft_config, Mapping):
        raise ValueError(
            f"model_args.peft_config must be a mapping with {', '.join(PEFT_CONFIG_KEYS)}, got {peft_config!r}"
        )
    unknown = sorted(set(peft_config) - set(PEFT_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"model_args.peft_config: unknown keys {unknown}; expected {', '.join(PEFT_CONFIG_KEYS)}")
    method = peft_config.get("method")
    if not isinstance(method, str):
        raise ValueError(f"model_args.peft_config.method must name a PEFT method (e.g. LORA), got {method!r}")
    replace = peft_config.get("replace_qkv")
    if replace is not None and (not isinstance(replace, str) or not replace):
        raise ValueError(f"model_args.peft_config.replace_qkv must be a module name suffix (e.g. qkv), got {replace!r}")
    options = dict(peft_config.get("peft_config_kwargs") or {})
    config_class, _ = _method_classes(method.upper())
    fields = {f.name for f in dataclasses.fields(config_class)} - {"peft_type"}
    bad = sorted(set(options) - fields)
    if bad:
        raise ValueError(f"model_args.peft_config.peft_config_kwargs: {bad} are not options of {config_class.__name__}")
    return PeftSettings(method.upper(), replace, options)


def _build_method_config(settings: PeftSettings) -> Any:
    config_class, _ = _method_classes(settings.method)
    try:
        config = config_class(**settings.options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"model_args.peft_config.peft_config_kwargs: {str(err).splitlines()[0]}") from err
    if hasattr(config, "target_modules") and config.target_modules is None:
        raise ValueError(
            "model_args.peft_config.peft_config_kwargs needs target_modules, e.g. [qkv.q_linear, "
            "qkv.v_linear, mlp.fc1, mlp.fc2] with replace_qkv: qkv"
        )
    return config


# ------------------------------------------------------------------------------------------------ qkv
def replace_qkv(module: nn.Module, suffix: str) -> int:
    """Split every ``nn.Linear`` named ``*.<suffix>`` into a :class:`SplitQKV`, in place; returns the count."""
    names = [name for name, _ in module.named_modules() if name == suffix or name.endswith(f".{suffix}")]
    if not names:
        raise ValueError(f"model_args.peft_config.replace_qkv: no module of the backbone is named *.{suffix}")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name)
        target = getattr(parent, child)
        if type(target) not in (nn.Linear, Linear):
            raise ValueError(
                f"model_args.peft_config.replace_qkv: {name} is a {type(target).__name__}, not a fused qkv nn.Linear"
            )
        setattr(parent, child, SplitQKV(target))
    return len(names)


def fuse_qkv(module: nn.Module) -> int:
    """Replace every :class:`SplitQKV` in ``module`` by its fused Linear, in place; returns the count."""
    names = [name for name, m in module.named_modules() if isinstance(m, SplitQKV)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name)
        setattr(parent, child, getattr(parent, child).fused())
    return len(names)


# ------------------------------------------------------------------------------------------------ targets
def _linear_suffixes(module: nn.Module) -> list[str]:
    """The last two name parts of the module's Linear layers (``attn.qkv``, ``mlp.fc1``...), as examples."""
    found = {".".join(name.split(".")[-2:]) for name, m in module.named_modules() if isinstance(m, nn.Linear)}
    return sorted(found)


def check_targets(module: nn.Module, target_modules: Any) -> None:
    """Each target (a name or ``.``-suffix, or one regular expression) must match a module of ``module``."""
    names = [name for name, _ in module.named_modules() if name]
    if isinstance(target_modules, str):
        if target_modules != "all-linear" and not any(re.fullmatch(target_modules, n) for n in names):
            raise ValueError(
                f"model_args.peft_config.peft_config_kwargs.target_modules: {target_modules!r} "
                "matches no module of the backbone"
            )
        return
    for target in sorted(target_modules or ()):
        if not any(n == target or n.endswith(f".{target}") for n in names):
            suffixes = ", ".join(_linear_suffixes(module))
            raise ValueError(
                f"model_args.peft_config.peft_config_kwargs.target_modules: {target!r} matches no "
                f"module of the backbone; its Linear layers end in {suffixes}"
            )


@contextmanager
def _without_nested_parts(module: nn.Module) -> Iterator[list[nn.Module]]:
    """Detach the frozen parts nested in ``module`` (children named by a ``nested_prefixes`` attribute, such as
    TiM's ``generator``) for the duration, so they get no adapters; yields them; reattaches them in place."""
    detached: list[tuple[nn.Module, list[str], dict[str, nn.Module]]] = []
    for owner in list(module.modules()):
        prefixes = getattr(owner, "nested_prefixes", ())
        children: dict[str, nn.Module] = {}
        for name in (p.rstrip(".") for p in prefixes):
            child = owner._modules.get(name)
            if child is not None:
                children[name] = child
        if children:
            detached.append((owner, list(owner._modules), children))
            for name in children:
                del owner._modules[name]
    try:
        yield [child for _, _, children in detached for child in children.values()]
    finally:
        for owner, order, children in detached:
            now = dict(owner._modules)
            owner._modules.clear()
            owner._modules.update({name: children[name] if name in children else now[name] for name in order})
            owner._modules.update({name: m for name, m in now.items() if name not in order})


def _new_modality_embeddings(module: nn.Module) -> list[nn.Module]:
    """Patch embeddings of new modalities (built from ``{"NAME": channels}``): they have no pretrained weights."""
    found = []
    for owner in module.modules():
        inputs, embeddings = getattr(owner, "inputs", None), getattr(owner, "encoder_embeddings", None)
        if isinstance(inputs, Mapping) and isinstance(embeddings, nn.ModuleDict):
            found += [embeddings[key] for key, channels in inputs.values() if channels and key in embeddings]
    return found


# ------------------------------------------------------------------------------------------------ apply / merge
def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts of ``module``."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def peft_backbone(backbone: nn.Module, peft_config: Mapping[str, Any]) -> nn.Module:
    """``backbone`` with adapters (a peft tuner module wrapping it; attributes such as ``out_channels`` pass
    through). Non-adapter backbone weights are frozen (see the module docstring for the exceptions)."""
    settings = parse_peft_config(peft_config)
    if settings.method not in TESTED_METHODS:
        warnings.warn(f"PEFT method {settings.method} is not tested with terratim; LORA is", stacklevel=2)
    method_config = _build_method_config(settings)
    _, tuner_class = _method_classes(settings.method)
    with _without_nested_parts(backbone) as nested:
        if settings.replace_qkv is not None:
            replace_qkv(backbone, settings.replace_qkv)
        check_targets(backbone, getattr(method_config, "target_modules", None))
        wrapped = tuner_class(backbone, method_config, "default")
    for part in nested:
        part.requires_grad_(False)
    for embedding in _new_modality_embeddings(backbone):
        embedding.requires_grad_(True)
    return wrapped


def is_peft(backbone: nn.Module) -> bool:
    """Whether ``backbone`` is a peft tuner module (built by :func:`peft_backbone`)."""
    try:
        from peft.tuners.tuners_utils import BaseTuner
    except ImportError:
        return False
    return isinstance(backbone, BaseTuner)


def merge_peft(backbone: nn.Module) -> nn.Module:
    """The plain backbone with the adapters folded into its weights and split qkv projections fused again."""
    if not is_peft(backbone):
        raise ValueError(f"the backbone ({type(backbone).__name__}) has no PEFT adapters to merge")
    merge_and_unload = getattr(backbone, "merge_and_unload", None)
    if merge_and_unload is None:
        raise ValueError(f"PEFT method {type(backbone).__name__} cannot be merged into the weights")
    plain: nn.Module = merge_and_unload()
    fuse_qkv(plain)
    return plain


def apply_peft(model: nn.Module, peft_config: Mapping[str, Any]) -> nn.Module:
    """Give ``model.backbone`` adapters (:func:`peft_backbone`) and print the trainable-parameter count."""
    backbone = peft_backbone(model.get_submodule("backbone"), peft_config)
    model.backbone = backbone
    trainable, total = count_parameters(model)
    report(
        f"PEFT {parse_peft_config(peft_config).method}: {trainable:,} trainable of {total:,} parameters "
        f"({count_parameters(backbone)[0]:,} in the backbone)"
    )
    return model


def report(line: str) -> None:
    """Print ``line`` once (on the process of global rank 0)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) == 0:
        print(line, flush=True)
