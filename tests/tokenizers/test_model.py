"""The common tokenizer API on tiny configs: shapes, dtypes, randomness, batch sizes, bf16, bad input."""

from __future__ import annotations

import pytest
import torch

from terratim.tokenizers import destandardize, standardize


def _image(batch=2, channels=1, size=64, seed=0):
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_encode_latents_and_ids(tiny_dem):
    x = _image()
    latents = tiny_dem.latents(x)
    codes, ids = tiny_dem.encode(x)
    assert latents.shape == (2, 5, 4, 4) and codes.shape == (2, 5, 4, 4) and ids.shape == (2, 4, 4)
    assert ids.dtype == torch.int64 and 0 <= int(ids.min()) and int(ids.max()) < 15360
    assert torch.equal(tiny_dem.quantizer.ids_to_codes(ids), codes)
    assert 0 <= float(codes.detach().min()) and float(codes.detach().max()) <= 1


def test_decode_default_steps_noise_and_generator(tiny_dem):
    _, ids = tiny_dem.encode(_image(batch=1, size=32))
    calls = []
    hook = tiny_dem.decoder.register_forward_hook(lambda module, args, out: calls.append(int(args[1])))
    noise = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    a = tiny_dem.decode_tokens(ids, generator=torch.Generator().manual_seed(3))
    assert calls == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]  # 10 trailing DDIM steps by default
    hook.remove()
    b = tiny_dem.decode_tokens(ids, noise=noise, generator=torch.Generator().manual_seed(99))  # noise wins
    c = tiny_dem.decode_tokens(ids, timesteps=3, noise=noise)
    assert a.shape == (1, 1, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    with torch.no_grad():
        tiny_dem.decoder.out[2].bias.fill_(3.0)  # make the decoder predict x0 far above 1
    clipped = tiny_dem.decode_tokens(ids, timesteps=1, noise=noise)
    free = tiny_dem.decode_tokens(ids, timesteps=1, noise=noise, clip=False)
    assert float(clipped.max()) <= 1.0  # clipped x0, the reference's behaviour
    assert float(free.max()) > 2.0


def test_reconstruction_any_batch_size_and_denoise(tiny_dem):
    x = _image(batch=3)
    noise = torch.randn(3, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    full = tiny_dem(x, timesteps=2, noise=noise)
    one = tiny_dem(x[2:], timesteps=2, noise=noise[2:])
    torch.testing.assert_close(one, full[2:], atol=1e-5, rtol=1e-5)
    codes, _ = tiny_dem.encode(x)
    with torch.no_grad():
        assert tiny_dem.denoise(noise, 999, codes).shape == (3, 1, 64, 64)


def test_bfloat16_autocast_runs_and_stays_close(tiny_dem):
    x = _image(batch=1)
    noise = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    ref = tiny_dem(x, timesteps=2, noise=noise)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, ids = tiny_dem.encode(x)
        out = tiny_dem(x, timesteps=2, noise=noise)
    assert ids.dtype == torch.int64
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert float((out - ref).abs().mean()) < 0.1


def test_lulc_class_ids_one_hot_and_logits(tiny_lulc):
    ids = torch.randint(0, 10, (2, 32, 32), generator=torch.Generator().manual_seed(0))
    codes, tokens = tiny_lulc.encode(ids)
    one_hot = torch.nn.functional.one_hot(ids, 10).permute(0, 3, 1, 2).float()
    assert torch.equal(tiny_lulc.encode(one_hot)[1], tokens)
    assert torch.equal(tiny_lulc.encode(ids[:, None].float())[1], tokens)
    assert int(tokens.max()) < 4375
    logits = tiny_lulc.decode_tokens(tokens)
    assert logits.shape == (2, 10, 32, 32)
    assert tiny_lulc(ids, timesteps=50).shape == (2, 10, 32, 32)
    with pytest.raises(TypeError, match="no diffusion denoiser"):
        tiny_lulc.denoise(torch.zeros(1, 10, 32, 32), 1, codes)


def test_decoder_is_built_only_when_asked_for():
    from tokenizer_helpers import tiny_config

    from terratim.tokenizers import build_tokenizer

    encode_only = build_tokenizer("NDVI", config=tiny_config("NDVI"), decoder=False)
    encode_only.encode(_image())
    assert not encode_only.has_decoder and "decoder=False" in repr(encode_only)
    with pytest.raises(RuntimeError, match="built without its decoder"):
        encode_only.decode_tokens(torch.zeros(1, 2, 2, dtype=torch.long), timesteps=1)
    tok = build_tokenizer("NDVI", config=tiny_config("NDVI"))
    assert tok.has_decoder
    assert tok.decode_tokens(torch.zeros(1, 2, 2, dtype=torch.long), timesteps=1).shape == (1, 1, 32, 32)


def test_standardize_round_trip():
    x = torch.rand(12, 4, 4) * 5000
    z = standardize("S2L2A", x)
    assert abs(float(z[0, 0, 0]) - (float(x[0, 0, 0]) - 1390.458) / 2106.761) < 1e-5
    torch.testing.assert_close(destandardize("S2L2A", z), x, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: torch.randn(1, 2, 64, 64), ValueError, r"\(B, 1, H, W\) with bands \['DEM'\]"),
        (lambda: torch.randn(1, 1, 60, 64), ValueError, "not a multiple of the patch size 16"),
        (lambda: torch.randint(0, 5, (1, 1, 64, 64)), TypeError, "floating-point"),
        (lambda: torch.randn(64, 64), ValueError, "got shape"),
        (lambda: [[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_images_raise(tiny_dem, make, error, match):
    with pytest.raises(error, match=match):
        tiny_dem.encode(make())


def test_bad_ids_and_sizes_raise(tiny_dem, tiny_lulc):
    with pytest.raises(ValueError, match=r"\[0, 15360\)"):
        tiny_dem.decode_tokens(torch.full((1, 2, 2), 15360))
    with pytest.raises(TypeError, match="integer"):
        tiny_dem.decode_tokens(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="multiple of 32"):
        tiny_dem.decode_tokens(torch.zeros(1, 3, 3, dtype=torch.long))  # 48 px
    with pytest.raises(ValueError, match="multiple of 32"):
        tiny_dem.decode_tokens(torch.zeros(1, 2, 2, dtype=torch.long), image_size=(40, 32))
    with pytest.raises(ValueError, match="starting noise"):
        tiny_dem.decode_tokens(torch.zeros(1, 2, 2, dtype=torch.long), noise=torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="shape"):
        tiny_dem.decode_tokens(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 10\)"):
        tiny_lulc.encode(torch.full((1, 32, 32), 10))
    with pytest.raises(ValueError, match="whole numbers"):
        tiny_lulc.encode(torch.full((1, 1, 32, 32), 0.5))
    with pytest.raises(ValueError, match="outputs 32x32"):
        tiny_lulc.decode_tokens(torch.zeros(1, 2, 2, dtype=torch.long), image_size=64)


def test_bfloat16_module_runs(tiny_dem, tiny_lulc):
    x = _image(batch=1)
    ref_ids = tiny_dem.encode(x)[1]
    tok = tiny_dem.to(torch.bfloat16)
    codes, ids = tok.encode(x)
    assert codes.dtype == torch.float32 and float((ids == ref_ids).float().mean()) > 0.5
    out = tok.decode_tokens(ids, timesteps=2, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    logits = tiny_lulc.to(torch.bfloat16)(torch.randint(0, 10, (1, 32, 32)))
    assert logits.shape == (1, 10, 32, 32)
