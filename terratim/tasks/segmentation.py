"""Semantic segmentation: per-pixel classes, losses ce / dice / jaccard / focal, IoU, F1 and accuracy."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex

from terratim.tasks.base import BaseTask
from terratim.tasks.losses import build_segmentation_loss


class SemanticSegmentationTask(BaseTask):
    """Pixel-wise classification, TerraTorch-compatible arguments.

    Logged per split (``train``/``val``/``test``): ``loss``, ``mIoU``, ``IoU_<class>``, ``F1`` (macro),
    ``Accuracy`` (pixel accuracy) and ``mAccuracy`` (mean class accuracy).

    Args:
        model_args: model arguments (``backbone``, ``backbone_*``, ``necks``, ``decoder``, ``num_classes``).
        model_factory: only ``"EncoderDecoderFactory"``.
        loss: ``ce``, ``dice``, ``jaccard`` or ``focal``.
        ignore_index: label value excluded from the loss and the metrics.
        class_weights: per-class weights (``ce`` only).
        class_names: names used in per-class metric keys and plots.
        freeze_backbone: keep the backbone fixed.
        freeze_decoder: keep necks and decoder fixed.
        freeze_head: keep the head fixed.
        lr: learning rate without an ``optimizer:`` section.
        optimizer: optimiser class name without an ``optimizer:`` section.
        optimizer_hparams: extra optimiser arguments.
        scheduler: scheduler class name without an ``lr_scheduler:`` section.
        scheduler_hparams: extra scheduler arguments.
        plot_on_val: accepted for config compatibility; plots are written by ``predict`` instead.
    """

    task = "segmentation"

    def __init__(
        self,
        model_args: dict[str, Any],
        model_factory: str = "EncoderDecoderFactory",
        loss: str = "ce",
        ignore_index: int | None = None,
        class_weights: list[float] | None = None,
        class_names: list[str] | None = None,
        freeze_backbone: bool = False,
        freeze_decoder: bool = False,
        freeze_head: bool = False,
        lr: float = 1e-4,
        optimizer: str = "AdamW",
        optimizer_hparams: dict[str, Any] | None = None,
        scheduler: str | None = None,
        scheduler_hparams: dict[str, Any] | None = None,
        plot_on_val: bool | int = False,
    ) -> None:
        self.num_classes = int(model_args.get("num_classes", 0))
        if self.num_classes < 1:
            raise ValueError("model_args.num_classes must be a positive integer for segmentation")
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class_names for {self.num_classes} classes")
        self.ignore_index = ignore_index
        self.class_names = class_names
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
        self.criterion = build_segmentation_loss(loss, ignore_index, class_weights)
        self.save_hyperparameters()

    def make_metrics(self) -> MetricCollection:
        kw = {"num_classes": self.num_classes, "ignore_index": self.ignore_index}
        return MetricCollection(
            {
                "mIoU": MulticlassJaccardIndex(average="macro", **kw),
                "IoU": MulticlassJaccardIndex(average="none", **kw),
                "F1": MulticlassF1Score(average="macro", **kw),
                "Accuracy": MulticlassAccuracy(average="micro", **kw),
                "mAccuracy": MulticlassAccuracy(average="macro", **kw),
            }
        )

    def class_label(self, index: int) -> str:
        return self.class_names[index] if self.class_names else str(index)

    def compute_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self.criterion(output, target.long())

    def update_metrics(self, metrics: MetricCollection, output: Tensor, target: Tensor) -> None:
        metrics.update(output.argmax(dim=1), target.long())

    def predictions(self, output: Tensor) -> Tensor:
        return output.argmax(dim=1)  # (B, H, W) class ids
