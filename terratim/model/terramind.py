"""TerraMind: one encoder-decoder network; backbone, generation, TiM and pretraining are thin modes around it.

Module names equal the official checkpoint keys (those of TerraTorch's ``TerraMind`` and ``TerraMindViT``), so
``TerraMind.state_dict()`` is the official file layout (minus the constant-zero LayerNorm bias buffers, see
:mod:`terratim.weights`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn as nn

from terratim import modalities as mods
from terratim.layers import Attention, CrossAttention, Linear, Mlp, SwiGLU, layer_norm
from terratim.model.config import TerraMindConfig
from terratim.model.embeddings import (
    PatchEmbedding,
    SequenceDecoderEmbedding,
    SequenceEmbedding,
    TokenDecoderEmbedding,
    TokenEmbedding,
)


def make_mlp(config: TerraMindConfig) -> Mlp | SwiGLU:
    """The feed-forward layer of a size: GELU MLP (tiny, small) or bias-free SwiGLU (base, large)."""
    if config.gated_mlp:
        return SwiGLU(config.dim, config.mlp_hidden, bias=config.bias)
    return Mlp(config.dim, config.mlp_hidden, bias=config.bias)


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)) (residuals added in the output projections)."""

    def __init__(self, config: TerraMindConfig) -> None:
        super().__init__()
        self.norm1 = layer_norm(config.dim)
        self.attn = Attention(config.dim, config.num_heads, qkv_bias=config.bias, proj_bias=config.bias)
        self.norm2 = layer_norm(config.dim)
        self.mlp = make_mlp(config)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn(self.norm1(x), bias, residual=x)
        return self.mlp(self.norm2(x), residual=x)


class DecoderBlock(nn.Module):
    """Pre-norm decoder block: self-attention, cross-attention to the encoder context, MLP."""

    def __init__(self, config: TerraMindConfig) -> None:
        super().__init__()
        self.norm1 = layer_norm(config.dim)
        self.self_attn = Attention(config.dim, config.num_heads, qkv_bias=config.bias, proj_bias=config.bias)
        self.query_norm = layer_norm(config.dim)
        self.context_norm = layer_norm(config.dim)
        self.cross_attn = CrossAttention(config.dim, config.num_heads, qkv_bias=config.bias, proj_bias=config.bias)
        self.norm2 = layer_norm(config.dim)
        self.mlp = make_mlp(config)

    def forward(
        self,
        y: torch.Tensor,
        context: torch.Tensor,
        self_bias: torch.Tensor | None = None,
        cross_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        y = self.self_attn(self.norm1(y), self_bias, residual=y)
        y = self.cross_attn(self.query_norm(y), self.context_norm(context), cross_bias, residual=y)
        return self.mlp(self.norm2(y), residual=y)


@dataclass(frozen=True)
class Span:
    """Where one input modality sits in the concatenated token sequence."""

    key: str
    start: int
    stop: int
    is_image: bool


def encoder_embedding(key: str, config: TerraMindConfig, channels: int | None = None) -> nn.Module:
    """The encoder embedding for an internal key; ``channels`` makes a raw-pixel embedding for a new modality."""
    if channels is not None:
        return PatchEmbedding(channels, config.dim, config.grid, config.patch_size)
    modality = mods.key_modality(key)
    if modality.kind == "sequence":
        return SequenceEmbedding(modality.vocab_size, config.dim, config.max_sequence_length)
    if mods.is_image_token_key(key):
        return TokenEmbedding(modality.vocab_size, config.dim, config.grid)
    return PatchEmbedding(modality.num_bands, config.dim, config.grid, config.patch_size)


def decoder_embedding(key: str, config: TerraMindConfig) -> nn.Module:
    """The decoder-side embedding (queries and tied logits) of target domain ``key``."""
    modality = mods.key_modality(key)
    if modality.kind == "sequence":
        return SequenceDecoderEmbedding(modality.vocab_size, config.dim, config.max_sequence_length)
    return TokenDecoderEmbedding(modality.vocab_size, config.dim, config.grid)


class TerraMind(nn.Module):
    """The TerraMind encoder-decoder.

    Args:
        config: architecture.
        encoder_keys: internal keys of the encoder embeddings, with ``None`` or a channel count (new raw
            modality) as value, in the order inputs are usually given.
        decoder_keys: internal keys of the decoder (target) embeddings; empty for an encoder-only network.
    """

    # state-dict prefixes of frozen modules nested in a subclass (tokenizers, a TiM generator), not TerraMind weights
    nested_prefixes: tuple[str, ...] = ()

    def __init__(
        self,
        config: TerraMindConfig,
        encoder_keys: Mapping[str, int | None],
        decoder_keys: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__()
        self.config = config
        self.encoder_embeddings = nn.ModuleDict(
            {key: encoder_embedding(key, config, channels) for key, channels in encoder_keys.items()}
        )
        self.encoder = nn.ModuleList(Block(config) for _ in range(config.encoder_depth))
        self.encoder_norm = layer_norm(config.dim)
        self.has_decoder = bool(decoder_keys) and config.decoder_depth > 0
        if self.has_decoder:
            self.decoder_embeddings = nn.ModuleDict({key: decoder_embedding(key, config) for key in decoder_keys})
            self.decoder_proj_context = Linear(config.dim, config.dim, bias=True)
            self.decoder = nn.ModuleList(DecoderBlock(config) for _ in range(config.decoder_depth))
            self.decoder_norm = layer_norm(config.dim)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.reset_parameters()
        self.share_modality_embeddings()

    # ----------------------------------------------------------------------------------------- setup
    def share_modality_embeddings(self) -> None:
        """A domain on both sides uses one ``mod_emb`` (as the official files store it)."""
        if not self.has_decoder:
            return
        for key, dec in self.decoder_embeddings.items():
            if key in self.encoder_embeddings:
                dec.mod_emb = self.encoder_embeddings[key].mod_emb

    def reset_parameters(self) -> None:
        """MAE-style init (as TerraTorch's ``TerraMind`` initializes) for weights that do not come from a checkpoint."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                init_linear(name, module)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        for name, param in self.named_parameters():
            if name.endswith("mod_emb") or name == "mask_token":
                nn.init.normal_(param, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    # --------------------------------------------------------------------------------------- encoder
    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[Span]]:
        """Embed inputs keyed by internal key, concatenated in the mapping's order.

        Returns:
            x (B, N, D) content, emb (B, N, D) position + modality terms, and the span of each input.
        """
        xs, embs, spans, start = [], [], [], 0
        for key, value in inputs.items():
            x, emb = self.encoder_embeddings[key](value)
            xs.append(x)
            embs.append(emb[:1])  # (1, n, D): the terms are equal across the batch
            is_image = not isinstance(self.encoder_embeddings[key], SequenceEmbedding)
            spans.append(Span(key, start, start + x.shape[1], is_image))
            start += x.shape[1]
        tokens = torch.cat(xs, dim=1)  # (B, N, D)
        return tokens, torch.cat(embs, dim=1).expand_as(tokens), spans  # emb: a broadcast view, not B copies

    def run_encoder(
        self, tokens: torch.Tensor, bias: torch.Tensor | None = None, all_layers: bool = True
    ) -> list[torch.Tensor]:
        """Encoder blocks on (B, N, D); returns every block output with the last one normed.

        With ``all_layers=False`` only ``[encoder_norm(last)]`` is returned.
        """
        outputs = []
        x = tokens
        for block in self.encoder:
            x = block(x, bias)
            if all_layers:
                outputs.append(x)
        normed = self.encoder_norm(x)
        if all_layers:
            outputs[-1] = normed
            return outputs
        return [normed]

    # --------------------------------------------------------------------------------------- decoder
    def decoder_context(self, encoded: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Cross-attention context: proj(encoder output) + the encoder tokens' position/modality terms."""
        return self.decoder_proj_context(encoded) + emb

    def image_queries(self, key: str, positions: torch.Tensor, grid: int) -> torch.Tensor:
        """Decoder queries (B, n, D) = mask token + pos + mod at the given raster positions (B, n)."""
        table = cast(TokenDecoderEmbedding, self.decoder_embeddings[key]).query_emb(grid)[0]  # (N, D)
        return self.mask_token + table[positions]

    def run_decoder(
        self,
        queries: torch.Tensor,
        context: torch.Tensor,
        self_bias: torch.Tensor | None = None,
        cross_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decoder blocks then decoder_norm: (B, Nq, D)."""
        y = queries
        for block in self.decoder:
            y = block(y, context, self_bias, cross_bias)
        return self.decoder_norm(y)

    def logits(self, key: str, decoded: torch.Tensor) -> torch.Tensor:
        """Tied logits (B, Nq, V) of target domain ``key``."""
        to_logits = cast(nn.Linear, self.decoder_embeddings[key].to_logits)  # tied to the token table
        return to_logits(decoded)


def init_linear(name: str, module: nn.Linear) -> None:
    """Xavier-uniform; fused qkv / kv weights use the bound of one of their slices (as in TerraTorch's
    terratorch/models/backbones/terramind/model/terramind.py)."""
    fan_out, fan_in = module.weight.shape
    if name.endswith("qkv"):
        fan_out //= 3
    elif name.endswith("kv"):
        fan_out //= 2
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    if name.endswith("to_logits"):
        return  # tied to token_emb
    nn.init.uniform_(module.weight, -bound, bound)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
