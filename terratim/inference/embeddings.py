"""Per-chip embeddings of a whole scene to GeoParquet: one row per chip with its footprint polygon.

Each chip (the same grid as tiled inference) is embedded to one vector (the mean of the backbone's last-layer
patch tokens by default). Chips with no data are left out. The file follows GeoParquet 1.0: a WKB ``geometry``
column in the scene's CRS and the ``geo`` metadata key. Writing needs ``pyarrow`` (``pip install pyarrow``);
rows are written batch by batch, so memory stays flat.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from terratim.inference.engine import DEFAULT_TILING, TilingConfig
from terratim.inference.scene import SceneReader, block_cache, check_output
from terratim.inference.tiling import panel_ranges, reflect_pad_strip
from terratim.model.backbone import TerraMindBackbone

Embed = Callable[[dict[str, torch.Tensor]], torch.Tensor]  # {name: (B, C, h, w)} -> (B, D)


def polygon_wkb(x0: float, y0: float, x1: float, y1: float) -> bytes:
    """Little-endian WKB of the rectangle (x0, y0)-(x1, y1) as a closed 5-point polygon."""
    ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    return struct.pack("<BIII", 1, 3, 1, len(ring)) + b"".join(struct.pack("<dd", x, y) for x, y in ring)


def chip_footprint(transform, row0: int, col0: int, row1: int, col1: int) -> tuple[float, float, float, float]:
    """Map bounds (minx, miny, maxx, maxy) of pixel rows ``row0..row1`` and columns ``col0..col1``."""
    xs, ys = zip(*(transform @ (c, r) for r, c in ((row0, col0), (row0, col1), (row1, col0), (row1, col1))))
    return min(xs), min(ys), max(xs), max(ys)


def geo_metadata(crs) -> dict:
    """The GeoParquet 1.0 ``geo`` metadata for one WKB polygon column (no bbox: rows are streamed)."""
    column = {"encoding": "WKB", "geometry_types": ["Polygon"]}
    if crs is not None:
        column["crs"] = crs.to_dict(projjson=True)
    return {"version": "1.0.0", "primary_column": "geometry", "columns": {"geometry": column}}


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError("writing GeoParquet needs pyarrow: pip install pyarrow") from err
    return pa, pq


def mean_token_embedder(backbone: TerraMindBackbone) -> Embed:
    """Chip embedding = mean of the last-layer tokens of a TerraMind backbone (inputs in raw units)."""
    from terratim import modalities as mods

    records = {n: mods.resolve(n) for n in backbone.inputs}

    def embed(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = {n: records[n].standardize(x) for n, x in batch.items()}
        return backbone(batch)[-1].mean(dim=1)  # (B, D)

    return embed


def export_chip_embeddings(
    embed: Embed,
    inputs: dict[str, str | os.PathLike],
    out: str | os.PathLike,
    tiling: TilingConfig = DEFAULT_TILING,
    *,
    bands: dict[str, int] | None = None,
    device: str | torch.device = "cpu",
    fill: dict | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Embed every chip of a scene and write a GeoParquet file.

    Columns: ``chip_row``, ``chip_col`` (grid indices), ``row_off``, ``col_off``, ``height``, ``width`` (the
    chip's pixel window, clipped to the scene), ``embedding`` (list of float32) and ``geometry`` (WKB polygon of
    the window, scene CRS). ``fill`` replaces nodata (NaN) input pixels per modality (default 0). Memory
    depends on ``tiling.panel``, not on the scene.
    """
    pa, pq = _pyarrow()
    out = Path(out)
    check_output(out, overwrite, resume=False)
    tmp, written = out.with_name(out.name + ".partial"), 0
    try:
        with SceneReader(inputs, bands) as reader, block_cache(reader, 0, tiling.panel):
            schema = _schema(pa, reader.info.crs)
            with pq.ParquetWriter(tmp, schema) as writer:
                for rows in iter_chip_embeddings(embed, reader, tiling, device, fill, progress):
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                    written += len(rows)
    except BaseException:  # also Ctrl-C: a per-chip export does not resume, so leave no partial file behind
        tmp.unlink(missing_ok=True)
        raise
    if not written:
        tmp.unlink()
        raise ValueError(f"every chip of {[str(p) for p in inputs.values()]} is nodata; nothing to embed")
    os.replace(tmp, out)
    return out


def iter_chip_embeddings(
    embed: Embed,
    reader: SceneReader,
    tiling: TilingConfig = DEFAULT_TILING,
    device: str | torch.device = "cpu",
    fill: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[list[dict]]:
    """Table rows (see :func:`export_chip_embeddings`), one batch of chips at a time, panel by panel."""
    grid = tiling.grid(reader.info.height, reader.info.width)
    done = 0
    for col0, col1 in panel_ranges(reader.info.width, tiling.panel):  # each chip column in the panel of its x
        cols = [(c, x) for c, x in enumerate(grid.col_offsets) if col0 <= x < col1]
        for r in range(len(grid.row_offsets)):
            yield from _embed_chip_row(embed, reader, grid, r, cols, tiling.batch_size, device, fill or {})
            done += len(cols)
            if progress is not None:
                progress(done, len(grid))


def _embed_chip_row(
    embed: Embed, reader: SceneReader, grid, r: int, cols: list[tuple[int, int]], batch_size: int, device, fill: dict
) -> Iterator[list[dict]]:
    """Rows of the table for the chips of chip row ``r`` in columns ``cols``, one batch at a time."""
    if not cols:
        return
    info, d, size = reader.info, grid.delta, grid.chip
    top, left, right = grid.row_offsets[r] - d, cols[0][1] - d, cols[-1][1] - d + size
    data = reader.read_rows(top, top + size, left, right)
    pads = (max(0, -top), max(0, top + size - info.height), max(0, -left), max(0, right - info.width))
    strips = {n: reflect_pad_strip(s, *pads) for n, s in data.items()}
    valid = np.logical_or.reduce([~np.isnan(s).all(0) for s in strips.values()])
    x0 = cols[0][1]  # strip column 0 = scene column x0 - d; a chip at x starts at strip column x - x0
    chips = [(c, x - x0) for c, x in cols if valid[d : size - d, x - x0 + d : x - x0 + size - d].any()]
    for start in range(0, len(chips), batch_size):
        chunk = chips[start : start + batch_size]
        tensors = {}
        for n, s in strips.items():
            value = np.asarray(fill.get(n, 0.0), np.float32).reshape(-1, 1, 1)
            windows = [np.where(np.isnan(w := s[:, :, x : x + size]), value, w) for _, x in chunk]
            tensors[n] = torch.from_numpy(np.stack(windows).astype(np.float32)).to(device)
        with torch.inference_mode():
            vectors = embed(tensors).float().cpu().numpy()  # (B, D)
        yield [_row(r, c, x + left, top, size, info, v) for (c, x), v in zip(chunk, vectors)]


def _row(chip_row: int, chip_col: int, left: int, top: int, size: int, info, vector: np.ndarray) -> dict:
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + size, info.height), min(left + size, info.width)
    box = chip_footprint(info.transform, r0, c0, r1, c1)
    return {
        "chip_row": chip_row,
        "chip_col": chip_col,
        "row_off": r0,
        "col_off": c0,
        "height": r1 - r0,
        "width": c1 - c0,
        "embedding": vector.tolist(),
        "geometry": polygon_wkb(*box),
    }


def _schema(pa, crs):
    fields = [pa.field(n, pa.int32()) for n in ("chip_row", "chip_col", "row_off", "col_off", "height", "width")]
    fields += [pa.field("embedding", pa.list_(pa.float32())), pa.field("geometry", pa.binary())]
    return pa.schema(fields, metadata={"geo": json.dumps(geo_metadata(crs))})
