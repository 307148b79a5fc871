"""Scene classification, single-label (softmax) or multi-label (sigmoid, e.g. BigEarthNet)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MultilabelAccuracy,
    MultilabelAveragePrecision,
    MultilabelF1Score,
)

from terratim.tasks.base import BaseTask


class ClassificationTask(BaseTask):
    """One label (or a set of labels with ``multi_label``) per sample.

    Logged per split: ``loss``, ``Accuracy`` (micro), ``F1`` (macro); multi-label adds ``mAP``. Targets are
    class indices (B,) for single-label and multi-hot (B, K) for multi-label.

    Args:
        model_args: model arguments; default necks pool the last encoder layer's tokens.
        loss: ``ce`` (single-label) or ``bce`` (multi-label); default by ``multi_label``.
        multi_label: several labels per sample (sigmoid outputs).
        ignore_index: class index excluded from the single-label loss.
        class_names: names for plots and per-class metrics.
        **kwargs: the arguments of :class:`~terratim.tasks.base.BaseTask` (``model_factory``, ``freeze_*``,
            ``lr``, ``optimizer``, ``scheduler``, ...).
    """

    task = "classification"

    def __init__(
        self,
        model_args: dict[str, Any],
        *,
        loss: str | None = None,
        multi_label: bool = False,
        ignore_index: int | None = None,
        class_names: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_args, **kwargs)

    @property
    def loss_name(self) -> str:
        return self.hparams["loss"] or ("bce" if self.hparams["multi_label"] else "ce")

    def check_arguments(self) -> None:
        if self.num_classes < 2:
            raise ValueError("model_args.num_classes must be at least 2 for classification")
        if self.loss_name not in ("ce", "bce"):
            raise ValueError(f"unknown classification loss {self.loss_name!r}; choose ce or bce")
        if (self.loss_name == "bce") != self.hparams["multi_label"]:
            raise ValueError("use loss 'bce' with multi_label: true and 'ce' for single-label classification")
        if self.hparams["tiled_inference_parameters"]:
            raise ValueError("tiled_inference_parameters apply to pixel-wise tasks, not scene classification")

    def configure_losses(self) -> None:
        self.criterion = self._bce if self.hparams["multi_label"] else self._ce

    def _bce(self, output: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(output.float(), target.float())

    def _ce(self, output: Tensor, target: Tensor) -> Tensor:
        ignore = self.hparams["ignore_index"]
        valid = target != ignore if ignore is not None else target == target
        if not valid.any():
            return output.sum() * 0.0
        return F.cross_entropy(output.float()[valid], target[valid].long())

    def make_metrics(self) -> MetricCollection:
        k, ignore = self.num_classes, self.hparams["ignore_index"]
        if self.hparams["multi_label"]:
            return MetricCollection(
                {
                    "Accuracy": MultilabelAccuracy(k, average="micro"),
                    "F1": MultilabelF1Score(k, average="macro"),
                    "mAP": MultilabelAveragePrecision(k, average="macro"),
                }
            )
        return MetricCollection(
            {
                "Accuracy": MulticlassAccuracy(k, average="micro", ignore_index=ignore),
                "F1": MulticlassF1Score(k, average="macro", ignore_index=ignore),
            }
        )

    def update_metrics(self, metrics: MetricCollection, output: Tensor, target: Tensor) -> None:
        if self.hparams["multi_label"]:
            metrics.update(output.sigmoid(), target.long())
        else:
            metrics.update(output.argmax(dim=1), target.long())

    def predictions(self, output: Tensor) -> Tensor:
        return output.sigmoid() if self.hparams["multi_label"] else output.softmax(dim=1)  # (B, K) probabilities
