"""ViT-B encoder and decoder of the TerraMind tokenizers (TerraTorch: ``vit_b_enc`` and ``vit_b_dec`` in
``terratorch/models/backbones/terramind/tokenizer/models/vit_models.py``).

Both work on a 16x16-patch grid and add a fixed 2-D sin-cos table made for 256 px (16x16 patches), resized
bicubically to the actual grid on every call as the reference does, so any size that is a multiple of 16 works.
The encoder ends with the ViT-VQGAN post-MLP (LN -> Linear -> tanh -> Linear, residual) computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from terratim.layers import Attention, Linear, Mlp, sincos_2d


def sincos_grid(grid: int, dim: int) -> torch.Tensor:
    """The reference's position table laid out as an image (1, D, grid, grid)."""
    return sincos_2d(grid, grid, dim).reshape(1, grid, grid, dim).permute(0, 3, 1, 2).contiguous()


def resized_positions(pos_emb: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """(1, D, g, g) table -> (1, grid_h*grid_w, D), bicubic, align_corners=False (even at the stored size)."""
    table = F.interpolate(pos_emb, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
    return table.flatten(2).transpose(1, 2)


def post_mlp_float32(norm: nn.LayerNorm, mlp: Mlp, x: torch.Tensor) -> torch.Tensor:
    """x + fc2(tanh(fc1(LN(x)))) in float32 with autocast off, also when the module itself is 16-bit."""
    with torch.autocast(x.device.type, enabled=False):
        x = x.float()
        h = F.layer_norm(x, norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps)
        h = torch.tanh(F.linear(h, mlp.fc1.weight.float(), mlp.fc1.bias.float()))
        return x + F.linear(h, mlp.fc2.weight.float(), mlp.fc2.bias.float())


class ViTBlock(nn.Module):
    """Pre-norm transformer block; LayerNorms have a learned bias here (unlike the TerraMind backbone)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x), residual=x)
        return self.mlp(self.norm2(x), residual=x)


class ViTEncoder(nn.Module):
    """Image (B, C, H, W) -> features (B, D, H/16, W/16).

    Args:
        in_channels: input channels (10 for one-hot LULC).
        dim: width D.
        depth: number of blocks.
        num_heads: attention heads.
        patch_size: patch edge in pixels.
        pos_grid: side of the stored sin-cos table (16 = 256 px).
    """

    def __init__(
        self,
        in_channels: int,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        patch_size: int = 16,
        pos_grid: int = 16,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.pos_emb = nn.Parameter(sincos_grid(pos_grid, dim), requires_grad=False)  # (1, D, g, g)
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.blocks = nn.Sequential(*[ViTBlock(dim, num_heads) for _ in range(depth)])
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.post_mlp = Mlp(dim, 4 * dim, act=nn.Tanh)

    def forward(self, x: torch.Tensor, return_intermediates: bool = False) -> torch.Tensor | list[torch.Tensor]:
        grid_h, grid_w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        x = self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)
        x = x + resized_positions(self.pos_emb, grid_h, grid_w).to(x.dtype)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        x = post_mlp_float32(self.norm_mlp, self.post_mlp, x)  # the encoder's post-MLP runs in float32
        outputs[-1] = x
        grids = [o.transpose(1, 2).reshape(o.shape[0], -1, grid_h, grid_w) for o in outputs]  # (B, D, h, w)
        return grids if return_intermediates else grids[-1]


class ViTDecoder(nn.Module):
    """Features (B, D, h, w) -> image (B, C_out, 16h, 16w) (LULC: 10 class logits).

    Args:
        out_channels: output channels.
        dim: width D.
        depth: number of blocks.
        num_heads: attention heads.
        patch_size: patch edge in pixels.
        pos_grid: side of the stored sin-cos table.
    """

    def __init__(
        self,
        out_channels: int,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        patch_size: int = 16,
        pos_grid: int = 16,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.patch_size = patch_size
        self.pos_emb = nn.Parameter(sincos_grid(pos_grid, dim), requires_grad=False)
        self.blocks = nn.Sequential(*[ViTBlock(dim, num_heads) for _ in range(depth)])
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.post_mlp = Mlp(dim, 4 * dim, act=nn.Tanh)
        self.out_proj = Linear(dim, out_channels * patch_size * patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, grid_h, grid_w = x.shape
        p = self.patch_size
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        x = x + resized_positions(self.pos_emb, grid_h, grid_w).to(x.dtype)
        x = self.blocks(x)
        x = x + self.post_mlp(self.norm_mlp(x))  # in the input dtype here, unlike the encoder's
        x = self.out_proj(x)  # (B, N, C*p*p), per token laid out (c, py, px)
        x = x.view(batch, grid_h, grid_w, self.out_channels, p, p)
        return x.permute(0, 3, 1, 4, 2, 5).reshape(batch, self.out_channels, grid_h * p, grid_w * p)
