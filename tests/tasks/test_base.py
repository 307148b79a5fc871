"""BaseTask: hyper-parameters saved once, subclasses that only add arguments and hooks."""

from __future__ import annotations

import pytest
import torch
from test_components import PYRAMID, StandIn
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MetricCollection

from terratim.tasks import ClassificationTask, PixelwiseRegressionTask, SemanticSegmentationTask
from terratim.tasks.base import BaseTask

COMMON = {"model_args", "model_factory", "freeze_backbone", "freeze_decoder", "freeze_head", "lr", "optimizer",
          "optimizer_hparams", "scheduler", "scheduler_hparams", "tiled_inference_parameters",
          "tiled_inference_on_validation", "tiled_inference_on_testing"}


class ScaledL1Task(BaseTask):
    """A task written only with hooks: one added argument, its own loss and metric."""

    task = "regression"

    def __init__(self, model_args: dict, *, scale: float = 1.0, **kwargs) -> None:
        super().__init__(model_args, **kwargs)

    def configure_losses(self) -> None:
        self.criterion = lambda out, target: self.hparams["scale"] * (out[:, 0] - target).abs().mean()

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"MAE": MeanAbsoluteError()})

    def update_metrics(self, metrics: MetricCollection, output: Tensor, target: Tensor) -> None:
        metrics.update(output[:, 0], target)


def _args(**extra) -> dict:
    return {"backbone": StandIn(), "necks": PYRAMID, "decoder": "FCNDecoder", "decoder_channels": 8, **extra}


def test_subclass_adds_an_argument_and_hooks_without_forwarding_the_rest():
    task = ScaledL1Task(_args(), scale=3.0, lr=0.5, freeze_head=True)
    assert set(task.hparams) == COMMON | {"scale"}
    assert task.hparams["lr"] == 0.5 and not any(p.requires_grad for p in task.model.head.parameters())
    assert task.configure_optimizers().param_groups[0]["lr"] == 0.5
    image = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    target = torch.randn(2, 32, 32, generator=torch.Generator().manual_seed(1))
    loss = task.training_step({"image": {"S1GRD": image}, "mask": target}, 0)
    with torch.no_grad():
        expected = 3.0 * (task({"S1GRD": image})[:, 0].double() - target.double()).abs().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)  # float32 mean of 2048 terms vs float64


@pytest.mark.parametrize(
    ("task_class", "own", "model_args"),
    [
        (SemanticSegmentationTask, {"loss", "ignore_index", "class_weights", "class_names", "plot_on_val"},
         {"num_classes": 2}),
        (PixelwiseRegressionTask, {"loss", "ignore_index"}, {}),
        (ClassificationTask, {"loss", "multi_label", "ignore_index", "class_names"}, {"num_classes": 3}),
    ],
)
def test_saved_hyper_parameters_rebuild_the_task(task_class, own, model_args):
    """``terratim infer --ckpt`` rebuilds a task as ``task_class(**hyper_parameters)``."""
    task = task_class(_args(**model_args), lr=1e-3)
    assert set(task.hparams) == COMMON | own
    rebuilt = task_class(**dict(task.hparams))
    assert rebuilt.state_dict().keys() == task.state_dict().keys()
    assert rebuilt.hparams == task.hparams


def test_arguments_after_model_args_are_keyword_only():
    """A second positional argument used to be taken as model_factory; now it is refused, never misplaced."""
    with pytest.raises(TypeError):
        SemanticSegmentationTask(_args(num_classes=2), "EncoderDecoderFactory")


def test_class_names_name_per_class_metrics():
    task = SemanticSegmentationTask(_args(num_classes=2), class_names=["dry", "water"])
    assert (task.num_classes, task.class_label(1)) == (2, "water")
    with pytest.raises(ValueError, match="3 class_names for 2 classes"):
        SemanticSegmentationTask(_args(num_classes=2), class_names=["a", "b", "c"])


def test_freeze_backbone_keeps_backbone_weights_through_an_optimizer_step():
    task = SemanticSegmentationTask(_args(num_classes=2), freeze_backbone=True, lr=0.1)
    trainable = {name for name, p in task.named_parameters() if p.requires_grad}
    assert trainable and not any(name.startswith("model.backbone.") for name in trainable)
    assert any(name.startswith("model.decoder.") for name in trainable)
    before = {k: v.clone() for k, v in task.state_dict().items()}
    optimizer = task.configure_optimizers()
    image = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    task.compute_loss(task({"S1GRD": image}), torch.randint(0, 2, (2, 32, 32))).backward()
    optimizer.step()
    after = task.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("model.backbone."))
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith("model.head."))


def test_freeze_backbone_with_peft_is_refused():
    peft = {"method": "LORA", "peft_config_kwargs": {"target_modules": ["qkv"], "r": 4}}
    with pytest.raises(ValueError, match="freeze_backbone would freeze the PEFT adapters too"):
        SemanticSegmentationTask(_args(num_classes=2, peft_config=peft), freeze_backbone=True)


def test_single_raster_statistics_are_recorded_per_model_modality_in_raw_units():
    """A single-raster data module (per-channel means/stds, no modality names) is recorded under the model's first
    ``backbone_modalities`` entry with its ``backbone_bands``; ``constant_scale`` is folded in, so the record
    standardizes raw pixels as the module standardized scaled ones."""
    from types import SimpleNamespace

    import numpy as np

    owner = SimpleNamespace(hparams={"model_args": {"backbone_modalities": ["S2L2A", "S1GRD"],
                                                    "backbone_bands": {"S2L2A": ["RED", "NIR_NARROW"]}}})
    module = SimpleNamespace(means=np.array([2.0, 4.0]), stds=np.array([1.0, 2.0]), constant_scale=0.5,
                             no_data_replace=0.0)
    record = BaseTask.single_raster_statistics(owner, module)
    assert record is not None and record["modalities"] == ["S2L2A"] and record["no_data_replace"] == 0.0
    assert record["bands"] == {"S2L2A": ["RED", "NIR_NARROW"]}
    raw = np.array([[3.0, 10.0], [-1.0, 0.5]])  # (pixels, channels)
    expected = (raw * 0.5 - module.means) / module.stds
    got = (raw - np.array(record["means"]["S2L2A"])) / np.array(record["stds"]["S2L2A"])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert BaseTask.single_raster_statistics(owner, SimpleNamespace()) is None  # no statistics: nothing recorded
