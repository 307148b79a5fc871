"""Shared building blocks, imported by every model."""

from terratim.layers.attention import Attention, CrossAttention, key_padding_bias
from terratim.layers.linear import Linear, set_fused_inference
from terratim.layers.mlp import Mlp, SwiGLU
from terratim.layers.norm import layer_norm
from terratim.layers.position import resize_table, sincos_1d, sincos_2d

__all__ = [
    "Attention",
    "CrossAttention",
    "Linear",
    "Mlp",
    "SwiGLU",
    "key_padding_bias",
    "layer_norm",
    "resize_table",
    "set_fused_inference",
    "sincos_1d",
    "sincos_2d",
]
