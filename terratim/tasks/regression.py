"""Pixel-wise regression: one value per pixel, masked MSE / MAE / RMSE / Huber losses (or their weighted sum)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from terratim.tasks.base import BaseTask
from terratim.tasks.losses import build_regression_loss


class PixelwiseRegressionTask(BaseTask):
    """Per-pixel regression. Target pixels that are NaN or equal ``ignore_index`` are left out.

    Logged per split: ``loss``, ``RMSE``, ``MSE``, ``MAE``.

    Args:
        model_args: model arguments (``num_classes`` is not needed).
        loss: ``mse``, ``mae``, ``rmse`` or ``huber``; a list of them (summed) or a ``{name: weight}`` dict
            (weighted sum, e.g. ``{rmse: 0.5, mse: 0.5}``).
        ignore_index: target value that marks missing pixels.
        **kwargs: the arguments of :class:`~terratim.tasks.base.BaseTask` (``model_factory``, ``freeze_*``,
            ``lr``, ``optimizer``, ``scheduler``, ``tiled_inference_parameters``, ...).
    """

    task = "regression"

    def __init__(
        self,
        model_args: dict[str, Any],
        *,
        loss: str | list[str] | dict[str, float] = "mse",
        ignore_index: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_args, **kwargs)

    def configure_losses(self) -> None:
        self.criterion = build_regression_loss(self.hparams["loss"], self.hparams["ignore_index"])

    def make_metrics(self) -> MetricCollection:
        return MetricCollection(
            {"RMSE": MeanSquaredError(squared=False), "MSE": MeanSquaredError(), "MAE": MeanAbsoluteError()}
        )

    def _valid(self, target: Tensor) -> Tensor:
        valid = torch.isfinite(target)
        ignore = self.hparams["ignore_index"]
        return valid & (target != ignore) if ignore is not None else valid

    def compute_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self.criterion(output[:, 0], target)

    def update_metrics(self, metrics: MetricCollection, output: Tensor, target: Tensor) -> None:
        valid = self._valid(target)
        if valid.any():
            metrics.update(output[:, 0][valid].float(), target[valid].float())

    def predictions(self, output: Tensor) -> Tensor:
        return output[:, 0]  # (B, H, W)
