"""Training FSQ-VAE tokenizers (TerraMind, arXiv 2504.11171): the objective per decoder kind and a Lightning module.

* Class maps (LULC, ``ClassTokenizer``): one-hot -> ViT encoder -> FSQ -> ViT decoder -> class logits;
  loss = cross-entropy against the class ids.
* Continuous images (``DiffusionTokenizer``): the FSQ codes condition an x_0-predicting UNet. Training is the
  DiVAE objective: draw t uniformly, noise the clean image with the zero-terminal-SNR schedule the sampler uses,
  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (DDPM eq. 4), and regress x_0 with a mean squared error.

The FSQ rounding passes gradients straight through, so encoder and decoder train jointly, with no codebook
loss. Inputs are in model units (standardized images, or class ids for LULC).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from terratim.pretraining.schedule import schedule_length, warmup_cosine_schedule
from terratim.tokenizers.ddim import NUM_TRAIN_TIMESTEPS, zero_terminal_snr_alphas_cumprod
from terratim.tokenizers.model import ClassTokenizer, DiffusionTokenizer, FSQTokenizer, TokenizerConfig, make_tokenizer


def class_tokenizer_loss(tokenizer: ClassTokenizer, ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the reconstructed class logits against class ids (B, H, W)."""
    logits = tokenizer(ids)  # (B, classes, H, W)
    return F.cross_entropy(logits.float(), ids.long().reshape(logits.shape[0], *logits.shape[-2:]))


def diffusion_tokenizer_loss(
    tokenizer: DiffusionTokenizer, x0: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """DiVAE x_0-regression loss for a standardized image batch (B, C, H, W)."""
    # 1. codes of the clean image (straight-through FSQ).
    codes, _ = tokenizer.encode(x0)
    # 2. a timestep per sample and the noised image x_t (DDPM eq. 4 with the zero-terminal-SNR alpha-bar).
    alphas_cumprod = zero_terminal_snr_alphas_cumprod().to(x0.device)
    t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (x0.shape[0],), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    abar = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    # 3. regress x_0.
    return F.mse_loss(tokenizer.denoise(x_t, t, codes).float(), x0.float())


def tokenizer_loss(tokenizer: FSQTokenizer, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The training loss of any tokenizer for one batch in model units."""
    if isinstance(tokenizer, ClassTokenizer):
        return class_tokenizer_loss(tokenizer, x)
    if isinstance(tokenizer, DiffusionTokenizer):
        return diffusion_tokenizer_loss(tokenizer, x, generator)
    raise ValueError(f"no training loss for a {type(tokenizer).__name__} ({tokenizer.config.modality})")


class TokenizerTraining(pl.LightningModule):
    """Trains one tokenizer from ``batch[modality]``: the ``model:`` section of ``terratim train-tokenizer``.

    Args:
        modality: the modality to tokenize (e.g. ``LULC``, ``S1GRD``, ``DEM``, ``NDVI``).
        architecture: ``TokenizerConfig`` fields that differ from the released tokenizer of ``modality``
            (``enc_dim``, ``enc_depth``, ``decoder``, ``unet``, ...).
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up, then cosine decay to 0 at ``max_steps``.
        max_steps: length of the schedule; default the trainer's ``max_steps``.
        seed: seed of the timestep / noise generator (offset by the global rank).
    """

    def __init__(
        self,
        modality: str,
        architecture: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 50,
        max_steps: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if architecture and "modality" in architecture:
            raise ValueError("give the tokenizer's modality as model.modality, not inside model.architecture")
        config = TokenizerConfig.for_modality(modality, **(architecture or {}))
        self.tokenizer = make_tokenizer(config, decoder=True)
        self.modality = self.tokenizer.modality.name
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.max_steps, self.seed = warmup_steps, max_steps, seed
        self._generator: torch.Generator | None = None

    @property
    def data_modalities(self) -> list[str]:
        """The modalities a batch must hold: the tokenizer's own."""
        return [self.modality]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed + 1000 * self.global_rank)
        if self.modality not in batch:
            raise KeyError(f"the batch lacks {self.modality}; it has {sorted(batch)}")
        x = batch[self.modality]
        loss = tokenizer_loss(self.tokenizer, x, self._generator)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    @torch.no_grad()
    def token_usage(self, x: torch.Tensor) -> float:
        """Fraction of distinct ids among the tokens of a batch (a collapse check)."""
        ids = self.tokenizer.encode(x)[1]
        return float(ids.unique().numel() / ids.numel())

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        optimizer = torch.optim.AdamW(self.tokenizer.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return {
            "optimizer": optimizer,
            "lr_scheduler": warmup_cosine_schedule(
                optimizer, self.warmup_steps, schedule_length(self.max_steps, self.trainer)
            ),
        }

    def export(self, path: str | os.PathLike) -> Path:
        """Write the tokenizer as ``.safetensors`` + ``.json`` (what ``build_tokenizer(ckpt_path=...)`` reads)."""
        from terratim.tokenizers.build import save_tokenizer

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_tokenizer(self.tokenizer, path)
