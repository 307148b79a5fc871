"""DDIM: zero-terminal-SNR schedule, trailing timesteps, the clipped x0 step."""

from __future__ import annotations

import pytest
import torch

from terratim.tokenizers import DDIMSampler, trailing_timesteps, zero_terminal_snr_alphas_cumprod


def test_schedule_has_zero_terminal_snr_and_keeps_the_first_value():
    ab = zero_terminal_snr_alphas_cumprod()
    assert ab.dtype == torch.float32 and ab.shape == (1000,)
    assert float(ab[-1]) == 0.0
    assert abs(float(ab[0]) - (1 - 1e-4)) < 1e-6  # the first value is kept (Lin et al. Alg. 1)
    assert bool((ab[1:] <= ab[:-1]).all())


def test_trailing_timesteps():
    assert trailing_timesteps(50)[:3] == [999, 979, 959] and trailing_timesteps(50)[-1] == 19
    assert trailing_timesteps(10) == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert len(trailing_timesteps(30)) == 31  # 1000 % 30 != 0 gives an extra step, as the reference
    with pytest.raises(ValueError, match="DDIM steps"):
        trailing_timesteps(0)


def test_last_step_returns_the_clipped_prediction():
    sampler = DDIMSampler()
    x = torch.randn(1, 1, 4, 4)
    out = sampler.sample(lambda x_t, t: torch.full_like(x_t, 5.0), x, steps=10)
    assert torch.equal(out, torch.ones_like(x))  # the reference returns 1.0 for a network output of 5
    unclipped = DDIMSampler(clip=False).sample(lambda x_t, t: torch.full_like(x_t, 5.0), x, steps=10)
    torch.testing.assert_close(unclipped, torch.full_like(x, 5.0))


def test_step_uses_the_unclipped_prediction_for_the_noise():
    sampler = DDIMSampler()
    ab = sampler.alphas_cumprod
    x_t, x0 = torch.randn(1, 1, 3, 3), torch.randn(1, 1, 3, 3) * 3
    eps = (x_t - ab[499] ** 0.5 * x0) / (1 - ab[499]) ** 0.5
    expected = ab[399] ** 0.5 * x0.clamp(-1, 1) + (1 - ab[399]) ** 0.5 * eps
    torch.testing.assert_close(sampler.step(x0, 499, 399, x_t), expected)


def test_first_step_from_pure_noise_keeps_noise_direction():
    sampler = DDIMSampler()
    noise = torch.randn(2, 1, 3, 3)
    x0 = torch.zeros_like(noise)
    ab = sampler.alphas_cumprod[979]
    torch.testing.assert_close(sampler.step(x0, 999, 979, noise), (1 - ab) ** 0.5 * noise)
