"""The patched UNet: layout of patches and condition, time embedding, optimized path == plain path."""

from __future__ import annotations

import torch
from tokenizer_helpers import randomize

from terratim.tokenizers import DiffusionUNet, UNetConfig
from terratim.tokenizers.unet import GroupNorm32, timestep_embedding

SMALL = UNetConfig(channels=32, channel_mult=(1, 1, 2, 2), num_res_blocks=1, attention_ds=(4, 8))


def test_released_sizes_and_key_layout():
    with torch.device("meta"):
        unet = DiffusionUNet(12, 5)
    keys = unet.state_dict()
    assert sum(p.numel() for p in unet.parameters()) == 196_951_744  # the decoder of TerraMind_Tokenizer_S2L2A.pt
    assert keys["input_blocks.0.0.weight"].shape == (256, 197, 3, 3)
    assert keys["out.2.weight"].shape == (192, 256, 3, 3)
    assert keys["middle_block.1.qkv.weight"].shape == (1536, 512, 1)
    assert "output_blocks.11.1.conv.weight" in keys and "input_blocks.4.0.op.weight" in keys
    assert len(keys) == 601 - 155  # the file's 601 keys minus the encoder's 153 and quant_proj's 2


def test_patch_layout_is_channel_major():
    unet = DiffusionUNet(2, 5, SMALL)
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8)
    patches = unet.patchify(x)  # (1, 32, 2, 2)
    c, py, px, i, j = 1, 2, 3, 1, 0
    assert patches[0, c * 16 + py * 4 + px, i, j] == x[0, c, i * 4 + py, j * 4 + px]
    assert torch.equal(unet.unpatchify(patches), x)


def test_time_embedding_is_cos_then_sin():
    emb = timestep_embedding(torch.tensor([3.0]), 8)
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[0], torch.cat([torch.cos(3 * freqs), torch.sin(3 * freqs)]))


def test_optimized_path_equals_plain_path_and_batches_are_independent():
    unet = randomize(DiffusionUNet(1, 5, SMALL)).eval()
    g = torch.Generator().manual_seed(0)
    x, codes = torch.randn(2, 1, 64, 64, generator=g), torch.rand(2, 5, 4, 4, generator=g)
    with torch.no_grad():
        fast = unet(x, 500, codes)
        prepared = unet(x, 500, unet.prepare_condition(codes, (64, 64)), prepared=True)
        single = unet(x[1:], 500, codes[1:])
        unet.set_optimized(False)
        plain = unet(x, torch.tensor(500), codes)
    assert fast.shape == x.shape and fast.is_contiguous()
    assert torch.equal(fast, prepared)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(single, fast[1:], atol=1e-5, rtol=1e-5)


def test_group_norm_statistics_in_float32_for_bfloat16():
    norm = GroupNorm32(4, 8)
    x = torch.randn(2, 8, 4, 4) * 100 + 1000
    out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), norm(x.bfloat16().float()), atol=2e-2, rtol=1e-2)


def test_cached_conv_weights_follow_weight_updates_and_copies():
    import copy

    unet = randomize(DiffusionUNet(1, 5, SMALL)).eval()
    x, codes = torch.randn(1, 1, 32, 32), torch.rand(1, 5, 2, 2)
    with torch.no_grad():
        before = unet(x, 10, codes)
        unet.input_blocks[0][0].weight.mul_(2.0)  # in-place update: the cached copy must be rebuilt
        after = unet(x, 10, codes)
        clone = copy.deepcopy(unet)
        unet.set_optimized(False)
        plain = unet(x, 10, codes)
        assert torch.equal(clone(x, 10, codes), after)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, plain, atol=1e-5, rtol=1e-5)


def test_inference_mode_then_no_grad_share_caches_safely():
    unet = randomize(DiffusionUNet(1, 5, SMALL)).eval()
    x, codes = torch.randn(1, 1, 64, 64), torch.rand(1, 5, 4, 4)
    with torch.inference_mode():
        first = unet(x, 10, codes)  # caches and Winograd work buffers made as inference tensors
    with torch.no_grad():
        second = unet(x, 10, codes)  # must not write into those buffers
    with torch.inference_mode():
        third = unet(x, 10, codes)
    assert torch.equal(first, second) and torch.equal(second, third)


def test_banded_winograd_matches_the_plain_path(monkeypatch):
    from terratim.tokenizers.unet import WINOGRAD_BY_SIZE

    for _, winograd in WINOGRAD_BY_SIZE:
        monkeypatch.setattr(winograd, "max_band_bytes", 1)  # one band per tile row, as on very large maps
    unet = randomize(DiffusionUNet(1, 5, SMALL)).eval()
    x, codes = torch.randn(2, 1, 64, 96), torch.rand(2, 5, 4, 6)
    with torch.no_grad():
        banded = unet(x, 300, codes)
        unet.set_optimized(False)
        plain = unet(x, 300, codes)
    torch.testing.assert_close(banded, plain, atol=1e-5, rtol=1e-5)


class _RefusingOps:
    """Stands in for ``torch.ops.mkldnn``: any use of a private oneDNN operator fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"private operator torch.ops.mkldnn.{name} used")


def test_public_convolution_fallback_agrees_with_float64(monkeypatch):
    """With the guard off, no private operator runs and the optimized UNet stays within a few times the
    float32 rounding error of the reference layout, both measured against a float64 run."""
    import copy

    from terratim.tokenizers import unet as unet_module

    unet = randomize(DiffusionUNet(1, 5, SMALL)).eval()
    reference64 = copy.deepcopy(unet).double().set_optimized(False)
    g = torch.Generator().manual_seed(4)
    x, codes = torch.randn(2, 1, 64, 64, generator=g), torch.rand(2, 5, 4, 4, generator=g)
    monkeypatch.setattr(unet_module, "onednn_ops_usable", lambda: False)
    monkeypatch.setattr(torch.ops, "mkldnn", _RefusingOps())
    with torch.no_grad():
        fallback = unet(x, 500, codes)  # 3x3 on >= 14 px: Winograd; stride 2, 1x1 and small maps: F.conv2d
        exact = reference64(x.double(), 500, codes.double())
        monkeypatch.setattr(unet_module, "onednn_ops_usable", lambda: True)
        for module in unet.modules():
            if isinstance(module, unet_module.Conv2d):
                module.private_ops = False  # the per-module switch: public operators although the guard agrees
        assert torch.equal(unet(x, 500, codes), fallback)  # the same public computation, repeated
        direct = unet.set_optimized(False)(x, 500, codes)  # float32 in the reference layout
    direct_error = float((direct.double() - exact).abs().max())
    fallback_error = float((fallback.double() - exact).abs().max())
    assert fallback_error <= 4 * direct_error, (fallback_error, direct_error)  # Winograd: ~2x direct rounding
    torch.testing.assert_close(fallback.double(), exact, atol=1e-5, rtol=1e-5)


def test_private_onednn_operators_are_used_only_where_the_guard_accepts_them(monkeypatch):
    from terratim.tokenizers import unet as unet_module

    class WrongOps:  # right names, wrong results
        def _reorder_convolution_weight(self, weight, *args):
            return weight

        def _convolution_pointwise(self, x, weight, bias, padding, stride, *args):
            return torch.zeros(1, 2, 3, 3)

    assert not unet_module._probe_onednn(object())  # operators missing
    assert not unet_module._probe_onednn(WrongOps())
    assert unet_module._probe_onednn(torch.ops.mkldnn) == torch.backends.mkldnn.is_available()
    monkeypatch.setattr(torch, "__version__", "2.0.1")
    assert not unet_module.onednn_ops_usable.__wrapped__()  # older than the signature used here
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    assert unet_module.onednn_ops_usable.__wrapped__() == torch.backends.mkldnn.is_available()
