"""Shared building blocks, imported by every model."""

from terratim.layers.attention import Attention, CrossAttention, key_padding_bias
from terratim.layers.mlp import Mlp, SwiGLU
from terratim.layers.norm import layer_norm
from terratim.layers.position import resize_table, sincos_1d, sincos_2d

__all__ = [
    "Attention",
    "CrossAttention",
    "Mlp",
    "SwiGLU",
    "key_padding_bias",
    "layer_norm",
    "resize_table",
    "sincos_1d",
    "sincos_2d",
]
