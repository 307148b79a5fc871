"""Prediction output: one georeferenced GeoTIFF per sample, plus an optional PNG panel.

Each prediction keeps the CRS and transform of the sample's first modality. Class maps are uint8 (int16 above
255 classes) with nodata 255 (-1) where no modality had a valid pixel; regression maps are float32 with NaN
there.
Scene classification writes one ``predictions_rank<r>.csv`` of class probabilities per process.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from terratim.data.geotiff import write_geotiff


def _raw(images: dict[str, torch.Tensor], i: int, datamodule: Any) -> dict[str, np.ndarray]:
    """Sample ``i`` of each modality, back in raw units when the data module knows the statistics."""
    out = {}
    for mod, x in images.items():
        arr = x[i].detach().float().cpu().numpy()
        stats = getattr(datamodule, "stats", {}).get(mod)
        if stats is not None:
            arr = arr * stats[1][:, None, None] + stats[0][:, None, None]
        out[mod] = arr
    return out


class GeoTiffPredictionWriter(pl.Callback):
    """Write each predicted sample to ``output_dir/<sample_id>_pred.tif`` (and ``_panel.png``).

    Args:
        output_dir: folder for the outputs (created).
        png: also write a panel with the input (RGB / false colour), the prediction and the label.
        overwrite: replace existing outputs; otherwise an existing output raises before prediction starts.
    """

    def __init__(self, output_dir: str, png: bool = False, overwrite: bool = False) -> None:
        super().__init__()
        self.output_dir, self.png, self.overwrite = Path(output_dir), png, overwrite

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        existing = [*self.output_dir.glob("*_pred.tif"), *self.output_dir.glob("predictions_rank*.csv")]
        if existing and not self.overwrite:
            raise FileExistsError(
                f"{self.output_dir} already holds predictions; pass overwrite (CLI: "
                "--predict_overwrite true) or choose another output folder"
            )
        trainer.strategy.barrier()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / f"predictions_rank{trainer.global_rank}.csv").unlink(missing_ok=True)

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        prediction = outputs["prediction"].detach().cpu()
        metas = outputs.get("meta") or [{"sample_id": f"b{batch_idx}_{i}"} for i in range(len(prediction))]
        if prediction.ndim == 2:  # scene classification (B, K)
            self._write_csv(trainer, metas, prediction)
            return
        valid = outputs.get("valid")
        for i, meta in enumerate(metas):
            any_valid = None
            if valid:
                any_valid = torch.stack([v[i] for v in valid.values()]).any(0).cpu().numpy()
            self._write_map(meta, prediction[i].numpy(), any_valid)
            if self.png:
                self._write_panel(trainer, pl_module, outputs, i, meta)

    def _write_map(self, meta: dict[str, Any], pred: np.ndarray, any_valid: np.ndarray | None) -> None:
        like = {"crs": meta.get("crs"), "transform": meta.get("transform")}
        dtype: type[np.generic]
        nodata: float
        if np.issubdtype(pred.dtype, np.integer):
            dtype, nodata = (np.uint8, 255) if pred.max(initial=0) < 255 else (np.int16, -1)
        else:
            dtype, nodata = np.float32, float("nan")
        out = pred.astype(dtype)
        if any_valid is not None:
            out = np.where(any_valid, out, nodata).astype(dtype)
        write_geotiff(self.output_dir / f"{meta['sample_id']}_pred.tif", out, like=like, nodata=nodata, overwrite=True)

    def _write_panel(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, i: int, meta: dict[str, Any]
    ) -> None:
        from terratim.viz import save_panel

        raw = _raw(outputs["image"], i, getattr(trainer, "datamodule", None))
        panels = prediction_panels(raw, outputs["prediction"][i], _label(outputs, i), task_class_scheme(pl_module))
        save_panel(self.output_dir / f"{meta['sample_id']}_panel.png", panels, title=meta["sample_id"])

    def _write_csv(self, trainer: pl.Trainer, metas: list[dict], probs: torch.Tensor) -> None:
        path = self.output_dir / f"predictions_rank{trainer.global_rank}.csv"
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(["sample", "prediction", *[f"p{k}" for k in range(probs.shape[1])]])
            for meta, p in zip(metas, probs.tolist(), strict=True):
                writer.writerow([meta["sample_id"], int(np.argmax(p)), *[f"{v:.6f}" for v in p]])


def _label(outputs: dict[str, Any], i: int) -> torch.Tensor | None:
    """Sample ``i``'s label map (H, W) when the predict batch carried one (``mask``), else None."""
    mask = outputs.get("mask")
    return mask[i] if isinstance(mask, torch.Tensor) and mask.ndim == 3 else None


def task_class_scheme(pl_module: pl.LightningModule):
    """The class scheme of a segmentation task (its ``class_names``), None for a regression task."""
    from terratim.viz import class_scheme

    num_classes = getattr(pl_module, "num_classes", None)
    if getattr(pl_module, "task", None) != "segmentation" or not num_classes:
        return None
    return class_scheme(int(num_classes), getattr(pl_module, "class_names", None))


def prediction_panels(
    raw: dict[str, np.ndarray], prediction: torch.Tensor, label: torch.Tensor | None, scheme: Any
) -> list[tuple[str, Any, np.ndarray]]:
    """Panels of one sample: each input, the prediction and, when known, the label.

    Args:
        raw: (C, H, W) input per modality, in raw units.
        prediction: (H, W) class ids, or (H, W) values of a regression task.
        label: the (H, W) label map, or None when the predict data had no labels.
        scheme: the task's :class:`~terratim.viz.ClassScheme` (class maps), None for regression maps.
    """
    panels: list[tuple[str, Any, np.ndarray]] = [(mod, mod, arr) for mod, arr in raw.items()]
    for caption, values in (("prediction", prediction), ("label", label)):
        if values is None:
            continue
        array = values.detach().cpu().numpy()
        panels.append((caption, scheme, array) if scheme is not None else (caption, "DEM", array[None]))
    return panels
