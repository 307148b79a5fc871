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
from terratim.modalities import denormalize

RGB_CAPTION = "input (RGB)"
RGB_PANEL = "S2RGB"  # viz draws an S2RGB panel as stored / 255, so a stretched RGB goes in at 0..255


def _raw(images: dict[str, torch.Tensor] | torch.Tensor, i: int, datamodule: Any) -> dict[str, np.ndarray]:
    """Sample ``i`` of each modality, back in raw units when the data module knows the statistics.

    A single-raster data module hands the model one tensor (B, C, H, W) or (B, C, T, H, W): it is undone with the
    module's per-channel ``means``/``stds`` and kept under the key ``"image"``.
    """
    if isinstance(images, torch.Tensor):
        return {"image": _raw_tensor(images[i], datamodule)}
    out = {}
    for mod, x in images.items():
        arr = x[i].detach().float().cpu().numpy()
        stats = getattr(datamodule, "stats", {}).get(mod)
        if stats is not None:
            arr = denormalize(arr, stats[0], stats[1], mod)
        out[mod] = arr
    return out


def _raw_tensor(image: torch.Tensor, datamodule: Any) -> np.ndarray:
    """(C, H, W) or (C, T, H, W) standardized input -> (C, H, W) in raw units (the last date of a series)."""
    arr = image.detach().float().cpu().numpy()
    if arr.ndim == 4:
        arr = arr[:, -1]  # (C, T, H, W) -> the last date (C, H, W)
    if arr.ndim != 3:
        raise ValueError(f"a prediction panel needs an input (C, H, W) or (C, T, H, W), got {tuple(image.shape)}")
    means, stds = getattr(datamodule, "means", None), getattr(datamodule, "stds", None)
    if means is not None and stds is not None and len(means) == arr.shape[0] == len(stds):
        arr = denormalize(arr, means, stds, "image")
    return arr


def rgb_panel(image: np.ndarray, rgb_indices: list[int] | None = None) -> np.ndarray:
    """(C, H, W) raw input -> (3, H, W) in 0..255: channels ``rgb_indices`` (default the first three; one
    channel is drawn grey), each stretched between its 2nd and 98th percentile; NaN stays NaN (drawn black)."""
    from terratim.viz import percentile_limits, stretch

    indices = list(rgb_indices) if rgb_indices is not None else list(range(min(3, image.shape[0])))
    if len(indices) not in (1, 3) or not all(-image.shape[0] <= k < image.shape[0] for k in indices):
        raise ValueError(f"rgb_indices {indices} must name 3 (or 1) of the input's {image.shape[0]} channels")
    channels = image[indices * 3 if len(indices) == 1 else indices].astype(np.float32)  # (3, H, W)
    return stretch(channels, percentile_limits(channels)) * 255.0


def predict_sample_ids(datamodule: Any) -> list[str] | None:
    """Sample ids of the data module's predict dataset (``datasets["predict"].samples``), None when it has none."""
    datasets = getattr(datamodule, "datasets", None)
    dataset = datasets.get("predict") if isinstance(datasets, dict) else None
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return None
    ids = [getattr(sample, "sample_id", None) for sample in samples]
    return [str(i) for i in ids] if all(isinstance(i, str) for i in ids) else None


class GeoTiffPredictionWriter(pl.Callback):
    """Write each predicted sample to ``output_dir/<sample_id>_pred.tif`` (and ``_panel.png``).

    Args:
        output_dir: folder for the outputs (created).
        png: also write a panel with the input (RGB / false colour), the prediction and the label.
        overwrite: replace existing outputs; otherwise an output of this run that already exists (a sample's
            ``_pred.tif``, or any prediction when the data module does not list its predict sample ids) raises
            before prediction starts. Files of other samples in the folder are left alone.
    """

    def __init__(self, output_dir: str, png: bool = False, overwrite: bool = False) -> None:
        super().__init__()
        self.output_dir, self.png, self.overwrite = Path(output_dir), png, overwrite

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ids = predict_sample_ids(getattr(trainer, "datamodule", None))
        csv_name = f"predictions_rank{trainer.global_rank}.csv"
        writes_csv = getattr(pl_module, "task", None) not in ("segmentation", "regression")  # scene classes
        existing = self.existing_outputs(ids, [csv_name] if writes_csv else [])
        if existing and not self.overwrite:
            raise FileExistsError(
                f"{self.output_dir} already holds {len(existing)} of this run's outputs, e.g. {existing[0].name}; "
                "pass overwrite (CLI: --predict_overwrite true) or choose another output folder"
            )
        trainer.strategy.barrier()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if writes_csv:
            (self.output_dir / csv_name).unlink(missing_ok=True)

    def existing_outputs(self, sample_ids: list[str] | None, csv_names: list[str]) -> list[Path]:
        """The files this run would write that already exist: each sample's ``_pred.tif`` (and ``_panel.png``)
        and ``csv_names`` when the sample ids are known; otherwise any prediction in the folder."""
        if sample_ids is None:
            return sorted([*self.output_dir.glob("*_pred.tif"), *self.output_dir.glob("predictions_rank*.csv")])
        suffixes = ("_pred.tif", "_panel.png") if self.png else ("_pred.tif",)
        names = [f"{sid}{suffix}" for sid in sample_ids for suffix in suffixes]
        names += csv_names
        return [self.output_dir / name for name in names if (self.output_dir / name).exists()]

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
        if isinstance(outputs["image"], torch.Tensor):
            datamodule = getattr(trainer, "datamodule", None)
            raw = {RGB_CAPTION: rgb_panel(raw["image"], getattr(datamodule, "rgb_indices", None))}
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
        raw: (C, H, W) input per modality, in raw units; or ``{RGB_CAPTION: (3, H, W)}`` from :func:`rgb_panel`.
        prediction: (H, W) class ids, or (H, W) values of a regression task.
        label: the (H, W) label map, or None when the predict data had no labels.
        scheme: the task's :class:`~terratim.viz.ClassScheme` (class maps), None for regression maps.
    """
    panels: list[tuple[str, Any, np.ndarray]] = [
        (RGB_CAPTION, RGB_PANEL, arr) if mod == RGB_CAPTION else (mod, mod, arr) for mod, arr in raw.items()
    ]
    for caption, values in (("prediction", prediction), ("label", label)):
        if values is None:
            continue
        array = values.detach().cpu().numpy()
        panels.append((caption, scheme, array) if scheme is not None else (caption, "DEM", array[None]))
    return panels
