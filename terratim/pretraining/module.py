"""Lightning module for masked multimodal pretraining; the objective itself is in :mod:`.objective`.

The module owns a :class:`~terratim.model.terramind.TerraMind` (encoder embeddings for the inputs, a decoder for
the target token domains) and frozen tokenizers that turn target modalities (and token inputs such as LULC)
into ids on the fly. ``export`` writes ``network.state_dict()`` - the official checkpoint layout - as
safetensors with its :class:`~terratim.model.config.CheckpointConfig` as JSON next to it, which
``terratim.registry.build_from_file(path, mode=...)`` loads as a backbone, a generator or a TiM model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import lightning.pytorch as pl
import torch
import torch.nn as nn
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from terratim import modalities as mods
from terratim.model.config import CheckpointConfig, TerraMindConfig, size_config
from terratim.model.terramind import TerraMind
from terratim.pretraining.masking import MaskingConfig, select_tokens
from terratim.pretraining.objective import LossWeighting, masked_modeling_loss
from terratim.pretraining.schedule import schedule_length, warmup_cosine_schedule
from terratim.tokenizers.model import FSQTokenizer
from terratim.weights import save_safetensors


def network_architecture(size: str | None, architecture: TerraMindConfig | None) -> TerraMindConfig:
    """The architecture a released ``size`` names, or the one spelled out (exactly one of the two)."""
    if size is not None and architecture is None:
        return size_config(size)
    if architecture is not None and size is None:
        return architecture
    raise ValueError("give exactly one of model.size (tiny, small, base, large) or model.architecture")


def _tokenizer(modality: str, tokenizer: str | nn.Module) -> nn.Module:
    """A tokenizer module, read encode-only when given as a file (pretraining only encodes)."""
    if isinstance(tokenizer, nn.Module):
        return tokenizer
    from terratim.tokenizers.build import build_tokenizer

    return build_tokenizer(modality, ckpt_path=tokenizer, decoder=False)


class MaskedPretraining(pl.LightningModule):
    """4M-style pretraining of TerraMind: the ``model:`` section of ``terratim pretrain``.

    Args:
        inputs: input modalities (raw images through patch embeddings; LULC / NDVI as tokens).
        targets: target modalities (their token domains); each needs a tokenizer.
        tokenizers: ``{modality: tokenizer file or module}`` for every target and every token input (frozen
            here; files are read encode-only).
        size: a released architecture (``tiny``, ``small``, ``base``, ``large``); give this or ``architecture``.
        architecture: the network's shapes, spelled out.
        masking: token budgets and Dirichlet concentration.
        loss_weighting: ``"mod"`` or ``"token"`` averaging of the cross-entropy.
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps, then cosine decay to 0 at ``max_steps``.
        max_steps: length of the schedule; default the trainer's ``max_steps``.
        init_from: a checkpoint in the official layout to continue from (every key must fit).
        seed: seed of the masking generator (offset by the global rank).
    """

    def __init__(
        self,
        inputs: Sequence[str],
        targets: Sequence[str],
        tokenizers: Mapping[str, str | nn.Module],
        size: str | None = None,
        architecture: TerraMindConfig | None = None,
        masking: MaskingConfig | None = None,
        loss_weighting: LossWeighting = "mod",
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 100,
        max_steps: int | None = None,
        init_from: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not inputs or not targets:
            raise ValueError("pretraining needs at least one modality in 'inputs' and in 'targets'")
        self.inputs = {mods.resolve(m).name: mods.input_key(m) for m in inputs}
        self.targets = {mods.resolve(m).name: mods.token_key(m) for m in targets}
        needed = {m for m, key in self.inputs.items() if mods.is_token_key(key)} | set(self.targets)
        missing = sorted(needed - {mods.resolve(m).name for m in tokenizers})
        if missing:
            raise ValueError(f"pretraining needs a tokenizer for {missing} (targets and token inputs)")
        config = network_architecture(size, architecture)
        frozen = {mods.resolve(m).name: _tokenizer(m, t).eval().requires_grad_(False) for m, t in tokenizers.items()}
        self.network = TerraMind(config, {key: None for key in self.inputs.values()}, list(self.targets.values()))
        self.tokenizers = nn.ModuleDict(frozen)
        self.masking = masking or MaskingConfig()
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.max_steps = warmup_steps, max_steps
        self.weighting = loss_weighting
        self.seed = seed
        self._generator: torch.Generator | None = None
        if init_from:
            self.load_network(init_from)

    @property
    def data_modalities(self) -> list[str]:
        """The modalities a batch must hold: inputs, then targets that are not inputs."""
        return list(dict.fromkeys([*self.inputs, *self.targets]))

    def train(self, mode: bool = True) -> MaskedPretraining:
        super().train(mode)
        self.tokenizers.eval()  # frozen tokenizers never leave eval mode
        return self

    @torch.no_grad()
    def tokenize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Token ids (B, h, w) of a modality from its model-unit image."""
        return cast(FSQTokenizer, self.tokenizers[name]).encode(x)[1]

    def prepare(self, batch: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
        """``{input key: image or ids}`` and ``{target key: ids}`` from a batch of model-unit tensors."""
        missing = [m for m in (*self.inputs, *self.targets) if m not in batch]
        if missing:
            raise KeyError(f"the batch lacks modalities {missing}; it has {sorted(batch)}")
        ids = {m: self.tokenize(m, batch[m]) for m in {*self.targets, *self._token_inputs()}}
        inputs = {key: ids[m] if m in ids and mods.is_token_key(key) else batch[m] for m, key in self.inputs.items()}
        return inputs, {key: ids[m] for m, key in self.targets.items()}

    def _token_inputs(self) -> list[str]:
        return [m for m, key in self.inputs.items() if mods.is_token_key(key)]

    def _tokens_per_image(self, x: torch.Tensor) -> int:
        if x.is_floating_point():  # raw image
            patch = self.network.config.patch_size
            return (x.shape[-2] // patch) * (x.shape[-1] // patch)
        return x[0].numel()

    def loss(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> tuple:
        """Masked-modeling loss of one batch (also usable outside Lightning)."""
        inputs, targets = self.prepare(batch)
        source = {key: mods.KEY_OWNERS[key] for key in (*inputs, *targets)}
        selection = select_tokens(
            next(iter(inputs.values())).shape[0],
            {key: self._tokens_per_image(x) for key, x in inputs.items()},
            {key: x[0].numel() for key, x in targets.items()},
            source,
            self.masking,
            generator,
        )
        return masked_modeling_loss(self.network, inputs, targets, selection, self.weighting)

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed + 1000 * self.global_rank)
        loss, per_mod = self.loss(batch, self._generator)
        size = next(iter(batch.values())).shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for key, value in per_mod.items():
            self.log(f"train/ce_{mods.KEY_OWNERS[key]}", value, batch_size=size)
        return loss

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, param in self.network.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim < 2 or "mod_emb" in name or name == "mask_token" else decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": warmup_cosine_schedule(
                optimizer, self.warmup_steps, schedule_length(self.max_steps, self.trainer)
            ),
        }

    def load_network(self, path: str | os.PathLike) -> None:
        """Start from a checkpoint in the official layout (to continue pretraining); every key must fit."""
        from terratim.weights import convert_state_dict, load_into, read_state_dict

        converted, report = convert_state_dict(read_state_dict(path), self.network)
        load_into(self.network, converted, report, source=str(path))

    def export(self, path: str | os.PathLike) -> Path:
        """Write the network in the official layout (``.safetensors``) and its architecture (``.json``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted({*self.network.encoder_embeddings, *self.targets.values()})
        meta = {"inputs": list(self.inputs), "targets": list(self.targets), "masking": vars(self.masking)}
        config = CheckpointConfig(self.network.config, None, tuple(keys), meta)
        save_safetensors(self.network.state_dict(), path, config=config)
        return path
