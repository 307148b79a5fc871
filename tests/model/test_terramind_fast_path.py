"""The encoder / decoder blocks' inference fast path (residuals folded into proj / fc2, terratim/layers/fused.py)
gives the plain computation's values (checked against float64), and autograd, LoRA-style wrappers and the
3-modality mean merge still work."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from terratim.layers import fused
from terratim.model.backbone import TerraMindBackbone
from terratim.model.config import TerraMindConfig
from terratim.model.terramind import Block, DecoderBlock

SMALL = {"gelu": TerraMindConfig(dim=32, encoder_depth=2, decoder_depth=1, num_heads=2, mlp_hidden=64,
                                 gated_mlp=False, bias=True, img_size=32),
         "swiglu": TerraMindConfig(dim=32, encoder_depth=2, decoder_depth=1, num_heads=2, mlp_hidden=48,
                                   gated_mlp=True, bias=False, img_size=32)}


def randomized(module: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.2 + (1.0 if param.dim() == 1 else 0.0))
    return module.eval()


def plain_float64(module: nn.Module, *args: torch.Tensor | None) -> torch.Tensor:
    """``module`` in float64 with the fast path off: the reference computation."""
    fused.ENABLED = False
    try:
        with torch.no_grad():
            return copy.deepcopy(module).double()(*(a.double() if a is not None else None for a in args))
    finally:
        fused.ENABLED = True


@pytest.mark.parametrize("kind", list(SMALL))
def test_block_fast_path_matches_float64(kind: str) -> None:
    block = randomized(Block(SMALL[kind]), 0)
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast = block(x)
    expected = plain_float64(block, x)
    torch.testing.assert_close(fast.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(SMALL))
def test_decoder_block_fast_path_matches_float64(kind: str) -> None:
    block = randomized(DecoderBlock(SMALL[kind]), 2)
    g = torch.Generator().manual_seed(3)
    y, context = torch.randn(2, 4, 32, generator=g), torch.randn(2, 6, 32, generator=g)
    cross_bias = torch.zeros(2, 1, 1, 6)
    cross_bias[:, ..., -2:] = torch.finfo(torch.float32).min  # two hidden context tokens
    with torch.no_grad():
        fast = block(y, context, None, cross_bias)
    expected = plain_float64(block, y, context, None, cross_bias)
    torch.testing.assert_close(fast.double(), expected, rtol=1e-5, atol=1e-5)


def test_fast_and_plain_paths_agree_and_grad_works(monkeypatch: pytest.MonkeyPatch) -> None:
    block = randomized(Block(SMALL["gelu"]), 4)
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        fast = block(x)
    trained = block(x.requires_grad_(True))  # grad enabled: the plain path
    torch.testing.assert_close(trained.detach(), fast, rtol=1e-5, atol=1e-5)
    trained.square().sum().backward()
    assert x.grad is not None and block.mlp.fc2.weight.grad is not None
    monkeypatch.setattr(fused, "ENABLED", False)
    with torch.no_grad():
        torch.testing.assert_close(block(x), fast, rtol=1e-5, atol=1e-5)


class Doubled(nn.Module):
    """Stands in for a LoRA wrapper: a module around the Linear, whose call must not be bypassed."""

    def __init__(self, inner: nn.Linear) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return 2.0 * self.inner(x)


def test_wrapped_projection_is_called() -> None:
    block = randomized(Block(SMALL["gelu"]), 6)
    x = torch.randn(1, 3, 32, generator=torch.Generator().manual_seed(7))
    wrapper = Doubled(block.attn.proj)
    block.attn.proj = wrapper  # type: ignore[assignment]
    with torch.no_grad():
        got = block(x)
    assert wrapper.calls == 1
    torch.testing.assert_close(got.double(), plain_float64(block, x), rtol=1e-5, atol=1e-5)
    block.attn.proj = wrapper.inner
    with torch.no_grad():
        assert not torch.allclose(block(x), got, rtol=1e-3, atol=1e-3)  # the wrapper did change the result


def test_mean_of_three_modalities_matches_float64() -> None:
    model = TerraMindBackbone(SMALL["gelu"], ["S2L2A", "S1GRD", "DEM"], merge_method="mean").eval()
    g = torch.Generator().manual_seed(8)
    x = {"S2L2A": torch.randn(1, 12, 32, 32, generator=g), "S1GRD": torch.randn(1, 2, 32, 32, generator=g),
         "DEM": torch.randn(1, 1, 32, 32, generator=g)}
    with torch.no_grad():
        layers = model(x)
    raw = copy.deepcopy(model).double()
    raw.merge_method = None  # (B, 3 * 4, D): the three modalities' tokens in input order
    with torch.no_grad():
        unmerged = raw({k: v.double() for k, v in x.items()})
    assert len(layers) == 2 and layers[0].shape == (1, 4, 32)
    for got, tokens in zip(layers, unmerged, strict=True):
        want = (tokens[:, 0:4] + tokens[:, 4:8] + tokens[:, 8:12]) / 3
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
