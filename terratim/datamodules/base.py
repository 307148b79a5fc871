"""What the data modules share: one loader per split and batches moved to the device without their metadata."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

Split = Literal["train", "val", "test", "predict"]


class SplitDataModule(pl.LightningDataModule):
    """A data module whose split loaders come from ``_loader(split)``; ``roots[split]`` is falsy for a split
    without data (fit then runs without validation)."""

    roots: dict[str, Any]

    def _loader(self, split: Split) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader | list:
        if not self.roots.get("val") and self.trainer is not None and self.trainer.state.fn == "fit":
            return []  # fit without validation data
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move the tensors; the per-sample metadata (paths, georeferencing) stays where it is."""
        meta = batch.pop("meta", None) if isinstance(batch, dict) else None
        batch = super().transfer_batch_to_device(batch, device, dataloader_idx)
        if meta is not None:
            batch["meta"] = meta
        return batch
