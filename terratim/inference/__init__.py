"""Streaming tiled inference over whole scenes.

* :mod:`~terratim.inference.tiling` - chip grid, reference blend weights, blend accumulator (pure arrays);
* :mod:`~terratim.inference.scene` - windowed GeoTIFF/COG reading and block-row writing, resume state;
* :mod:`~terratim.inference.heads` - class maps, values and embeddings as output files;
* :mod:`~terratim.inference.engine` - the loop (:func:`infer_scene`);
* :mod:`~terratim.inference.distributed` - one scene over several ranks, one output;
* :mod:`~terratim.inference.adapters` - task, generation and backbone models as ``predict`` callables;
* :mod:`~terratim.inference.embeddings` - per-chip embeddings to GeoParquet.
"""

from terratim.inference.engine import SceneEngine, TilingConfig, infer_scene
from terratim.inference.heads import Head

__all__ = ["Head", "SceneEngine", "TilingConfig", "infer_scene"]
