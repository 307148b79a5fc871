"""YAML configs of ``terratim train-tokenizer`` and ``terratim pretrain``: data, optimiser and trainer sections.

Shared sections (see ``configs/pretrain/*.yaml`` for complete files)::

    data:
      simulated: {seed: 0, count: 2048, size: 64}   # or: root: /path/to/folder (<MODALITY>/<sample>.tif)
      crop: 224                                      # folder data only: centre crop
      batch_size: 32
      num_workers: 0
    optim: {lr: 1.0e-3, weight_decay: 0.05, warmup_steps: 100}
    trainer: {max_steps: 2000, accelerator: auto, devices: 1, strategy: auto, precision: 32-true}
    seed: 0
    output: terramind_pretrained.safetensors
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

from terratim.pretraining.data import FolderDataset, SimulatedDataset

DATA_KEYS = {"simulated", "root", "crop", "batch_size", "num_workers"}
TRAINER_KEYS = {"max_steps", "accelerator", "devices", "num_nodes", "strategy", "precision",
                "accumulate_grad_batches", "gradient_clip_val", "log_every_n_steps", "default_root_dir"}  # fmt: skip


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config into a dict, with a clear error for a missing or malformed file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def check_keys(section: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ValueError(f"unknown keys in '{where}': {unknown}; allowed: {sorted(allowed)}")


def make_dataset(data: Mapping[str, Any], modalities: Sequence[str]) -> Dataset:
    """The dataset a ``data:`` section describes, returning the given modalities."""
    check_keys(data, DATA_KEYS, "data")
    if ("simulated" in data) == ("root" in data):
        raise ValueError("the 'data' section needs exactly one of 'simulated: {seed, count, size}' or 'root: DIR'")
    if "simulated" in data:
        sim = dict(data["simulated"])
        check_keys(sim, {"seed", "count", "size"}, "data.simulated")
        return SimulatedDataset(int(sim.get("seed", 0)), int(sim["count"]), int(sim.get("size", 224)), modalities)
    return FolderDataset(data["root"], modalities, crop=data.get("crop"))


def make_loader(data: Mapping[str, Any], dataset: Dataset, seed: int) -> DataLoader:
    import torch

    return DataLoader(dataset, batch_size=int(data.get("batch_size", 16)), shuffle=True, drop_last=True,
                      num_workers=int(data.get("num_workers", 0)),
                      generator=torch.Generator().manual_seed(seed))  # fmt: skip


def make_trainer(trainer: Mapping[str, Any], progress_bar: bool = True) -> pl.Trainer:
    """A Lightning ``Trainer`` from the ``trainer:`` section (DDP / FSDP through ``strategy``).

    On a terminal a progress bar shows; otherwise (logs, CI) the loss is printed every ``log_every_n_steps``.
    """
    check_keys(trainer, TRAINER_KEYS, "trainer")
    interactive = progress_bar and sys.stdout.isatty()
    options = {"max_steps": 1000, "accelerator": "auto", "devices": 1, "logger": False,
               "enable_checkpointing": False, "enable_progress_bar": interactive, "enable_model_summary": False,
               "log_every_n_steps": 50}  # fmt: skip
    options.update(trainer)
    if progress_bar and not interactive:
        options["callbacks"] = [PrintLoss(int(options["log_every_n_steps"]))]
    return pl.Trainer(**options)


def warmup_cosine_schedule(optimizer, warmup_steps: int, max_steps: int) -> dict[str, Any]:
    """Lightning's ``lr_scheduler`` entry: linear warm-up over ``warmup_steps``, then cosine decay to 0 at
    ``max_steps``, stepped every optimizer step."""
    import math

    import torch

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}


def fit_and_export(
    module: pl.LightningModule,
    config: Mapping[str, Any],
    modalities: Sequence[str],
    trainer: Mapping[str, Any],
    seed: int,
    progress_bar: bool,
    out_path: Path,
) -> None:
    """Train ``module`` on the ``data:`` section's ``modalities``, write it with ``module.export(out_path)``
    and cast the file to ``export_dtype`` when the config asks for one."""
    data = dict(config.get("data") or {})
    make_trainer(trainer, progress_bar).fit(module, make_loader(data, make_dataset(data, modalities), seed))
    module.export(out_path)
    if config.get("export_dtype", "float32") != "float32":
        cast_checkpoint(out_path, config["export_dtype"])


def cast_checkpoint(path: str | os.PathLike, dtype: str) -> Path:
    """Rewrite a ``.safetensors`` file with floating-point tensors in ``dtype`` (e.g. ``float16`` to halve a
    bundled file); the loaders cast back to the model's dtype. The ``.json`` beside it is kept."""
    import torch
    from safetensors.torch import load_file, save_file

    if dtype not in ("float16", "bfloat16", "float32"):
        raise ValueError(f"export_dtype must be float16, bfloat16 or float32, got {dtype!r}")
    path = Path(path)
    target = getattr(torch, dtype)
    state = {k: v.to(target) if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    save_file(state, str(path))
    return path


class PrintLoss(pl.Callback):
    """Print step, loss and elapsed time every ``every`` steps (for logs without a terminal)."""

    def __init__(self, every: int) -> None:
        self.every, self.start = max(1, every), 0.0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        step = trainer.global_step
        if step % self.every == 0 or step == trainer.max_steps:
            loss = trainer.callback_metrics.get("train/loss")
            shown = f"{float(loss):.4f}" if loss is not None else "n/a"
            print(f"step {step}/{trainer.max_steps} loss {shown} ({time.perf_counter() - self.start:.0f} s)",
                  flush=True)  # fmt: skip
