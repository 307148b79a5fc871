"""Finite scalar quantization, sigmoid variant (Mentzer et al. 2023, "FSQ", arXiv:2309.15505).

TerraTorch counterpart: ``terratorch/models/backbones/terramind/tokenizer/quantizers/quantize_finite_scalar.py``.

Each of the d latent channels is squashed to (0, 1) and rounded onto L_i evenly spaced levels:

    n_i = round(sigmoid(z_i) * (L_i - 1))            (FSQ eq. 1 with a sigmoid bound)
    c_i = n_i / (L_i - 1)                            code in [0, 1]
    id  = sum_i n_i * b_i,  b = cumprod([1, L_0, ..., L_{d-2}])   (mixed radix, channel 0 least significant)

and back: n_i = floor(id / b_i) mod L_i. Rounding uses a straight-through estimator (gradient of the identity),
so the encoder trains through the quantizer; there is no codebook loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward (straight-through estimator)."""
    return x + (x.round() - x).detach()


class FSQ(nn.Module):
    """Quantizer with fixed ``levels`` per latent channel; nothing here is learned or saved.

    Args:
        levels: number of levels per channel, e.g. ``(8, 8, 8, 6, 5)`` (vocabulary 15,360).
    """

    levels: torch.Tensor  # (d,) buffer
    basis: torch.Tensor  # (d,) buffer: mixed-radix place values

    def __init__(self, levels: Sequence[int]) -> None:
        super().__init__()
        if not levels or any(int(level) < 2 for level in levels):
            raise ValueError(f"FSQ levels must all be >= 2, got {list(levels)}")
        self.levels_tuple = tuple(int(level) for level in levels)
        levels_t = torch.tensor(self.levels_tuple, dtype=torch.int64)
        basis = torch.cumprod(torch.tensor((1,) + self.levels_tuple[:-1], dtype=torch.int64), dim=0)
        self.register_buffer("levels", levels_t, persistent=False)  # (d,)
        self.register_buffer("basis", basis, persistent=False)  # (d,)

    @property
    def dim(self) -> int:
        """Latent channels d."""
        return len(self.levels_tuple)

    @property
    def vocab_size(self) -> int:
        """Number of distinct ids, prod(L_i)."""
        return int(torch.tensor(self.levels_tuple).prod())

    def _per_channel(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, *([1] * (like.dim() - 2))).to(like.device)  # (1, d, 1, 1)

    def quantize(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (B, d, h, w) -> codes (B, d, h, w) in [0, 1] (float32) and ids (B, h, w) int64."""
        if latents.dim() != 4 or latents.shape[1] != self.dim:
            raise ValueError(f"FSQ expects latents (B, {self.dim}, h, w), got {tuple(latents.shape)}")
        span = self._per_channel(self.levels - 1, latents).float()  # L_i - 1
        numbers = round_ste(torch.sigmoid(latents.float()) * span)  # n_i, eq. 1
        codes = numbers / span
        ids = (numbers.detach().long() * self._per_channel(self.basis, latents)).sum(dim=1)  # mixed radix
        return codes, ids

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.quantize(latents)

    def check_ids(self, ids: torch.Tensor, what: str = "token ids") -> None:
        """Raise a clear error unless ``ids`` are integers in [0, vocab_size)."""
        if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
            raise TypeError(f"{what} must be an integer tensor, got dtype {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(
                f"{what} must lie in [0, {self.vocab_size}) for FSQ levels {list(self.levels_tuple)}; "
                f"got values in [{int(ids.min())}, {int(ids.max())}]"
            )

    def ids_to_numbers(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids (B, h, w) -> level numbers n (B, d, h, w) int64."""
        ids = ids.long().unsqueeze(1)  # (B, 1, h, w)
        return torch.div(ids, self._per_channel(self.basis, ids), rounding_mode="floor") % self._per_channel(
            self.levels, ids
        )

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids (B, h, w) -> codes (B, d, h, w) float32 in [0, 1]."""
        self.check_ids(ids)
        if ids.dim() != 3:
            raise ValueError(f"token ids must have shape (B, h, w), got {tuple(ids.shape)}")
        numbers = self.ids_to_numbers(ids)
        return numbers.float() / self._per_channel(self.levels - 1, numbers).float()

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, d, h, w) on the level grid -> ids (B, h, w) int64."""
        numbers = (codes.float() * self._per_channel(self.levels - 1, codes).float()).round().long()
        return (numbers * self._per_channel(self.basis, codes)).sum(dim=1)

    def extra_repr(self) -> str:
        return f"levels={list(self.levels_tuple)}, vocab_size={self.vocab_size}"
