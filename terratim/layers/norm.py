"""Normalisation layers."""

from __future__ import annotations

import torch.nn as nn


def layer_norm(dim: int, bias: bool = False) -> nn.LayerNorm:
    """TerraMind's LayerNorm: eps 1e-6, scale only (the official files carry a zero bias buffer)."""
    return nn.LayerNorm(dim, eps=1e-6, bias=bias)
