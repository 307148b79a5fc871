"""``Linear``: ``nn.Linear`` whose CPU inference runs on oneDNN with the bias and the next op fused.

PyTorch computes an fp32 ``nn.Linear`` on the CPU with a BLAS ``addmm``: the bias is first copied into every
output row, then the product is added, and the activation or residual that follows is one more pass over the
output. oneDNN's linear applies the bias, an activation (GELU, SiLU) or a second operand (the residual, SwiGLU's
gate) in the same pass, and its kernels use AVX-512 on every x86-64 CPU that has it (the bundled MKL takes its
AVX2 code path on AMD processors). The arithmetic stays fp32: results differ from ``addmm`` by a few ulp, from
the summation order.

The oneDNN path is taken only where it computes what ``nn.Linear`` computes: an x86-64 CPU whose oneDNN kernels
agreed with ``F.linear`` on a first small product (checked once per process), fp32 CPU tensors, no CPU autocast, no
forward-mode AD or ``torch.func`` transform, not while tracing or exporting (ONNX, ``torch.export``,
``torch.compile``) and not under a dispatch mode such as a FLOP counter. Without an autograd graph to build, the
activation or second operand is fused too. A layer in eval mode whose call does record a graph (a model run without
``torch.no_grad()``) still takes oneDNN's product, through an autograd function with ``nn.Linear``'s gradients
(standard matrix products), and keeps only the residual add fused; a layer in training mode that needs gradients is
a plain ``nn.Linear``, so training computes exactly what it always did. Everywhere else the layer is a plain
``nn.Linear``. No copy of the weight is kept: it is read as it is at every call. ``set_fused_inference(False)`` or
the environment variable ``TERRATIM_FUSED_LINEAR=0`` turns the path off.
"""

from __future__ import annotations

import functools
import os
import platform
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd import forward_ad
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

_X86 = platform.machine().lower() in {"x86_64", "amd64"}
_ONEDNN_LINEAR = _X86 and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_ONEDNN_ACTIVATIONS = {"gelu": ("gelu", "none"), "silu": ("swish", "")}  # name -> (oneDNN post-op, algorithm)
_settings = {"enabled": os.environ.get("TERRATIM_FUSED_LINEAR", "1") != "0"}


def set_fused_inference(enabled: bool) -> None:
    """Turn the oneDNN inference path of every :class:`Linear` on or off (default on where available)."""
    _settings["enabled"] = bool(enabled)


def fused_inference_available() -> bool:
    """Whether the fused path can run here: an x86-64 CPU, a PyTorch build with oneDNN's linear kernels, and a
    first call of each fused form that agrees with ``F.linear`` (checked once per process)."""
    return _ONEDNN_LINEAR and _kernels_agree()


@functools.cache
def _kernels_agree() -> bool:
    """One small product through every fused form against the plain ops; False (path off) on any error."""
    generator = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(shape, generator=generator) for shape in ((5, 16), (8, 16), (8,)))
    other = torch.randn(5, 8, generator=generator)
    ops = torch.ops.mkldnn._linear_pointwise
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        plain = F.linear(x, weight, bias)
        expected = (plain, F.gelu(plain), F.silu(plain), plain + other, plain * other)
        try:
            fused = (
                ops(x, weight, bias, "none", [], ""),
                ops(x, weight, bias, "gelu", [], "none"),
                ops(x, weight, bias, "swish", [], ""),
                ops.binary(x, other, weight, bias, "add"),
                ops.binary(x, other, weight, bias, "mul"),
            )
        except RuntimeError:
            return False
    return all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(fused, expected, strict=True))


def _activate(y: torch.Tensor, activation: str) -> torch.Tensor:
    """The plain form of a fused activation (exact-erf GELU or SiLU)."""
    if activation == "gelu":
        return F.gelu(y)
    if activation == "silu":
        return F.silu(y)
    raise ValueError(f"Linear: activation must be 'gelu' or 'silu', got {activation!r}")


def _combine(y: torch.Tensor, other: torch.Tensor, op: str) -> torch.Tensor:
    """The plain form of a fused second operand: ``y + other`` or ``y * other``."""
    if op == "add":
        return y + other
    if op == "mul":
        return y * other
    raise ValueError(f"Linear: op must be 'add' or 'mul', got {op!r}")


def _standard_ops_only() -> bool:
    """Inside torch.compile / torch.export / ONNX export / TorchScript, under a dispatch mode (fake tensors, FLOP
    counters) or a transform (forward-mode AD, ``torch.func``), where only standard ops may appear."""
    compiler = torch.compiler
    exporting = getattr(compiler, "is_exporting", lambda: False)()
    if compiler.is_compiling() or exporting or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    return is_in_torch_dispatch_mode() or _forward_ad_active() or _functorch_active()


def _forward_ad_active() -> bool:
    """Inside ``torch.autograd.forward_ad.dual_level()``: oneDNN's op has no forward derivative (tangents would be
    dropped), so dual tensors take ``F.linear``."""
    return getattr(forward_ad, "_current_level", -1) >= 0


def _functorch_active() -> bool:
    """Inside a ``torch.func`` transform (``grad``, ``vmap``, ``jvp``...): its wrapped tensors look like plain
    tensors, and oneDNN's op has neither batching rule nor derivative there."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active()) if active is not None else False


class _OneDnnLinear(torch.autograd.Function):
    """oneDNN's ``x @ weight.T + bias`` (``+ residual`` when given) with ``nn.Linear``'s gradients."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ops = torch.ops.mkldnn._linear_pointwise
        if residual is None:
            return ops(x, weight, bias, "none", [], "")
        return ops.binary(x, residual, weight, bias, "add")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias, need_residual = ctx.needs_input_grad
        rows = grad.reshape(-1, grad.shape[-1])  # (N, out)
        grad_x = grad.matmul(weight) if need_x else None  # (..., in)
        grad_weight = rows.t().mm(x.reshape(-1, x.shape[-1])) if need_weight else None  # (out, in)
        grad_bias = rows.sum(0) if need_bias else None
        return grad_x, grad_weight, grad_bias, grad if need_residual else None


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state dict and training behaviour) with a fused CPU inference path.

    Besides ``forward``, two fused forms serve the transformer blocks: :meth:`activated` (``act(linear(x))``
    for GELU and SiLU) and :meth:`combined` (``linear(x) + other`` or ``linear(x) * other``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fuses(x):
            return F.linear(x, self.weight, self.bias)
        if self._records(x):
            return _OneDnnLinear.apply(x, self.weight, self.bias, None)
        return torch.ops.mkldnn._linear_pointwise(x, self.weight.detach(), self._bias(), "none", [], "")

    def activated(self, x: torch.Tensor, activation: str) -> torch.Tensor:
        """``act(linear(x))``, ``activation`` one of ``"gelu"`` (exact erf GELU) or ``"silu"``."""
        if not self.fuses(x) or activation not in _ONEDNN_ACTIVATIONS:
            return _activate(F.linear(x, self.weight, self.bias), activation)
        if self._records(x):
            return _activate(_OneDnnLinear.apply(x, self.weight, self.bias, None), activation)
        onednn_name, algorithm = _ONEDNN_ACTIVATIONS[activation]
        return torch.ops.mkldnn._linear_pointwise(x, self.weight.detach(), self._bias(), onednn_name, [], algorithm)

    def combined(self, x: torch.Tensor, other: torch.Tensor, op: str = "add") -> torch.Tensor:
        """``linear(x) + other`` (``op="add"``) or ``linear(x) * other`` (``op="mul"``), ``other`` output-shaped."""
        if not self.fuses(x, other) or op not in ("add", "mul"):
            return _combine(F.linear(x, self.weight, self.bias), other, op)
        if self._records(x, other):
            if op == "add":
                return _OneDnnLinear.apply(x, self.weight, self.bias, other)
            return _OneDnnLinear.apply(x, self.weight, self.bias, None) * other
        return torch.ops.mkldnn._linear_pointwise.binary(x, other, self.weight.detach(), self._bias(), op)

    def _records(self, x: torch.Tensor, other: torch.Tensor | None = None) -> bool:
        """Whether autograd records this call (grad mode on and an operand that requires grad)."""
        operands = (x, other, self.weight, self.bias)
        return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in operands)

    def fuses(self, x: torch.Tensor, other: torch.Tensor | None = None) -> bool:
        """Whether this call takes the oneDNN path (see the module's description for when it does)."""
        if not (_ONEDNN_LINEAR and _settings["enabled"]) or _standard_ops_only():
            return False
        tensors = (x, self.weight) if other is None else (x, self.weight, other)
        if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors) or x.dim() < 2:
            return False
        if type(x) is not torch.Tensor or (other is not None and type(other) is not torch.Tensor):
            return False  # tensor subclasses (fake, functional, proxies) belong to tracing
        if other is not None and other.shape != (*x.shape[:-1], self.out_features):
            return False  # broadcasting is left to the plain path
        if torch.is_autocast_enabled("cpu"):
            return False
        if self.training and self._records(x, other):
            return False  # training keeps nn.Linear's own kernels
        return _kernels_agree()

    def _bias(self) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.detach()


def _fusable(layer: nn.Module) -> bool:
    """A terratim ``Linear`` without hooks (adapters such as LoRA wrap layers in other classes)."""
    return isinstance(layer, Linear) and not (layer._forward_hooks or layer._forward_pre_hooks)


def activated(layer: nn.Module, x: torch.Tensor, activation: str) -> torch.Tensor:
    """``act(layer(x))`` with ``activation`` ``"gelu"`` (exact) or ``"silu"``; fused where ``layer`` allows it."""
    if _fusable(layer):
        return layer.activated(x, activation)  # type: ignore[operator]
    return _activate(layer(x), activation)


def combined(layer: nn.Module, x: torch.Tensor, other: torch.Tensor, op: str = "add") -> torch.Tensor:
    """``layer(x) + other`` (``op="add"``) or ``layer(x) * other`` (``op="mul"``); fused where ``layer`` allows it."""
    if _fusable(layer):
        return layer.combined(x, other, op)  # type: ignore[operator]
    return _combine(layer(x), other, op)
