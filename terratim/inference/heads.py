"""How the blended model output becomes pixels on disk: class maps, continuous values, embeddings.

A head owns a contiguous slice of the model's output channels. The engine blends every channel (logits are
averaged, as in the reference, and argmaxed only afterwards) and each head turns its slice into the bands of
one output file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terratim.data.geotiff import CLASS_NODATA, color_table
from terratim.inference.scene import OutputBand


@dataclass
class Head:
    """One output file made from ``channels`` consecutive output channels.

    Attributes:
        path: output file.
        channels: how many model output channels this head reads.
        kind: ``"classes"`` (logits -> argmax, uint8 with a colour table) or ``"values"`` (float32 as given:
            regression, continuous modalities in physical units, per-pixel embeddings).
        names: class names (classes) or band names (values).
        colors: ``#rrggbb`` per class (classes only).
        confidence: classes only: add a second band with the softmax probability of the chosen class, in
            percent (uint8, 255 = nodata).
    """

    path: Path
    channels: int
    kind: str = "values"
    names: tuple[str, ...] = ()
    colors: tuple[str, ...] = ()
    confidence: bool = False
    cog: bool = False

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.kind not in ("classes", "values"):
            raise ValueError(f"unknown head kind {self.kind!r}; use 'classes' or 'values'")
        if self.kind == "classes" and self.channels > CLASS_NODATA:
            raise ValueError(f"{self.channels} classes do not fit a uint8 class map (at most {CLASS_NODATA})")

    def output_band(self) -> OutputBand:
        """The file layout of this head."""
        if self.kind == "classes":
            descriptions = ("class",) + (("confidence_percent",) if self.confidence else ())
            tags = {f"CLASS_{i}": name for i, name in enumerate(self.names)}
            colormap = color_table(self.colors) if self.colors else None
            return OutputBand(
                self.path, len(descriptions), "uint8", CLASS_NODATA, colormap, descriptions, self.cog, tags
            )
        names = self.names or tuple(f"band_{i + 1}" for i in range(self.channels))
        return OutputBand(self.path, self.channels, "float32", float("nan"), None, names, self.cog)

    def finalise(self, blended: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(channels, rows, W) blended output + (rows, W) "has data" mask -> pixels to write."""
        if self.kind == "values":
            out = blended.astype(np.float32)
            out[:, ~mask] = np.nan
            return out
        classes = blended.argmax(axis=0).astype(np.uint8)  # (rows, W)
        classes[~mask] = CLASS_NODATA
        bands = [classes]
        if self.confidence:
            shifted = np.exp(blended - blended.max(axis=0, keepdims=True))
            prob = shifted.max(axis=0) / shifted.sum(axis=0)
            percent = np.rint(prob * 100).astype(np.uint8)
            percent[~mask] = CLASS_NODATA
            bands.append(percent)
        return np.stack(bands)
