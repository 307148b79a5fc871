"""Fixed sin-cos position tables (temperature 10000) and the reference's bicubic resize (``build_2d_sincos_posemb``
and ``interpolate_pos_encoding`` in TerraTorch's terratorch/models/backbones/terramind/model/tm_utils.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos_2d(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Position table (1, grid_h*grid_w, dim), float32.

    For square grids, token r*g + c gets [sin(r w), cos(r w), sin(c w), cos(c w)] with w_k = T^(-k/(dim/4)).
    Rectangular grids follow the reference's (w, h) meshgrid flattened w-major, so the first half encodes
    n // grid_h and the second half n % grid_h.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)  # (D/4,)
    grid_w_idx, grid_h_idx = torch.meshgrid(
        torch.arange(grid_w, dtype=torch.float32), torch.arange(grid_h, dtype=torch.float32), indexing="ij"
    )
    first = grid_w_idx.flatten()[:, None] * omega[None]  # (N, D/4)
    second = grid_h_idx.flatten()[:, None] * omega[None]
    table = torch.cat([first.sin(), first.cos(), second.sin(), second.cos()], dim=1)
    return table[None]  # (1, N, D)


def sincos_1d(length: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Sequence position table (1, length, dim): [sin(p w), cos(p w)] with w_k = T^(-k/(dim/2))."""
    half = dim // 2
    omega = 1.0 / temperature ** (torch.arange(half, dtype=torch.float32) / half)
    angles = torch.arange(length, dtype=torch.float32)[:, None] * omega[None]  # (L, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)[None]


def resize_table(table: torch.Tensor, grid: tuple[int, int], grid_out: tuple[int, int]) -> torch.Tensor:
    """Bicubically resize a (1, gh*gw, D) table to (1, oh*ow, D) as the reference does (align_corners=False)."""
    if tuple(grid) == tuple(grid_out):
        return table
    dim = table.shape[-1]
    image = table.reshape(1, grid[0], grid[1], dim).permute(0, 3, 1, 2)  # (1, D, gh, gw)
    image = F.interpolate(image.float(), size=grid_out, mode="bicubic", align_corners=False)
    return image.permute(0, 2, 3, 1).reshape(1, grid_out[0] * grid_out[1], dim).to(table.dtype)
