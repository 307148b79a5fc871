"""Fine-tuning: necks, decoders, heads, losses, Lightning tasks (segmentation, regression, classification)."""

from terratim.tasks.classification import ClassificationTask
from terratim.tasks.factory import EncoderDecoderModel, build_model
from terratim.tasks.regression import PixelwiseRegressionTask
from terratim.tasks.segmentation import SemanticSegmentationTask
from terratim.tasks.writer import GeoTiffPredictionWriter

__all__ = [
    "ClassificationTask",
    "EncoderDecoderModel",
    "GeoTiffPredictionWriter",
    "PixelwiseRegressionTask",
    "SemanticSegmentationTask",
    "build_model",
]
