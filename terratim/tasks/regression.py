"""Pixel-wise regression: one value per pixel, masked MSE / MAE / RMSE / Huber losses and metrics."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from terratim.tasks.base import BaseTask
from terratim.tasks.losses import MaskedRegressionLoss


class PixelwiseRegressionTask(BaseTask):
    """Per-pixel regression. Target pixels that are NaN or equal ``ignore_index`` are left out.

    Logged per split: ``loss``, ``RMSE``, ``MSE``, ``MAE``.

    Args:
        model_args: model arguments (``num_classes`` is not needed).
        model_factory: only ``"EncoderDecoderFactory"``.
        loss: ``mse``, ``mae``, ``rmse`` or ``huber``.
        ignore_index: target value that marks missing pixels.
        freeze_backbone: keep the backbone fixed.
        freeze_decoder: keep necks and decoder fixed.
        freeze_head: keep the head fixed.
        lr: learning rate without an ``optimizer:`` section.
        optimizer: optimiser class name without an ``optimizer:`` section.
        optimizer_hparams: extra optimiser arguments.
        scheduler: scheduler class name without an ``lr_scheduler:`` section.
        scheduler_hparams: extra scheduler arguments.
    """

    task = "regression"

    def __init__(
        self,
        model_args: dict[str, Any],
        model_factory: str = "EncoderDecoderFactory",
        loss: str = "mse",
        ignore_index: float | None = None,
        freeze_backbone: bool = False,
        freeze_decoder: bool = False,
        freeze_head: bool = False,
        lr: float = 1e-4,
        optimizer: str = "AdamW",
        optimizer_hparams: dict[str, Any] | None = None,
        scheduler: str | None = None,
        scheduler_hparams: dict[str, Any] | None = None,
    ) -> None:
        self.ignore_index = ignore_index
        super().__init__(
            model_args,
            model_factory,
            freeze_backbone,
            freeze_decoder,
            freeze_head,
            lr,
            optimizer,
            optimizer_hparams,
            scheduler,
            scheduler_hparams,
        )
        self.criterion = MaskedRegressionLoss(loss, ignore_index)
        self.save_hyperparameters()

    def make_metrics(self) -> MetricCollection:
        return MetricCollection(
            {"RMSE": MeanSquaredError(squared=False), "MSE": MeanSquaredError(), "MAE": MeanAbsoluteError()}
        )

    def _valid(self, target: Tensor) -> Tensor:
        valid = torch.isfinite(target)
        return valid & (target != self.ignore_index) if self.ignore_index is not None else valid

    def compute_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self.criterion(output[:, 0], target)

    def update_metrics(self, metrics: MetricCollection, output: Tensor, target: Tensor) -> None:
        valid = self._valid(target)
        if valid.any():
            metrics.update(output[:, 0][valid].float(), target[valid].float())

    def predictions(self, output: Tensor) -> Tensor:
        return output[:, 0]  # (B, H, W)
