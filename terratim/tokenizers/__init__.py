"""TerraMind's modality tokenizers: FSQ-VAE encoders with diffusion (DDIM) or ViT decoders, and coordinates."""

from terratim.tokenizers.build import build_tokenizer, load_tokenizer_weights, save_tokenizer
from terratim.tokenizers.coords import CoordsTokenizer, write_coords_vocab
from terratim.tokenizers.ddim import DDIMSampler, trailing_timesteps, zero_terminal_snr_alphas_cumprod
from terratim.tokenizers.fsq import FSQ
from terratim.tokenizers.model import (
    ClassTokenizer,
    DiffusionTokenizer,
    FSQTokenizer,
    TokenizerConfig,
    destandardize,
    standardize,
)
from terratim.tokenizers.unet import DiffusionUNet, UNetConfig

__all__ = [
    "FSQ",
    "ClassTokenizer",
    "CoordsTokenizer",
    "DDIMSampler",
    "DiffusionTokenizer",
    "DiffusionUNet",
    "FSQTokenizer",
    "TokenizerConfig",
    "UNetConfig",
    "build_tokenizer",
    "destandardize",
    "load_tokenizer_weights",
    "save_tokenizer",
    "standardize",
    "trailing_timesteps",
    "write_coords_vocab",
    "zero_terminal_snr_alphas_cumprod",
]
