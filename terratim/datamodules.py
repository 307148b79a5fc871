"""The data modules under the module path TerraTorch configs use (``terratorch.datamodules``)."""

from terratim.data.datamodules import GenericMultiModalDataModule
from terratim.data.sen1floods11 import Sen1Floods11DataModule

__all__ = ["GenericMultiModalDataModule", "Sen1Floods11DataModule"]
