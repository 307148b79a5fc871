"""Windowed reading checks (alignment, bands, corrupt files) and the block-row writer."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from terratim.inference.scene import BLOCK, OutputBand, SceneInfo, SceneReader, SceneWriter, check_output

from rasters import TRANSFORM, write_tif


def test_reader_reads_windows_with_nodata_as_nan(tmp_path):
    data = np.arange(2 * 40 * 30, dtype=np.float32).reshape(2, 40, 30)
    data[:, 5, 7] = -1.0
    path = write_tif(tmp_path / "a.tif", data, nodata=-1.0, tiled=True)
    with SceneReader({"S1GRD": path}, {"S1GRD": 2}) as reader:
        assert (reader.info.height, reader.info.width) == (40, 30)
        rows = reader.read_rows(-3, 10)["S1GRD"]  # clipped to the scene
    assert rows.shape == (2, 10, 30) and np.isnan(rows[:, 5, 7]).all()
    assert np.array_equal(rows[:, 6], data[:, 6])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crs": CRS.from_epsg(32633)}, "CRS"),
        ({"transform": from_origin(500010.0, 4650000.0, 10.0, 10.0)}, "transform"),
        ({"shape": (1, 41, 30)}, "size 41x30"),
    ],
)
def test_misaligned_inputs_name_both_files(tmp_path, kwargs, message):
    a = write_tif(tmp_path / "s2.tif", np.zeros((1, 40, 30), np.float32), tiled=True)
    shape = kwargs.pop("shape", (1, 40, 30))
    b = write_tif(tmp_path / "s1.tif", np.zeros(shape, np.float32), **kwargs, tiled=True)
    with pytest.raises(ValueError, match=rf"not co-registered: S1GRD \(.*s1.tif\) and S2L2A \(.*s2.tif\).*{message}"):
        SceneReader({"S2L2A": a, "S1GRD": b})


def test_wrong_band_count_missing_and_corrupt_files(tmp_path):
    path = write_tif(tmp_path / "a.tif", np.zeros((3, 40, 30), np.float32), tiled=True)
    with pytest.raises(ValueError, match=r"S1GRD input .*a.tif has 3 bands, expected 2"):
        SceneReader({"S1GRD": path}, {"S1GRD": 2})
    with pytest.raises(FileNotFoundError, match="S1GRD input not found"):
        SceneReader({"S1GRD": tmp_path / "missing.tif"})
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"S1GRD input .*junk.tif is not a readable GeoTIFF"):
        SceneReader({"S1GRD": junk})


def test_truncated_file_is_caught_when_opened(tmp_path):
    data = np.random.default_rng(0).standard_normal((1, 512, 512)).astype(np.float32)
    path = write_tif(tmp_path / "cut.tif", data, tiled=True)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(ValueError, match=r"cut.tif (is corrupt or truncated|is not a readable)"):
        SceneReader({"S2L2A": path})


def test_writer_writes_whole_block_rows_and_a_rank_share(tmp_path):
    info = SceneInfo(600, 50, CRS.from_epsg(32632), TRANSFORM)
    spec = OutputBand(tmp_path / "o.tif", 1, "float32", float("nan"))
    writer = SceneWriter(spec, info, {"k": 1}, rows=(256, 600), target=tmp_path / "part.tif")
    data = np.arange(600 * 50, dtype=np.float32).reshape(1, 600, 50)
    writer.write(0, data[:, :300])  # rows before the share are dropped
    assert writer.rows_done == 256  # 256..300 wait in the buffer for a whole block row
    writer.write(300, data[:, 300:])
    assert writer.complete
    with rasterio.open(tmp_path / "part.tif") as src:
        assert src.height == 344 and src.transform.f == TRANSFORM.f - 256 * 10.0
        assert np.array_equal(src.read(), data[:, 256:])
        assert src.block_shapes[0] == (BLOCK, BLOCK)


def test_check_output_refuses_existing_files(tmp_path):
    out = tmp_path / "pred.tif"
    out.write_bytes(b"x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        check_output(out, overwrite=False, resume=False)
    check_output(out, overwrite=True, resume=False)


@pytest.mark.parametrize("nodata", [None, float("nan"), -9999.0])
def test_an_input_with_no_valid_pixel_is_refused(tmp_path, nodata):
    fill = np.nan if nodata is None or np.isnan(nodata) else nodata
    empty = write_tif(tmp_path / "empty.tif", np.full((2, 300, 200), fill, np.float32), nodata=nodata, tiled=True)
    other = write_tif(tmp_path / "s2.tif", np.ones((12, 300, 200), np.float32), tiled=True)
    message = r"^S1GRD input .*empty.tif has no valid pixel: every pixel is nodata or NaN in every band"
    with pytest.raises(ValueError, match=message):
        SceneReader({"S2L2A": other, "S1GRD": empty})


def test_one_valid_pixel_or_one_valid_band_is_enough(tmp_path, monkeypatch):
    data = np.full((2, 300, 200), np.nan, np.float32)
    data[1, 299, 0] = 3.0  # one pixel of the second band, in the last block row
    path = write_tif(tmp_path / "sparse.tif", data, nodata=float("nan"), tiled=True)
    with SceneReader({"S1GRD": path}) as reader:
        assert np.isnan(reader.read_rows(0, 299)["S1GRD"]).all()
    filled = write_tif(tmp_path / "full.tif", np.ones((2, 300, 200), np.float32), tiled=True)
    reads = []
    original = rasterio.DatasetReader.read

    def counting(self, *args, **kwargs):
        reads.append(kwargs.get("window"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.DatasetReader, "read", counting)
    SceneReader({"S1GRD": filled}).close()
    assert len(reads) == 3  # the first and last pixel (truncation check), then one block: valid, stop


def test_ctrl_c_while_a_block_row_is_written_keeps_rows_and_record_together(tmp_path, monkeypatch):
    import json
    import os
    import signal

    from terratim.inference.scene import progress_path

    info = SceneInfo(300, 40, CRS.from_epsg(32632), TRANSFORM)
    spec = OutputBand(tmp_path / "o.tif", 1, "float32", float("nan"))
    writer = SceneWriter(spec, info, {"k": 1})
    save = SceneWriter._save_progress

    def interrupted_save(self):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives after the rows, before their record
        save(self)

    monkeypatch.setattr(SceneWriter, "_save_progress", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        writer.write(0, np.ones((1, 256, 40), np.float32))
    assert json.loads(progress_path(spec.path).read_text())["rows_done"] == 256  # recorded, then interrupted
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
