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
    class     indices (B,) for single-label and multi-hot (B, K) for multi-label.

    Args:
        model_args: model arguments; default necks pool the last encoder layer's tokens.
        model_factory: only ``"EncoderDecoderFactory"``.
        loss: ``ce`` (single-label) or ``bce`` (multi-label); default by ``multi_label``.
        multi_label: several labels per sample (sigmoid outputs).
        ignore_index: class index excluded from the single-label loss.
        class_names: names for plots and per-class metrics.
        freeze_backbone: keep the backbone fixed (linear probing).
        freeze_decoder: keep necks and decoder fixed.
        freeze_head: keep the head fixed.
        lr: learning rate without an ``optimizer:`` section.
        optimizer: optimiser class name without an ``optimizer:`` section.
        optimizer_hparams: extra optimiser arguments.
        scheduler: scheduler class name without an ``lr_scheduler:`` section.
        scheduler_hparams: extra scheduler arguments.
    """

    task = "classification"

    def __init__(
        self,
        model_args: dict[str, Any],
        model_factory: str = "EncoderDecoderFactory",
        loss: str | None = None,
        multi_label: bool = False,
        ignore_index: int | None = None,
        class_names: list[str] | None = None,
        freeze_backbone: bool = False,
        freeze_decoder: bool = False,
        freeze_head: bool = False,
        lr: float = 1e-4,
        optimizer: str = "AdamW",
        optimizer_hparams: dict[str, Any] | None = None,
        scheduler: str | None = None,
        scheduler_hparams: dict[str, Any] | None = None,
    ) -> None:
        self.num_classes = int(model_args.get("num_classes", 0))
        if self.num_classes < 2:
            raise ValueError("model_args.num_classes must be at least 2 for classification")
        self.multi_label, self.ignore_index, self.class_names = multi_label, ignore_index, class_names
        self.loss_name = loss or ("bce" if multi_label else "ce")
        if self.loss_name not in ("ce", "bce"):
            raise ValueError(f"unknown classification loss {self.loss_name!r}; choose ce or bce")
        if (self.loss_name == "bce") != multi_label:
            raise ValueError("use loss 'bce' with multi_label: true and 'ce' for single-label classification")
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
        self.save_hyperparameters()

    def make_metrics(self) -> MetricCollection:
        k = self.num_classes
        if self.multi_label:
            return MetricCollection(
                {
                    "Accuracy": MultilabelAccuracy(k, average="micro"),
                    "F1": MultilabelF1Score(k, average="macro"),
                    "mAP": MultilabelAveragePrecision(k, average="macro"),
                }
            )
        return MetricCollection(
            {
                "Accuracy": MulticlassAccuracy(k, average="micro", ignore_index=self.ignore_index),
                "F1": MulticlassF1Score(k, average="macro", ignore_index=self.ignore_index),
            }
        )

    def class_label(self, index: int) -> str:
        return self.class_names[index] if self.class_names else str(index)

    def compute_loss(self, output: Tensor, target: Tensor) -> Tensor:
        if self.multi_label:
            return F.binary_cross_entropy_with_logits(output.float(), target.float())
        valid = target != self.ignore_index if self.ignore_index is not None else target == target
        if not valid.any():
            return output.sum() * 0.0
        return F.cross_entropy(output.float()[valid], target[valid].long())

    def update_metrics(self, metrics: MetricCollection, output: Tensor, target: Tensor) -> None:
        if self.multi_label:
            metrics.update(output.sigmoid(), target.long())
        else:
            metrics.update(output.argmax(dim=1), target.long())

    def predictions(self, output: Tensor) -> Tensor:
        return output.sigmoid() if self.multi_label else output.softmax(dim=1)  # (B, K) probabilities
