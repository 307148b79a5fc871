"""Pretraining data: co-registered samples from a folder (``<MODALITY>/<sample>.tif``) or from the simulator.

Both datasets return ``{modality name: tensor}`` in model units: continuous images standardized with the
registry's pretraining statistics (float32 (C, H, W), nodata filled with 0 = the mean), LULC as class ids
(int64 (H, W)). :class:`PretrainingDataModule` is the ``data:`` section of ``terratim pretrain`` and
``terratim train-tokenizer``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from terratim import modalities as mods
from terratim.data import sim


def to_model_units(name: str, array: np.ndarray) -> torch.Tensor:
    """Physical values (C, H, W) -> standardized float32 (NaN -> 0), or LULC class ids int64 (H, W)."""
    modality = mods.resolve(name)
    if modality.is_categorical:
        ids = np.nan_to_num(array[0], nan=0.0)
        return torch.from_numpy(ids.astype(np.int64))
    if array.shape[0] != modality.num_bands:
        raise ValueError(
            f"{modality.name}: expected {modality.num_bands} bands {list(modality.bands)}, got {array.shape[0]}"
        )
    z = modality.standardize(array.astype(np.float32))
    return torch.from_numpy(np.nan_to_num(z, nan=0.0))


def _crop(array: np.ndarray, size: int | None) -> np.ndarray:
    if size is None:
        return array
    height, width = array.shape[-2:]
    if height < size or width < size:
        raise ValueError(f"sample of {height}x{width} pixels is smaller than the crop size {size}")
    top, left = (height - size) // 2, (width - size) // 2
    return array[..., top : top + size, left : left + size]


class FolderDataset(Dataset):
    """Samples laid out like ``tests/data/terramesh_examples``: ``<root>/<MODALITY>/<sample>.tif``.

    Args:
        root: the folder holding one sub-folder per modality.
        modalities: modality folder names to read (registry names, e.g. ``["S1GRD", "LULC"]``).
        crop: centre-crop every sample to this square size (a multiple of the patch size), or None.
    """

    def __init__(self, root: str | os.PathLike, modalities: Sequence[str], crop: int | None = None) -> None:
        self.root = Path(root)
        self.modalities = [mods.resolve(m).name for m in modalities]
        self.crop = crop
        per_mod = {}
        for mod in self.modalities:
            folder = self.root / mod
            if not folder.is_dir():
                raise FileNotFoundError(f"{mod}: folder {folder} not found (expected <root>/<MODALITY>/*.tif)")
            per_mod[mod] = {p.stem for p in folder.glob("*.tif")}
        common = set.intersection(*per_mod.values())
        if not common:
            raise ValueError(f"no sample name is present in every modality folder under {self.root}")
        self.samples = sorted(common)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from terratim.data.geotiff import read_geotiff

        name = self.samples[index]
        out = {}
        for mod in self.modalities:
            bands = mods.MODALITIES[mod].num_bands
            raster = read_geotiff(self.root / mod / f"{name}.tif", expected_bands=bands, what=mod)
            out[mod] = to_model_units(mod, _crop(raster.data, self.crop))
        return out


class SimulatedDataset(Dataset):
    """Samples ``0 .. length-1`` of the simulated world ``seed`` (see :mod:`terratim.data.sim`).

    Args:
        seed: dataset seed.
        length: number of samples.
        size: chip side in pixels.
        modalities: which simulated modalities (and ``"WATER"``, the label) to return.
        cache: keep generated samples in memory (for small datasets reused over many epochs).
    """

    def __init__(
        self,
        seed: int,
        length: int,
        size: int = 224,
        modalities: Sequence[str] = sim.SIM_MODALITIES,
        cache: bool = True,
    ) -> None:
        unknown = [m for m in modalities if m not in (*sim.SIM_MODALITIES, sim.LABEL)]
        if unknown:
            raise ValueError(f"the simulator has no modality {unknown}; it makes {[*sim.SIM_MODALITIES, sim.LABEL]}")
        self.seed, self.length, self.modalities = seed, length, list(modalities)
        self.config = sim.SimConfig(size=size)
        self._cache: dict[int, dict[str, torch.Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        chip = sim.sample(self.seed, index, self.config)
        out = {}
        for mod in self.modalities:
            if mod == sim.LABEL:
                out[mod] = torch.from_numpy(chip[mod][0].astype(np.int64))
            else:
                out[mod] = to_model_units(mod, chip[mod])
        if self._cache is not None:
            self._cache[index] = out
        return out


@dataclass(frozen=True)
class SimulatedData:
    """Which simulated samples to train on.

    Attributes:
        count: number of samples (indices ``0 .. count-1``).
        seed: the simulated world's seed.
        size: chip side in pixels.
    """

    count: int
    seed: int = 0
    size: int = 224


class PretrainingDataModule(pl.LightningDataModule):
    """Shuffled batches of ``{modality: tensor}`` in model units, from the simulator or a folder.

    Args:
        simulated: samples of the simulated world; give this or ``root``.
        root: a folder ``<root>/<MODALITY>/<sample>.tif``; give this or ``simulated``.
        crop: centre-crop folder samples to this square size (pixels), or None.
        batch_size: samples per batch (the last incomplete batch is dropped).
        num_workers: DataLoader worker processes.
        seed: seed of the shuffling generator.
        modalities: modalities to load; default those the model trains on (its ``data_modalities``).
    """

    def __init__(
        self,
        simulated: SimulatedData | None = None,
        root: str | None = None,
        crop: int | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        modalities: list[str] | None = None,
    ) -> None:
        super().__init__()
        if (simulated is None) == (root is None):
            raise ValueError("the data section needs exactly one of 'simulated: {count, seed, size}' or 'root: DIR'")
        self.simulated, self.root, self.crop = simulated, root, crop
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.modalities = modalities
        self.dataset: Dataset | None = None

    def dataset_for(self, modalities: Sequence[str]) -> Dataset:
        """The samples this module describes, returning ``modalities``."""
        if self.simulated is not None:
            return SimulatedDataset(self.simulated.seed, self.simulated.count, self.simulated.size, modalities)
        assert self.root is not None  # checked in __init__
        return FolderDataset(self.root, modalities, crop=self.crop)

    def setup(self, stage: str) -> None:
        if self.dataset is None:
            self.dataset = self.dataset_for(self.modalities or self._model_modalities())

    def _model_modalities(self) -> list[str]:
        """The modalities the model being trained asks for (its ``data_modalities``)."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        modalities = getattr(module, "data_modalities", None)
        if not modalities:
            raise ValueError("data.modalities is not set and the model does not name its data_modalities")
        return list(modalities)

    def train_dataloader(self) -> DataLoader:
        if self.dataset is None:
            raise RuntimeError("PretrainingDataModule.setup() has not run")
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),
        )
