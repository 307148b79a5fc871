"""Compiled Winograd transforms: generated source, agreement with float64 and with the eager transforms,
opt-in (build function, ``set_optimized(native=True)``, environment switch), fallback without a compiler,
input checks."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
import torch.nn.functional as F

from terratim.tokenizers import winograd_kernels
from terratim.tokenizers.unet import Conv2d, DiffusionUNet, UNetConfig
from terratim.tokenizers.winograd import Winograd3x3, toom_cook_matrices
from terratim.tokenizers.winograd_kernels import (
    TILES,
    KernelBuildError,
    build_kernels,
    kernel_path,
    kernel_source,
    load_kernels,
)

needs_compiler = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


@pytest.fixture(scope="module")
def kernels():
    if shutil.which("cc") is None:
        pytest.skip("no C compiler on this machine")
    loaded = load_kernels(build=True)
    assert loaded is not None, "cc exists but the kernels did not build (see the log)"
    return loaded


def test_source_has_exact_literals_and_no_zero_terms():
    source = kernel_source()
    for tile in TILES:
        a_t, _, b_t = toom_cook_matrices(tile)
        for matrix in (a_t, b_t):
            assert torch.equal(matrix.float().double(), matrix)  # dyadic rationals: float literals are exact
            for value in matrix.flatten().tolist():
                if value not in (0.0, 1.0, -1.0):
                    assert f"{abs(value)!r}f" in source
        assert f"input_{tile}(" in source and f"output_{tile}(" in source
    assert "0.0f *" not in source  # zero entries are left out


@pytest.mark.parametrize("bands", ["one", "per_row"])
@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize(("channels", "size"), [(24, (8, 8)), (24, (7, 10)), (37, (13, 5)), (64, (16, 12))])
def test_compiled_transforms_equal_float64_convolution(kernels, tile, channels, size, bands):
    """Channel counts that are and are not multiples of the 16-lane vectors, sizes that are not whole tiles."""
    gen = torch.Generator().manual_seed(channels)
    x = _channels_last(torch.randn(2, channels, *size, generator=gen))
    weight = torch.randn(16, channels, 3, 3, generator=gen) * 0.1
    bias, sample_bias = torch.randn(16, generator=gen), torch.randn(2, 16, generator=gen)
    residual = _channels_last(torch.randn(2, 16, *size, generator=gen))
    winograd = Winograd3x3(tile)
    if bands == "per_row":
        winograd.max_band_bytes = 1
    weight_u = winograd.transform_weight(weight)
    out = winograd(x, weight_u, bias, sample_bias, residual, kernels=kernels)
    expected = residual.double() + F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    expected = expected + sample_bias.double()[:, :, None, None]
    assert out.shape == expected.shape and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=1e-6)
    plain = winograd(x, weight_u, None, kernels=kernels)
    torch.testing.assert_close(plain.double(), F.conv2d(x.double(), weight.double(), padding=1), atol=2e-5, rtol=0)
    eager = winograd(x, weight_u, bias, sample_bias, residual)
    torch.testing.assert_close(out, eager, atol=4e-5, rtol=0)  # both within 2e-5 of float64: sums in another order


def test_compiled_error_is_of_the_order_of_a_direct_float32_convolution(kernels):
    gen = torch.Generator().manual_seed(1)
    x = _channels_last(torch.randn(1, 256, 28, 28, generator=gen))
    weight = torch.randn(128, 256, 3, 3, generator=gen) * 0.02
    exact = F.conv2d(x.double(), weight.double(), padding=1)
    direct = float((F.conv2d(x, weight, padding=1).double() - exact).abs().max())
    for tile in TILES:
        winograd = Winograd3x3(tile)
        out = winograd(x, winograd.transform_weight(weight), None, kernels=kernels)
        error = float((out.double() - exact).abs().max())
        assert error < 4 * direct, (tile, error, direct)


def test_unet_gives_the_same_prediction_with_compiled_and_eager_transforms(kernels):
    torch.manual_seed(0)
    unet = DiffusionUNet(1, 5, UNetConfig(channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_ds=(2,),
                                          num_groups=8)).eval()
    assert not any(m.native for m in unet.modules() if isinstance(m, Conv2d))  # opt-in: eager by default
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 0.05)
        x, codes = torch.randn(2, 1, 112, 112), torch.rand(2, 5, 7, 7)
        unet.set_optimized(True, native=True)
        assert all(m.native for m in unet.modules() if isinstance(m, Conv2d))
        compiled = unet(x, 500, codes)
        eager = unet.set_optimized(True, native=False)(x, 500, codes)
        direct = unet.set_optimized(False)(x, 500, codes)
    assert not any(m.native for m in unet.modules() if isinstance(m, Conv2d))
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compiled, direct, atol=1e-5, rtol=1e-5)


def test_kernels_reject_mismatched_buffers(kernels):
    x = torch.randn(1, 8, 8, 16)  # (B, H, W, C)
    tiles = 4  # 8 x 8 with 4 x 4 tiles
    with pytest.raises(ValueError, match=r"input buffer must have shape \(4, 36, 16\)"):
        kernels.input(x, 4, slice(0, 2), torch.empty(tiles, 36, 8))
    with pytest.raises(ValueError, match="contiguous float32 CPU input"):
        kernels.input(x.double(), 4, slice(0, 2), torch.empty(tiles, 36, 16))
    prod, out = torch.empty(36, tiles, 16), torch.empty(1, 8, 8, 16)
    with pytest.raises(ValueError, match=r"bias must have shape \(1, 16\)"):
        kernels.output(prod, 4, slice(0, 2), torch.zeros(16), None, out)
    with pytest.raises(ValueError, match="no compiled Winograd kernel for tile 3"):
        kernels.input(torch.randn(1, 9, 9, 16), 3, slice(0, 3), torch.empty(9, 25, 16))


TINY_UNET = UNetConfig(channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_ds=(2,), num_groups=8)


@needs_compiler
def test_build_is_cached_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("TERRATIM_KERNEL_CACHE", str(tmp_path))
    assert load_kernels() is None and not list(tmp_path.iterdir())  # loading never builds
    path = build_kernels()
    assert path == kernel_path() and path.parent == tmp_path
    built = path.stat().st_mtime_ns
    assert build_kernels() == path and path.stat().st_mtime_ns == built  # found, not rebuilt
    assert load_kernels().path == path
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no leftovers from the build


@needs_compiler
def test_environment_switch_loads_kernels_built_earlier_and_never_compiles(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TERRATIM_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("TERRATIM_NATIVE_KERNELS", "1")
    with caplog.at_level(logging.WARNING, logger=winograd_kernels.__name__):
        unet = DiffusionUNet(1, 5, TINY_UNET)
    assert "not built on this machine" in caplog.text and "build_kernels()" in caplog.text
    assert not any(m.native for m in unet.modules() if isinstance(m, Conv2d)) and not list(tmp_path.iterdir())
    build_kernels()
    assert all(m.native for m in DiffusionUNet(1, 5, TINY_UNET).modules() if isinstance(m, Conv2d))
    monkeypatch.setenv("TERRATIM_NATIVE_KERNELS", "0")
    assert not any(m.native for m in DiffusionUNet(1, 5, TINY_UNET).modules() if isinstance(m, Conv2d))
    monkeypatch.setenv("TERRATIM_NATIVE_KERNELS", "yes please")
    with pytest.raises(ValueError, match="TERRATIM_NATIVE_KERNELS must be 1 .* or 0"):
        DiffusionUNet(1, 5, TINY_UNET)


def test_without_a_compiler_the_eager_transforms_run(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TERRATIM_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler")
    with pytest.raises(KernelBuildError, match="no C compiler 'no-such-compiler'"):
        build_kernels()
    with caplog.at_level(logging.WARNING, logger=winograd_kernels.__name__):
        assert load_kernels(build=True) is None
    assert "no C compiler 'no-such-compiler'" in caplog.text
    monkeypatch.setenv("CC", "false")  # exists, fails
    with pytest.raises(KernelBuildError, match="building the Winograd kernels .* failed"):
        build_kernels()
    unet = DiffusionUNet(1, 5, TINY_UNET).eval()
    with caplog.at_level(logging.WARNING, logger=winograd_kernels.__name__):
        unet.set_optimized(True, native=True)  # asked for, cannot be built: warned, eager transforms
    assert "Winograd kernels" in caplog.text and not list(tmp_path.glob("*.so"))
    assert not any(m.native for m in unet.modules() if isinstance(m, Conv2d))
