"""Linear: the fused oneDNN inference path computes nn.Linear's function, and is taken only where it may be."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from terratim.layers import Linear, Mlp, SwiGLU, set_fused_inference
from terratim.layers.linear import activated, combined, fused_inference_available

needs_onednn = pytest.mark.skipif(not fused_inference_available(), reason="this PyTorch build has no oneDNN")


def layer(bias: bool = True) -> Linear:
    torch.manual_seed(0)
    return Linear(48, 80, bias=bias)


def exact(lin: Linear, x: torch.Tensor) -> torch.Tensor:
    """linear(x) in float64."""
    out = x.double() @ lin.weight.double().t()
    return out if lin.bias is None else out + lin.bias.double()


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_fused_forms_compute_linear_in_fp32(bias: bool) -> None:
    lin = layer(bias)
    x = torch.randn(3, 7, 48)
    other = torch.randn(3, 7, 80)
    with torch.no_grad():
        assert lin.fuses(x) and lin.fuses(x, other)
        close(lin(x), exact(lin, x))
        close(lin.activated(x, "gelu"), F.gelu(exact(lin, x)))
        close(lin.activated(x, "silu"), F.silu(exact(lin, x)))
        close(lin.combined(x, other), exact(lin, x) + other.double())
        close(lin.combined(x, other, "mul"), exact(lin, x) * other.double())
        close(lin.combined(x, other.transpose(0, 1).contiguous().transpose(0, 1)), exact(lin, x) + other.double())
        assert lin(torch.randn(0, 48)).shape == (0, 80)


@needs_onednn
def test_every_call_reads_the_current_weight() -> None:
    lin = layer()
    x = torch.randn(5, 48)
    with torch.no_grad():
        lin(x)
        lin.weight.mul_(2.0)  # in-place, as an optimizer step
        close(lin(x), exact(lin, x))
        lin.weight.data += 1.0  # through .data, as adapter merges do (no version bump)
        close(lin(x), exact(lin, x))
        lin.load_state_dict({"weight": torch.randn(80, 48), "bias": torch.randn(80)})
        close(lin(x), exact(lin, x))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradients_are_nn_linears_in_train_and_eval_mode(mode: str) -> None:
    """Training mode takes F.linear; eval mode with a graph to record takes oneDNN's product through an autograd
    function. Both give nn.Linear's gradients (float64 reference) for every operand, residual and gate included."""
    lin = layer().train(mode == "train")
    x = torch.randn(2, 6, 48, requires_grad=True)
    other, gate = torch.randn(2, 6, 80, requires_grad=True), torch.randn(2, 6, 80, requires_grad=True)
    assert lin.fuses(x, other) == (mode == "eval" and fused_inference_available())
    out = lin(x) + lin.combined(x, other) + lin.activated(x, "gelu") + lin.combined(x, gate, "mul")
    out.pow(2).sum().backward()

    leaves = [t.detach().double().requires_grad_() for t in (x, lin.weight, lin.bias, other, gate)]
    x64, w64, b64, other64, gate64 = leaves
    y64 = F.linear(x64, w64, b64)
    (y64 + (y64 + other64) + F.gelu(y64) + y64 * gate64).pow(2).sum().backward()
    for got, want in zip((x, lin.weight, lin.bias, other, gate), leaves, strict=True):
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=1e-5, atol=1e-4)


@needs_onednn
def test_frozen_weights_and_a_graph_only_through_the_input() -> None:
    """Eval mode, frozen layer, input that requires grad (a saliency map): only the input gets a gradient."""
    lin = layer().eval().requires_grad_(False)
    x = torch.randn(5, 48, requires_grad=True)
    lin(x).sum().backward()
    assert lin.weight.grad is None and lin.bias.grad is None
    torch.testing.assert_close(x.grad.double(), lin.weight.double().sum(0).expand(5, 48), rtol=1e-5, atol=1e-5)


def test_forward_mode_ad_keeps_its_tangents() -> None:
    """oneDNN's op has no forward derivative: dual tensors take F.linear (tangent = tangent_x @ W.T)."""
    import torch.autograd.forward_ad as fwad

    lin = layer().eval()
    x, tangent = torch.randn(3, 48), torch.randn(3, 48)
    with torch.no_grad(), fwad.dual_level():
        out = lin(fwad.make_dual(x, tangent))
        assert not lin.fuses(x)
        got = fwad.unpack_dual(out).tangent
    assert got is not None
    close(got, tangent.double() @ lin.weight.double().t())


@needs_onednn
def test_autocast_switch_and_dispatch_modes_keep_the_standard_op() -> None:
    lin = layer()
    x = torch.randn(4, 48)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not lin.fuses(x)
        assert lin(x).dtype == torch.bfloat16  # autocast still applies
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        lin(x)
    assert counter.get_total_flops() == 2 * 4 * 48 * 80
    set_fused_inference(False)
    try:
        with torch.no_grad():
            assert not lin.fuses(x)
            close(lin(x), exact(lin, x))
    finally:
        set_fused_inference(True)


def test_a_build_whose_kernels_disagree_keeps_the_plain_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from terratim.layers import linear

    monkeypatch.setattr(linear, "_kernels_agree", lambda: False)
    lin = layer()
    x = torch.randn(3, 48)
    with torch.no_grad():
        assert not lin.fuses(x) and not linear.fused_inference_available()
        close(lin(x), exact(lin, x))


def test_wrapped_layers_fall_back_to_their_own_forward() -> None:
    lin = layer()
    calls = []
    lin.register_forward_hook(lambda module, args, output: calls.append(output.shape))
    x, other = torch.randn(2, 48), torch.randn(2, 80)
    with torch.no_grad():
        close(combined(lin, x, other), exact(lin, x) + other.double())
        close(activated(lin, x, "gelu"), F.gelu(exact(lin, x)))
    assert calls == [(2, 80), (2, 80)]  # hooks (and adapters that wrap the layer) still see every call


@pytest.mark.parametrize("mlp_class", [Mlp, SwiGLU])
def test_mlp_residual_form_equals_the_plain_sum(mlp_class: type) -> None:
    torch.manual_seed(1)
    mlp = mlp_class(32, 64)
    x, residual = torch.randn(2, 5, 32), torch.randn(2, 5, 32)
    with torch.no_grad():
        fused = mlp(x, residual=residual)
        set_fused_inference(False)
        try:
            plain = mlp(x) + residual
        finally:
            set_fused_inference(True)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_odd_layouts_compute_linear() -> None:
    lin = layer()
    inputs = {
        "slice": torch.randn(4, 12, 48)[:, 1:11],
        "transposed": torch.randn(10, 4, 48).transpose(0, 1),
        "strided last axis": torch.randn(4, 10, 96)[..., ::2],
        "expanded": torch.randn(1, 10, 48).expand(4, 10, 48),
        "4-d": torch.randn(2, 3, 5, 48),
    }
    with torch.no_grad():
        for x in inputs.values():
            other = torch.randn(80, *x.shape[:-1]).movedim(0, -1)  # output-shaped, not contiguous
            assert lin.fuses(x, other)
            close(lin(x), exact(lin, x))
            close(lin.combined(x, other), exact(lin, x) + other.double())


@needs_onednn
def test_the_kernel_check_is_not_fooled_by_the_first_callers_autocast() -> None:
    from terratim.layers import linear

    linear._kernels_agree.cache_clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear.fused_inference_available()  # the once-per-process check runs in fp32 whatever the caller's mode
    lin = layer()
    with torch.no_grad():
        assert lin.fuses(torch.randn(3, 48))


def test_unknown_activation_or_op_is_an_error_on_both_paths() -> None:
    lin = layer()
    x, other = torch.randn(2, 48), torch.randn(2, 80)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            with pytest.raises(ValueError, match="activation must be 'gelu' or 'silu', got 'relu'"):
                lin.activated(x, "relu")
            with pytest.raises(ValueError, match="op must be 'add' or 'mul', got 'sub'"):
                lin.combined(x, other, "sub")


def test_torch_func_transforms_compute_nn_linears_function() -> None:
    """grad, vmap and jvp wrap tensors that look plain: the layer takes F.linear inside them."""
    from torch.func import functional_call, grad, jvp, vmap

    lin = layer().eval()
    x, tangent, batched = torch.randn(3, 48), torch.randn(3, 48), torch.randn(4, 3, 48)
    x_grad = grad(lambda inputs: lin.activated(inputs, "gelu").sum())(x)
    x64 = x.double().requires_grad_()
    F.gelu(F.linear(x64, lin.weight.double(), lin.bias.double())).sum().backward()
    close(x_grad, x64.grad)
    weight_grad = grad(lambda p: functional_call(lin, p, (x,)).sum())(dict(lin.named_parameters()))["weight"]
    close(weight_grad, x.double().sum(0).expand(80, 48))
    with torch.no_grad():
        close(vmap(lin)(batched), exact(lin, batched))
    close(jvp(lin, (x,), (tangent,))[1], tangent.double() @ lin.weight.double().t())
