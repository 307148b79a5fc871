"""Semantic segmentation: per-pixel classes, losses ce / dice / jaccard / focal / lovasz, IoU, F1 and accuracy."""

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
    ``Accuracy`` (pixel accuracy) and ``mAccuracy`` (mean class accuracy), all torchmetrics over the split's
    pixels (one confusion matrix per epoch, not a mean of per-batch values).

    Args:
        model_args: model arguments (``backbone``, ``backbone_*``, ``necks``, ``decoder``, ``num_classes``).
        loss: ``ce``, ``dice``, ``jaccard``, ``focal`` or ``lovasz``; a list of them (summed, e.g.
            ``[ce, lovasz]``) or a ``{name: weight}`` dict (weighted sum).
        ignore_index: label value excluded from the loss and the metrics.
        class_weights: per-class weights (``ce`` only).
        class_names: names used in per-class metric keys and plots.
        plot_on_val: accepted for config compatibility; plots are written by ``predict`` instead.
        **kwargs: the arguments of :class:`~terratim.tasks.base.BaseTask` (``model_factory``, ``freeze_*``,
            ``lr``, ``optimizer``, ``scheduler``, ``tiled_inference_parameters``, ...).
    """

    task = "segmentation"

    def __init__(
        self,
        model_args: dict[str, Any],
        *,
        loss: str | list[str] | dict[str, float] = "ce",
        ignore_index: int | None = None,
        class_weights: list[float] | None = None,
        class_names: list[str] | None = None,
        plot_on_val: bool | int = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_args, **kwargs)

    def check_arguments(self) -> None:
        if self.num_classes < 1:
            raise ValueError("model_args.num_classes must be a positive integer for segmentation")
        names = self.hparams["class_names"]
        if names is not None and len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class_names for {self.num_classes} classes")

    def configure_losses(self) -> None:
        hp = self.hparams
        self.criterion = build_segmentation_loss(hp["loss"], hp["ignore_index"], hp["class_weights"])

    def make_metrics(self) -> MetricCollection:
        kw = {"num_classes": self.num_classes, "ignore_index": self.hparams["ignore_index"]}
        return MetricCollection(
            {
                "mIoU": MulticlassJaccardIndex(average="macro", **kw),
                "IoU": MulticlassJaccardIndex(average="none", **kw),
                "F1": MulticlassF1Score(average="macro", **kw),
                "Accuracy": MulticlassAccuracy(average="micro", **kw),
                "mAccuracy": MulticlassAccuracy(average="macro", **kw),
            }
        )

    def compute_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self.criterion(output, target.long())

    def update_metrics(self, metrics: MetricCollection, output: Tensor, target: Tensor) -> None:
        metrics.update(output.argmax(dim=1), target.long())

    def predictions(self, output: Tensor) -> Tensor:
        return output.argmax(dim=1)  # (B, H, W) class ids
