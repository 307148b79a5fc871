"""Modality embeddings: raw-pixel patches, image-token ids and sequences, for the encoder and the decoder.

Attribute names (``proj``, ``token_emb``, ``pos_emb``, ``mod_emb``, ``to_logits``) are the official checkpoint's,
so a module's ``state_dict()`` is the official layout. Every embedding returns ``(x, emb)``: the content term
and the position + modality term, kept apart because the decoder context re-adds ``emb``
(``decoder_proj_context(x) + encoder_emb`` in TerraTorch's terratorch/models/backbones/terramind/model/terramind.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from terratim.layers import Linear, resize_table, sincos_1d, sincos_2d


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, patch*patch*C) with the channel index fastest: (py, px, c), as the official patch
    embeddings (``b d (nh ph) (nw pw) -> b (nh nw) (ph pw d)`` in TerraTorch's encoder_embeddings.py)."""
    batch, channels, height, width = images.shape
    grid_h, grid_w = height // patch, width // patch
    x = images.reshape(batch, channels, grid_h, patch, grid_w, patch)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, py, px, C)
    return x.reshape(batch, grid_h * grid_w, patch * patch * channels)


class _GridPositions(nn.Module):
    """Holds a 2-D sin-cos table for the construction grid and resizes it for other grids."""

    pos_emb: torch.Tensor  # (1, g*g, D) buffer

    def __init__(self, dim: int, grid: int) -> None:
        super().__init__()
        self.grid = grid
        self.dim = dim
        self.register_buffer("pos_emb", sincos_2d(grid, grid, dim))  # (1, g*g, D)
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))
        self._resized: dict[tuple, torch.Tensor] = {}

    def positions(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """(1, grid_h*grid_w, D) position table, bicubically resized when the grid differs (cached)."""
        if (grid_h, grid_w) == (self.grid, self.grid):
            return self.pos_emb
        key = (grid_h, grid_w, self.pos_emb.device, self.pos_emb.dtype, self.pos_emb._version)
        table = self._resized.get(key)
        if table is None:
            table = resize_table(self.pos_emb, (self.grid, self.grid), (grid_h, grid_w))
            self._resized = {key: table}
        return table


class PatchEmbedding(_GridPositions):
    """Raw-pixel input: bias-free linear projection of channel-fastest 16x16 patches."""

    def __init__(self, num_channels: int, dim: int, grid: int, patch_size: int = 16) -> None:
        super().__init__(dim, grid)
        self.num_channels = num_channels
        self.patch_size = patch_size
        self.proj = Linear(patch_size * patch_size * num_channels, dim, bias=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid_h, grid_w = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        x = self.proj(patchify(images, self.patch_size))  # (B, N, D)
        emb = self.positions(grid_h, grid_w) + self.mod_emb  # (1, N, D)
        return x, emb.expand_as(x)


class TokenEmbedding(_GridPositions):
    """Image-token input (FSQ ids on a square grid): an embedding table."""

    def __init__(self, vocab_size: int, dim: int, grid: int) -> None:
        super().__init__(dim, grid)
        self.vocab_size = vocab_size
        self.token_emb = nn.Embedding(vocab_size, dim)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = ids.reshape(ids.shape[0], -1)  # (B, N), row-major
        side = int(round(ids.shape[1] ** 0.5))
        if side * side != ids.shape[1]:
            raise ValueError(f"image tokens must form a square grid, got {ids.shape[1]} tokens")
        x = self.token_emb(ids.long())  # (B, N, D)
        emb = self.positions(side, side) + self.mod_emb
        return x, emb.expand_as(x)


class SequenceEmbedding(nn.Module):
    """Sequence input (coordinates): token table (pad id 0) and a 1-D sin-cos table of 512 rows."""

    pos_emb: torch.Tensor  # (1, L, D) buffer

    def __init__(self, vocab_size: int, dim: int, max_length: int = 512) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.token_emb = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.register_buffer("pos_emb", sincos_1d(max_length, dim))  # (1, L, D)
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.token_emb(ids.long())  # (B, L, D)
        emb = self.pos_emb[:, : ids.shape[1]] + self.mod_emb
        return x, emb.expand_as(x)


class TokenDecoderEmbedding(TokenEmbedding):
    """Decoder side of an image-token domain: queries from positions, logits tied to ``token_emb``."""

    def __init__(self, vocab_size: int, dim: int, grid: int) -> None:
        super().__init__(vocab_size, dim, grid)
        self.to_logits = Linear(dim, vocab_size, bias=False)
        self.to_logits.weight = self.token_emb.weight  # tied, as in the official files

    def query_emb(self, grid: int) -> torch.Tensor:
        """(1, grid*grid, D) position + modality term of every target position."""
        return self.positions(grid, grid) + self.mod_emb


class SequenceDecoderEmbedding(SequenceEmbedding):
    """Decoder side of a sequence domain, logits tied to ``token_emb``."""

    def __init__(self, vocab_size: int, dim: int, max_length: int = 512) -> None:
        super().__init__(vocab_size, dim, max_length)
        self.to_logits = Linear(dim, vocab_size, bias=False)
        self.to_logits.weight = self.token_emb.weight
