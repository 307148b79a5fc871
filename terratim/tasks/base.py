"""Shared Lightning plumbing for the fine-tuning tasks: model building, freezing, optimisers, metric logging.

Tasks call the model; the model never calls Lightning. Batches are ``{"image": {mod: (B, C, H, W)},
"mask": target, ...}`` with standardized images (the data module standardizes after the device transfer).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from terratim.tasks.factory import build_model, freeze
from terratim.tasks.tiled import TiledInferenceParameters, tiled_forward

SPLITS = ("train", "val", "test")
INFERENCE_RECORD_VERSION = 1  # of ``checkpoint["terratim"]``, see BaseTask.inference_record


class BaseTask(pl.LightningModule):
    """Common constructor arguments and steps, in the pattern of torchgeo's ``BaseTask``.

    The constructor saves every argument (its own and the subclass's) as hyper-parameters once, then calls the
    hooks :meth:`configure_models`, :meth:`configure_losses` and :meth:`configure_metrics`, which read
    ``self.hparams``. A subclass declares only the arguments it adds and passes the rest on with ``**kwargs``.

    Args:
        model_args: TerraTorch-style model arguments (see :mod:`terratim.tasks.factory`).
        model_factory: only ``"EncoderDecoderFactory"``.
        freeze_backbone: keep the backbone weights fixed (linear probing).
        freeze_decoder: keep the necks' and decoder's weights fixed.
        freeze_head: keep the head's weights fixed.
        lr: learning rate when no ``optimizer:`` section is given in the config.
        optimizer: ``torch.optim`` class name used without an ``optimizer:`` config section.
        optimizer_hparams: extra optimiser arguments.
        scheduler: ``torch.optim.lr_scheduler`` class name (``ReduceLROnPlateau`` monitors ``val/loss``).
        scheduler_hparams: extra scheduler arguments.
        tiled_inference_parameters: TerraTorch's tiled inference options (``h_crop``, ``h_stride``, ``w_crop``,
            ``w_stride``, ``delta``, ``average_patches``, ``blend_overlaps``, ``batch_size``); given, ``predict``
            runs chip by chip and blends (see :mod:`terratim.tasks.tiled`).
        tiled_inference_on_validation: validate chip by chip as well (TerraTorch's flag, default off).
        tiled_inference_on_testing: test chip by chip as well (TerraTorch's flag, default off).
    """

    task = "segmentation"

    def __init__(
        self,
        model_args: dict[str, Any],
        model_factory: str = "EncoderDecoderFactory",
        freeze_backbone: bool = False,
        freeze_decoder: bool = False,
        freeze_head: bool = False,
        lr: float = 1e-4,
        optimizer: str = "AdamW",
        optimizer_hparams: dict[str, Any] | None = None,
        scheduler: str | None = None,
        scheduler_hparams: dict[str, Any] | None = None,
        tiled_inference_parameters: dict[str, Any] | None = None,
        tiled_inference_on_validation: bool = False,
        tiled_inference_on_testing: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # also collects the arguments of the subclass's __init__
        self.tiled_parameters = self._tiled_parameters()
        self.check_arguments()
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    @property
    def num_classes(self) -> int:
        """``model_args.num_classes`` (0 when not given, as for regression)."""
        return int(self.hparams["model_args"].get("num_classes", 0))

    @property
    def class_names(self) -> list[str] | None:
        """The task's ``class_names`` argument (None for tasks without one)."""
        return self.hparams.get("class_names")

    def _tiled_parameters(self) -> TiledInferenceParameters | None:
        hp = self.hparams
        params = hp["tiled_inference_parameters"]
        for split in ("validation", "testing"):
            if hp[f"tiled_inference_on_{split}"] and not params:
                raise ValueError(f"tiled_inference_on_{split} needs tiled_inference_parameters (h_crop, h_stride, ...)")
        return TiledInferenceParameters.from_config(params) if params else None

    # ---------------------------------------------------------------------------------------------- hooks
    def check_arguments(self) -> None:
        """Refuse inconsistent arguments before anything is built (subclasses add their checks)."""

    def configure_models(self) -> None:
        """Build ``self.model`` from ``model_args`` and freeze the parts the arguments name."""
        hp = self.hparams
        if hp["freeze_backbone"] and hp["model_args"].get("peft_config") is not None:
            raise ValueError(
                "freeze_backbone would freeze the PEFT adapters too (PEFT already keeps the backbone's "
                "own weights fixed): set freeze_backbone: false with model_args.peft_config"
            )
        self.model = build_model(hp["model_factory"], hp["model_args"], self.task)
        if hp["freeze_backbone"]:
            freeze(self.model.backbone)
        if hp["freeze_decoder"]:
            freeze(self.model.necks)
            freeze(self.model.decoder)
        if hp["freeze_head"]:
            freeze(self.model.head)

    def configure_losses(self) -> None:
        """Set ``self.criterion``, called as ``criterion(output, target)``."""
        raise NotImplementedError

    def configure_metrics(self) -> None:
        """One metric collection per split, from :meth:`make_metrics`."""
        self.metrics = nn.ModuleDict({f"{split}_metrics": self.make_metrics() for split in SPLITS})

    # ------------------------------------------------------------------------------------------- subclass API
    def make_metrics(self) -> MetricCollection:
        raise NotImplementedError

    criterion: Callable[[Tensor, Tensor], Tensor]  # set by configure_losses
    metrics: nn.ModuleDict  # of MetricCollection, set by configure_metrics

    def compute_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self.criterion(output, target)

    def split_metrics(self, split: str) -> MetricCollection:
        """The metric collection of ``split``."""
        metrics = self.metrics[f"{split}_metrics"]
        assert isinstance(metrics, MetricCollection)
        return metrics

    def update_metrics(self, metrics: MetricCollection, output: Tensor, target: Tensor) -> None:
        raise NotImplementedError

    def predictions(self, output: Tensor) -> Tensor:
        raise NotImplementedError

    # --------------------------------------------------------------------------------------------- steps
    def forward(self, x: dict[str, Tensor] | Tensor) -> Tensor:
        return self.model(x)

    def infer(self, x: dict[str, Tensor] | Tensor, tiled: bool) -> Tensor:
        """The model's output, chip by chip when ``tiled`` and the task has ``tiled_inference_parameters``."""
        if tiled and self.tiled_parameters is not None:
            return tiled_forward(self, x, self.tiled_parameters)
        return self(x)

    def uses_tiles(self, split: str) -> bool:
        """Whether ``split`` (``train``, ``val``, ``test`` or ``predict``) runs tiled inference."""
        hp = self.hparams
        flags = {"val": hp["tiled_inference_on_validation"], "test": hp["tiled_inference_on_testing"], "predict": True}
        return self.tiled_parameters is not None and flags.get(split, False)

    def _step(self, batch: dict[str, Any], split: str) -> Tensor:
        if "mask" not in batch:
            raise ValueError(f"{split} batch has no labels ('mask'); give the {split} label data")
        output = self.infer(batch["image"], self.uses_tiles(split))
        target = batch["mask"]
        loss = self.compute_loss(output, target)
        batch_size = target.shape[0]
        self.log(
            f"{split}/loss",
            loss,
            on_step=split == "train",
            on_epoch=True,
            prog_bar=True,
            batch_size=batch_size,
            sync_dist=split != "train",
        )
        self.update_metrics(self.split_metrics(split), output.detach(), target)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        output = self.infer(batch["image"], self.uses_tiles("predict"))
        result = {"prediction": self.predictions(output), "meta": batch.get("meta")}
        for key in ("mask", "valid"):
            if key in batch:
                result[key] = batch[key]
        result["image"] = batch["image"]
        return result

    def _log_metrics(self, split: str) -> None:
        metrics = self.split_metrics(split)
        if not any(m.update_count for m in metrics.values()):
            return
        values = metrics.compute()
        flat: dict[str, Tensor] = {}
        for name, value in values.items():
            if value.ndim == 0:
                flat[f"{split}/{name}"] = value
            else:  # per-class values
                for i, v in enumerate(value):
                    flat[f"{split}/{name}_{self.class_label(i)}"] = v
        self.log_dict(flat)
        metrics.reset()

    def class_label(self, index: int) -> str:
        """The name of class ``index`` in per-class metric keys (``class_names`` when the task has them)."""
        return self.class_names[index] if self.class_names else str(index)

    def on_train_epoch_end(self) -> None:
        self._log_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    # --------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["terratim"] = self.inference_record()

    def inference_record(self) -> dict[str, Any]:
        """What inference needs besides the weights and hyper-parameters: the task class and, when the trainer
        has a data module with statistics, the input modalities, their bands, the per-band means and stds the
        inputs were standardized with, and the nodata fill (``terratim infer --ckpt`` reads it, no YAML).

        A multimodal data module gives its ``stats`` per modality; a single-raster one (one tensor, per-channel
        ``means``/``stds``) is keyed by the model's first ``backbone_modalities`` entry with the bands the model
        reads (``backbone_bands``), its ``constant_scale`` folded into the statistics (raw pixels in).
        """
        record: dict[str, Any] = {
            "version": INFERENCE_RECORD_VERSION,
            "task_class": f"{type(self).__module__}.{type(self).__qualname__}",
        }
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        stats = getattr(datamodule, "stats", None)
        if isinstance(stats, Mapping) and stats:
            record["modalities"] = list(stats)
            record["bands"] = {m: list(b) for m, b in (getattr(datamodule, "bands", None) or {}).items()}
            record["means"] = {m: [float(v) for v in mean] for m, (mean, _) in stats.items()}
            record["stds"] = {m: [float(v) for v in std] for m, (_, std) in stats.items()}
            record["no_data_replace"] = getattr(datamodule, "no_data_replace", None)
        elif (single := self.single_raster_statistics(datamodule)) is not None:
            record.update(single)
        return record

    def single_raster_statistics(self, datamodule: Any) -> dict[str, Any] | None:
        """The statistics part of the inference record for a data module with per-channel ``means``/``stds``
        (None without them, or when the model names no ``backbone_modalities``).

        The module computes ``(x * constant_scale - mean) / std``; the record holds the same map on raw pixels,
        ``(x - mean / constant_scale) / (std / constant_scale)``, as inference reads raw scenes.
        """
        from terratim.modalities import resolve

        means, stds = getattr(datamodule, "means", None), getattr(datamodule, "stds", None)
        model_args = self.hparams["model_args"]
        modalities = model_args.get("backbone_modalities") or []
        if means is None or stds is None or not modalities or isinstance(modalities, str | Mapping):
            return None
        first = modalities[0]
        name = resolve(first).name if isinstance(first, str) else str(first)
        scale = float(getattr(datamodule, "constant_scale", 1.0))
        if scale == 0:
            return None  # every pixel scaled to 0: no raw-unit statistics exist
        model_bands = model_args.get("backbone_bands") or {}
        bands = model_bands.get(first) or model_bands.get(name)
        return {
            "modalities": [name],
            "bands": {name: [str(b) for b in bands]} if bands else {},
            "means": {name: [float(v) / scale for v in means]},
            "stds": {name: [float(v) / scale for v in stds]},
            "no_data_replace": getattr(datamodule, "no_data_replace", None),
        }

    # --------------------------------------------------------------------------------------- optimisers
    def configure_optimizers(self) -> Any:
        """Used only without ``optimizer:``/``lr_scheduler:`` config sections (LightningCLI replaces it)."""
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = getattr(torch.optim, hp["optimizer"])(params, lr=hp["lr"], **(hp["optimizer_hparams"] or {}))
        if hp["scheduler"] is None:
            return optimizer
        scheduler = getattr(torch.optim.lr_scheduler, hp["scheduler"])(optimizer, **(hp["scheduler_hparams"] or {}))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
