"""Winograd F(m x m, 3 x 3): exact matrices, agreement with a float64 convolution, fused bias and residual."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from terratim.tokenizers.unet import WINOGRAD_BY_SIZE, Conv2d
from terratim.tokenizers.winograd import Winograd3x3, release_scratch, toom_cook_matrices


@pytest.mark.parametrize("tile", [2, 4])
def test_matrices_compute_a_1d_correlation_exactly(tile):
    a_t, g, b_t = toom_cook_matrices(tile)
    gen = torch.Generator().manual_seed(tile)
    d = torch.randn(tile + 2, dtype=torch.float64, generator=gen)
    kernel = torch.randn(3, dtype=torch.float64, generator=gen)
    y = a_t @ ((g @ kernel) * (b_t @ d))  # Lavin & Gray eq. (6)
    expected = torch.stack([(d[i : i + 3] * kernel).sum() for i in range(tile)])
    torch.testing.assert_close(y, expected, atol=1e-12, rtol=1e-12)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("bands", ["one", "per_row"])  # one band of tile rows, or one band per row
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("size", [(8, 8), (7, 10), (13, 5)])  # whole tiles, and sizes that are not
def test_equals_float64_convolution_with_bias_and_residual(tile, size, bands):
    gen = torch.Generator().manual_seed(0)
    x = _channels_last(torch.randn(2, 24, *size, generator=gen))
    weight = torch.randn(16, 24, 3, 3, generator=gen) * 0.1
    bias, sample_bias = torch.randn(16, generator=gen), torch.randn(2, 16, generator=gen)
    residual = _channels_last(torch.randn(2, 16, *size, generator=gen))
    winograd = Winograd3x3(tile)
    if bands == "per_row":
        winograd.max_band_bytes = 1
    out = winograd(x, winograd.transform_weight(weight), bias, sample_bias, residual)
    conv = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    expected = residual.double() + conv + sample_bias.double()[:, :, None, None]
    assert out.shape == expected.shape and out.is_contiguous(memory_format=torch.channels_last)
    # float32 rounding only: a direct float32 convolution of these values is off by ~1e-6
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=1e-6)
    plain = winograd(x, winograd.transform_weight(weight), None)
    torch.testing.assert_close(plain.double(), F.conv2d(x.double(), weight.double(), padding=1), atol=2e-5, rtol=0)


def test_error_is_of_the_order_of_a_direct_float32_convolution():
    gen = torch.Generator().manual_seed(1)
    x = _channels_last(torch.randn(1, 256, 28, 28, generator=gen))
    weight = torch.randn(128, 256, 3, 3, generator=gen) * 0.02
    exact = F.conv2d(x.double(), weight.double(), padding=1)
    direct = float((F.conv2d(x, weight, padding=1).double() - exact).abs().max())
    for tile in (2, 4):
        winograd = Winograd3x3(tile)
        error = float((winograd(x, winograd.transform_weight(weight), None).double() - exact).abs().max())
        assert error < 4 * direct, (tile, error, direct)


def test_decoder_convolutions_pick_the_algorithm_by_size():
    conv = Conv2d(8, 8, 3, padding=1).eval()
    tiles = {size: w.tile for size, w in WINOGRAD_BY_SIZE}

    def zeros(height, width):
        return _channels_last(torch.zeros(1, 8, height, width))

    with torch.no_grad():
        assert conv._winograd(zeros(56, 56)).tile == tiles[28]
        assert conv._winograd(zeros(14, 20)).tile == tiles[14]
        assert conv._winograd(zeros(7, 7)) is None  # oneDNN's direct convolution
        assert Conv2d(8, 8, 3, stride=2, padding=1)._winograd(zeros(56, 56)) is None
        assert Conv2d(8, 8, 1)._winograd(zeros(56, 56)) is None
        assert conv._winograd(torch.zeros(1, 8, 56, 56)) is None  # NCHW: the reference layout, plain PyTorch
    assert conv._winograd(zeros(56, 56)) is None  # training (gradients on): plain PyTorch
    x = _channels_last(torch.randn(1, 8, 32, 32))
    with torch.no_grad():
        fast = conv(x)
        conv.winograd = False
        direct = conv(x)
    torch.testing.assert_close(fast, direct, atol=1e-5, rtol=1e-5)
    assert fast.is_contiguous(memory_format=torch.channels_last)


def test_outputs_do_not_share_the_reused_work_buffers():
    gen = torch.Generator().manual_seed(2)
    winograd = Winograd3x3(4)
    weight = winograd.transform_weight(torch.randn(8, 8, 3, 3, generator=gen))
    first_input = _channels_last(torch.randn(1, 8, 12, 12, generator=gen))
    first = winograd(first_input, weight, None)
    kept = first.clone()
    second = winograd(_channels_last(torch.randn(2, 8, 16, 16, generator=gen)), weight, None)  # larger: buffers grow
    assert torch.equal(first, kept) and second.data_ptr() != first.data_ptr()
    torch.testing.assert_close(winograd(first_input, weight, None), first, atol=0, rtol=0)
    release_scratch()
    torch.testing.assert_close(winograd(first_input, weight, None), first, atol=0, rtol=0)


def test_weight_transform_is_the_float64_product_rounded_once_whatever_the_chunk():
    """Every chunking gives U within half a float32 ulp of G g G^T, plus the float64 product's own error.

    The chunk changes the shape of the float64 product and so, on some CPUs, its summation order: the float64
    values can then differ in their last bits and round to neighbouring float32 values, so chunks are compared
    with the bound, not with each other bit for bit.
    """
    weight = torch.randn(6, 5, 3, 3, generator=torch.Generator().manual_seed(3))
    winograd = Winograd3x3(4)
    _, g, _ = toom_cook_matrices(4)

    def as_u(t: torch.Tensor) -> torch.Tensor:  # (C_out, C_in, a, a) -> (a^2, C_in, C_out)
        return t.permute(2, 3, 1, 0).reshape(36, 5, 6)

    exact = as_u(g @ weight.double() @ g.T)
    magnitude = as_u(g.abs() @ weight.double().abs() @ g.T.abs())  # sum of |terms| of each entry
    # rounding to float32 once: u |y| with u = 2^-24; float64 sums of 9 terms (ours and the reference's): far
    # below 32 eps_64 times the sum of |terms|
    bound = 2.0**-24 * exact.abs() + 32 * 2.0**-52 * magnitude
    for chunk in (1 << 14, 1, 2, 3, 7, 8, 30):  # chunks that do and do not divide C_in x C_out
        u = winograd.transform_weight(weight, chunk=chunk)
        assert u.dtype == torch.float32 and u.shape == exact.shape
        excess = float(((u.double() - exact).abs() - bound).max())
        assert excess <= 0, (chunk, excess)
