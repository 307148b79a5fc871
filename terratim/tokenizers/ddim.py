"""Deterministic DDIM sampling for x_0-predicting diffusion decoders (Song et al. 2021, arXiv:2010.02502).

Schedule (that of TerraTorch's ``terratorch/models/backbones/terramind/tokenizer/scheduling/scheduling_ddim.py`` as the
DiVAE tokenizers configure it): 1000 training steps, linear betas 1e-4 .. 0.02, rescaled to zero terminal SNR
(Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", arXiv:2305.08891, Alg. 1),
"trailing" inference timesteps (same paper, §3.3, Table 2), eta = 0. The network predicts x_0 directly.

The reference clips every predicted x_0 to [-1, 1] (its dynamic thresholding with the quantile clamped to 1 is
exactly a clip), which bounds every decoded value to mean +- 1 std once de-standardized. ``clip=True``
reproduces it; ``clip=False`` lets the decoder return its full range.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

NUM_TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02


def zero_terminal_snr_alphas_cumprod(
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = BETA_START, beta_end: float = BETA_END
) -> torch.Tensor:
    """alpha-bar_t for t = 0..T-1 (float32), with alpha-bar_{T-1} = 0 exactly."""
    # 1. linear betas and sqrt(alpha-bar) (DDPM, Ho et al. 2020, §4)
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    sqrt_ab = torch.cumprod(1.0 - betas, dim=0).sqrt()
    # 2. Lin et al. Alg. 1: shift so the last value is 0, scale so the first keeps its value
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * (first / (first - last))
    # 3. back to per-step alphas (alpha_t = ab_t / ab_{t-1}), then the cumulative product again
    ab = sqrt_ab**2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return torch.cumprod(alphas, dim=0)


def trailing_timesteps(steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """t = T-1, T-1-r, ... with r = T // steps (Lin et al. Table 2, "trailing"). Gives more than ``steps``
    timesteps when T is not divisible by ``steps`` (e.g. 31 for 30), as the reference does."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"DDIM steps must be in [1, {num_train_timesteps}], got {steps}")
    ratio = num_train_timesteps // steps
    return list(range(num_train_timesteps - 1, -1, -ratio))


class DDIMSampler:
    """DDIM with eta = 0 for a network that predicts x_0.

    Args:
        clip: clip each predicted x_0 to [-1, 1] (the reference's behaviour).
    """

    def __init__(self, clip: bool = True, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> None:
        self.clip = clip
        self.num_train_timesteps = num_train_timesteps
        self.alphas_cumprod = zero_terminal_snr_alphas_cumprod(num_train_timesteps)

    def step(self, x0_pred: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor) -> torch.Tensor:
        """One update x_t -> x_{t_prev} in float32 (t_prev < 0 means the final step to x_0)."""
        with torch.autocast(x_t.device.type, enabled=False):
            x0_pred, x_t = x0_pred.float(), x_t.float()
            # 1. alpha-bar at t and at the previous timestep (1 past the end: "set_alpha_to_one")
            ab_t = self.alphas_cumprod[t]
            ab_prev = self.alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0)
            # 2. the noise implied by the *unclipped* x_0 (DDIM eq. 12 solved for epsilon)
            eps = (x_t - ab_t**0.5 * x0_pred) / (1.0 - ab_t) ** 0.5
            # 3. clip the predicted x_0 (reference: thresholding with s clamped to 1)
            if self.clip:
                x0_pred = x0_pred.clamp(-1.0, 1.0)
            # 4. DDIM eq. 12 with sigma_t = 0 (eta = 0, eq. 16): no fresh noise
            return ab_prev**0.5 * x0_pred + (1.0 - ab_prev) ** 0.5 * eps

    def sample(
        self,
        denoiser: Callable[[torch.Tensor, int], torch.Tensor],
        noise: torch.Tensor,
        steps: int,
        callback: Callable[[int, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Run the chain from x_T = ``noise``; ``denoiser(x_t, t)`` returns the predicted x_0."""
        timesteps = trailing_timesteps(steps, self.num_train_timesteps)
        ratio = self.num_train_timesteps // steps
        x = noise.float()
        for i, t in enumerate(timesteps):
            x = self.step(denoiser(x, t), t, t - ratio, x)
            if callback is not None:
                callback(i, x)
        return x
