"""Multi-head attention through ``scaled_dot_product_attention`` (fused kernels on CPU and CUDA)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from terratim.layers.linear import Linear, combined


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, H*Dh) -> (B, H, N, Dh)."""
    batch, tokens, width = x.shape
    return x.view(batch, tokens, num_heads, width // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, Dh) -> (B, N, H*Dh)."""
    batch, heads, tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def key_padding_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Boolean mask (B, Nk) or (B, Nq, Nk), True = do not attend -> additive bias broadcastable to SDPA.

    The reference fills masked logits with the dtype's most negative finite value; an additive bias with that
    value gives the same softmax.
    """
    if mask is None:
        return None
    if mask.dim() == 2:
        mask = mask[:, None, :]  # (B, 1, Nk)
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    bias.masked_fill_(mask, torch.finfo(dtype).min)
    return bias[:, None]  # (B, 1, Nq|1, Nk)


class Attention(nn.Module):
    """Self-attention with a fused qkv projection; output rows of ``qkv`` are [q; k; v], heads contiguous."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim, bias=proj_bias)

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None = None, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``proj(mix(x))``, plus ``residual`` (added inside the projection where it can be fused)."""
        mixed = self.mix(x, bias)
        return self.proj(mixed) if residual is None else combined(self.proj, mixed, residual)

    def mix(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Attention output before ``proj``: (B, N, D) -> (B, N, D)."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, Dh)
        return merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=bias))


class CrossAttention(nn.Module):
    """Queries from ``x``, keys/values from ``context``; ``kv`` output rows are [k; v]."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = Linear(dim, dim, bias=qkv_bias)
        self.kv = Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim, bias=proj_bias)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        bias: torch.Tensor | None = None,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``proj(mix(x, context))``, plus ``residual`` (added inside the projection where it can be fused)."""
        mixed = self.mix(x, context, bias)
        return self.proj(mixed) if residual is None else combined(self.proj, mixed, residual)

    def mix(self, x: torch.Tensor, context: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Attention output before ``proj``: (B, Nq, D) with context (B, Nk, D) -> (B, Nq, D)."""
        batch, tokens, dim = context.shape
        q = split_heads(self.q(x), self.num_heads)  # (B, H, Nq, Dh)
        kv = self.kv(context).view(batch, tokens, 2, self.num_heads, dim // self.num_heads)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, Nk, Dh)
        return merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=bias))
