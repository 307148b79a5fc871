"""terratim: TerraMind and Thinking-in-Modalities for Earth observation."""

from terratim.modalities import MODALITIES, resolve
from terratim.registry import build, build_from_file, list_models

__version__ = "0.1.0"
__all__ = ["MODALITIES", "build", "build_from_file", "list_models", "resolve", "__version__"]
