"""Lightning data modules, under the module path TerraTorch configs use (``terratorch.datamodules.X`` becomes
``terratim.datamodules.X``; configs may also give the short class name).

* :mod:`~terratim.datamodules.multimodal` - :class:`GenericMultiModalDataModule`: one GeoTIFF folder per modality
  and split, labels as rasters or a scene-label csv;
* :mod:`~terratim.datamodules.sen1floods11` - :class:`Sen1Floods11DataModule`: Sen1Floods11 in its official layout;
* :mod:`~terratim.datamodules.single_raster` - :class:`GenericNonGeoSegmentationDataModule`,
  :class:`GenericNonGeoPixelwiseRegressionDataModule`, :class:`GenericNonGeoClassificationDataModule`: one raster
  per sample holding every band (and date);
* :mod:`~terratim.datamodules.multi_temporal_crop` - :class:`MultiTemporalCropClassificationDataModule`: the HLS
  multi-temporal crop dataset in its published layout.
"""

from terratim.datamodules.multi_temporal_crop import MultiTemporalCropClassificationDataModule
from terratim.datamodules.multimodal import GenericMultiModalDataModule
from terratim.datamodules.sen1floods11 import Sen1Floods11DataModule
from terratim.datamodules.single_raster import (
    GenericNonGeoClassificationDataModule,
    GenericNonGeoPixelwiseRegressionDataModule,
    GenericNonGeoSegmentationDataModule,
)

__all__ = [
    "GenericMultiModalDataModule",
    "GenericNonGeoClassificationDataModule",
    "GenericNonGeoPixelwiseRegressionDataModule",
    "GenericNonGeoSegmentationDataModule",
    "MultiTemporalCropClassificationDataModule",
    "Sen1Floods11DataModule",
]
