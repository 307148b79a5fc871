"""Lightning data modules, under the module path TerraTorch configs use (``terratorch.datamodules.X`` becomes
``terratim.datamodules.X``).

* :mod:`~terratim.datamodules.multimodal` - :class:`GenericMultiModalDataModule`: one GeoTIFF folder per modality
  and split, labels as rasters or a scene-label csv;
* :mod:`~terratim.datamodules.sen1floods11` - :class:`Sen1Floods11DataModule`: Sen1Floods11 in its official layout.
"""

from terratim.datamodules.multimodal import GenericMultiModalDataModule
from terratim.datamodules.sen1floods11 import Sen1Floods11DataModule

__all__ = ["GenericMultiModalDataModule", "Sen1Floods11DataModule"]
