"""Tiny tokenizer configs for tests (same code paths as the released architecture, seconds on CPU)."""

from __future__ import annotations

import torch

from terratim.tokenizers import TokenizerConfig

TINY = dict(
    enc_dim=32, enc_depth=1, enc_heads=2, dec_dim=32, dec_depth=1, dec_heads=2,
    unet={"channels": 32, "channel_mult": (1, 1, 2, 2), "num_res_blocks": 1, "attention_ds": (4, 8)},
)


def tiny_config(modality: str) -> TokenizerConfig:
    return TokenizerConfig.for_modality(modality, **TINY)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every weight (the zero-initialised output convs included) a small random value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model
