"""Inference fast path for ``residual + linear(h)``: the residual is folded into the matrix product.

``residual + linear(h)`` costs three passes over a (tokens, D) array: ``addmm`` first copies the broadcast bias
into its result, the product accumulates onto it, then the addition writes a third array. On CPU these copies
were a fifth of the backbone's time (fp32, tiny, batch 8). Here ``residual + bias`` is written once into a new
array and the product accumulates onto it in place (``addmm_``), so each block output is still a new tensor.

The fast path runs only where it is exactly the plain computation up to rounding order: no autograd, no
autocast, no tracing/export, a plain ``nn.Linear`` (LoRA wrappers and :class:`terratim.tasks.peft.SplitQKV` are
called as modules), and one dtype throughout. Everywhere else the module is called as usual.
"""

from __future__ import annotations

import torch
import torch.nn as nn

# Switch for same-run before/after benchmarks (benchmarks/bench_backbone.py --no-fused); not a user setting.
ENABLED = True


def without_hooks(*modules: nn.Module) -> bool:
    """True when calling these modules runs only their ``forward`` (none has forward hooks)."""
    return not any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def fast_path(*modules: nn.Module) -> bool:
    """Whether inference shortcuts may bypass ``modules``' calls: enabled, no autograd, tracing or hooks."""
    if not ENABLED or torch.is_grad_enabled():
        return False
    if (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
    ):
        return False
    return without_hooks(*modules)


def _foldable(residual: torch.Tensor, linear: nn.Module, h: torch.Tensor) -> bool:
    if type(linear) is not nn.Linear or not fast_path(linear):
        return False
    if torch.is_autocast_enabled(residual.device.type):
        return False
    weight = linear.weight
    return residual.dtype == h.dtype == weight.dtype and residual.shape[-1] == weight.shape[0]


def add_linear(residual: torch.Tensor, linear: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """``residual + linear(h)`` as a new tensor; residual (..., D_out), h (..., D_in)."""
    if not _foldable(residual, linear, h):
        return residual + linear(h)
    assert isinstance(linear, nn.Linear)
    shape = residual.shape
    flat_residual = residual.reshape(-1, shape[-1])  # (T, D_out)
    flat_h = h.reshape(-1, h.shape[-1])  # (T, D_in)
    if linear.bias is None:
        return torch.addmm(flat_residual, flat_h, linear.weight.t()).view(shape)
    out = flat_residual + linear.bias  # the one new (T, D_out) array
    return out.addmm_(flat_h, linear.weight.t()).view(shape)
