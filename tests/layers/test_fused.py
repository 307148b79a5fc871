"""The inference fast path ``add_linear``: same values as ``residual + linear(h)``, and the plain call wherever
the shortcut would change behaviour (autograd, autocast, wrapped or hooked Linear layers)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from terratim.layers import fused
from terratim.layers.fused import add_linear, fast_path


def float64_reference(residual: torch.Tensor, linear: nn.Linear, h: torch.Tensor) -> torch.Tensor:
    bias = linear.bias.double() if linear.bias is not None else 0.0
    return residual.double() + h.double() @ linear.weight.double().t() + bias


def make_case(bias: bool, seed: int = 0) -> tuple[torch.Tensor, nn.Linear, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    linear = nn.Linear(12, 8, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(8, 12, generator=g))
        if bias:
            linear.bias.copy_(torch.randn(8, generator=g))
    return torch.randn(2, 5, 8, generator=g), linear, torch.randn(2, 5, 12, generator=g)


@pytest.mark.parametrize("bias", [True, False])
def test_folded_sum_equals_float64(bias: bool) -> None:
    residual, linear, h = make_case(bias)
    kept = residual.clone()
    with torch.no_grad():
        out = add_linear(residual, linear, h)
    assert out.shape == residual.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), float64_reference(kept, linear, h), rtol=1e-5, atol=1e-5)
    assert torch.equal(residual, kept), "the residual must not be written to"
    assert out.data_ptr() != residual.data_ptr(), "each block output must be a new tensor"


def test_non_contiguous_residual() -> None:
    residual, linear, h = make_case(True)
    wide = torch.cat([residual, residual], dim=-1)[..., :8]  # a strided view
    with torch.no_grad():
        out = add_linear(wide, linear, h)
    torch.testing.assert_close(out.double(), float64_reference(wide, linear, h), rtol=1e-5, atol=1e-5)


def test_autograd_takes_the_plain_path() -> None:
    residual, linear, h = make_case(True)
    h.requires_grad_(True)
    out = add_linear(residual, linear, h)
    out.sum().backward()
    assert h.grad is not None and linear.weight.grad is not None
    torch.testing.assert_close(h.grad, linear.weight.sum(0).expand_as(h))


class CountingLinear(nn.Linear):
    """A Linear subclass (as LoRA-style wrappers are): it must be called as a module."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CountingLinear.calls += 1
        return super().forward(x) * 2.0


def test_wrapped_linear_is_called_as_module() -> None:
    residual, plain, h = make_case(True)
    wrapped = CountingLinear(12, 8)
    wrapped.load_state_dict(plain.state_dict())
    CountingLinear.calls = 0
    with torch.no_grad():
        out = add_linear(residual, wrapped, h)
    assert CountingLinear.calls == 1
    expected = residual.double() + 2.0 * (float64_reference(torch.zeros_like(residual), plain, h))
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_hooked_linear_is_called_as_module() -> None:
    residual, linear, h = make_case(True)
    seen = []
    linear.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    with torch.no_grad():
        add_linear(residual, linear, h)
    assert seen == [torch.Size([2, 5, 8])]
    assert not fast_path(linear)


def test_autocast_takes_the_plain_path() -> None:
    residual, linear, h = make_case(True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = add_linear(residual, linear, h)
    assert out.dtype == torch.float32  # fp32 residual + bf16 product, as the plain expression gives
    torch.testing.assert_close(out.double(), float64_reference(residual, linear, h), rtol=0.05, atol=0.1)


def test_switch_off(monkeypatch: pytest.MonkeyPatch) -> None:
    _, linear, _ = make_case(True)
    with torch.no_grad():
        assert fast_path(linear)
        monkeypatch.setattr(fused, "ENABLED", False)
        assert not fast_path(linear)
