"""Shared GeoTIFF checks: co-registration, inputs with no valid pixel, output paths that can be written."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.transform import from_origin

from terratim import modalities as mods
from terratim.data.geotiff import (
    Raster,
    check_same_grid,
    check_writable,
    raster_tensors,
    read_geotiff,
    read_modality_rasters,
    require_valid_pixels,
    spread_order,
    write_geotiff,
)

UTM = {"crs": CRS.from_epsg(32736), "transform": from_origin(500000, 9000000, 10, 10), "height": 32, "width": 32}


def _raster(path, data, **changes) -> Raster:
    return Raster(data, {**UTM, **changes}, path)


def test_same_grid_passes_and_returns_it(tmp_path):
    a = _raster(tmp_path / "a.tif", np.zeros((2, 32, 32), np.float32))
    b = _raster(tmp_path / "b.tif", np.zeros((1, 32, 32), np.float32))
    grid = check_same_grid({"S2L2A": a, "S1GRD": b})
    assert (grid.height, grid.width, grid.crs) == (32, 32, UTM["crs"])


@pytest.mark.parametrize(
    ("change", "phrase"),
    [({"crs": CRS.from_epsg(4326)}, "CRS EPSG:4326 vs EPSG:32736"),
     ({"transform": from_origin(500100, 9000000, 10, 10)}, "transform"),
     ({"height": 31}, "size 31x32 vs 32x32")],
)
def test_grid_mismatch_names_both_files_the_modality_and_what_differs(tmp_path, change, phrase):
    a = _raster(tmp_path / "s2.tif", np.zeros((1, 32, 32), np.float32))
    b = _raster(tmp_path / "s1.tif", np.zeros((1, 32, 32), np.float32), **change)
    with pytest.raises(ValueError, match="not co-registered") as info:
        check_same_grid({"S2L2A": a, "S1GRD": b})
    message = str(info.value)
    assert "S1GRD" in message and "S2L2A" in message and "s1.tif" in message and "s2.tif" in message
    assert phrase in message


def test_same_grid_accepts_profiles_and_open_datasets(tmp_path):
    a = write_geotiff(tmp_path / "a.tif", np.zeros((1, 32, 32), np.float32), like=UTM)
    b = write_geotiff(tmp_path / "b.tif", np.zeros((1, 32, 32), np.float32),
                      like={**UTM, "crs": CRS.from_epsg(4326)})
    with rasterio.open(a) as ds_a, rasterio.open(b) as ds_b:
        check_same_grid({"S2L2A": ds_a, "DEM": (a, dict(ds_a.profile))})
        with pytest.raises(ValueError, match=r"DEM \(.*b\.tif\) and S2L2A"):
            check_same_grid({"S2L2A": ds_a, "DEM": ds_b})


def test_no_valid_pixel_is_refused_from_memory_and_from_a_dataset(tmp_path):
    nan = np.full((2, 32, 32), np.nan, np.float32)
    path = write_geotiff(tmp_path / "empty.tif", nan, like=UTM)
    with pytest.raises(ValueError, match=r"S1GRD input .*empty\.tif has no valid pixel"):
        require_valid_pixels(read_geotiff(path), "S1GRD")
    with rasterio.open(path) as ds, pytest.raises(ValueError, match=r"S1GRD input .*empty\.tif has no valid pixel"):
        require_valid_pixels(ds, "S1GRD")
    nodata = write_geotiff(tmp_path / "nodata.tif", np.full((1, 32, 32), -9999, np.float32), like=UTM,
                           nodata=-9999)
    with pytest.raises(ValueError, match="no valid pixel"):
        require_valid_pixels(read_geotiff(nodata), "DEM")


@pytest.mark.parametrize("n", [0, 1, 2, 7, 64, 1000])
def test_spread_order_visits_every_block_once_middle_first(n):
    order = spread_order(n)
    assert sorted(order) == list(range(n))
    if n > 2:
        assert order[0] == n // 2 and order[1] == 0


def test_partly_nodata_input_passes(tmp_path):
    data = np.full((2, 300, 300), np.nan, np.float32)
    data[1, 299, 299] = 1.0  # one valid value, in the last block of a tiled file
    path = write_geotiff(tmp_path / "partly.tif", data, like={**UTM, "height": 300, "width": 300})
    require_valid_pixels(read_geotiff(path), "S1GRD")
    with rasterio.open(path) as ds:
        require_valid_pixels(ds, "S1GRD")


def test_output_check_refuses_folders_nobody_can_write(tmp_path):
    """/proc refuses new files even to root, so this holds whoever runs the tests (chmod does not stop root)."""
    with pytest.raises(PermissionError, match=r"cannot write /proc/p\.safetensors: folder /proc is not writable"):
        check_writable("/proc/p.safetensors", overwrite=False)
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    with pytest.raises(NotADirectoryError, match=r"file\.txt is a file, not a folder"):
        check_writable(blocker / "sub" / "p.safetensors", overwrite=False)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_writable(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # no probe file left behind


def test_output_check_creates_the_folder_and_leaves_only_it(tmp_path):
    target = tmp_path / "a" / "b" / "p.safetensors"
    assert check_writable(target, overwrite=False) == target
    assert target.parent.is_dir() and list(target.parent.iterdir()) == []
    target.write_bytes(b"x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        check_writable(target, overwrite=False)
    assert check_writable(target, overwrite=True) == target


def test_modality_rasters_are_checked_and_image_modalities_standardized(tmp_path):
    s1 = np.stack([np.full((32, 32), -12.0), np.full((32, 32), -20.0)]).astype(np.float32)
    lulc = np.arange(32 * 32, dtype=np.uint8).reshape(1, 32, 32) % 10
    files = {"S1GRD": write_geotiff(tmp_path / "s1.tif", s1, like=UTM),
             "LULC": write_geotiff(tmp_path / "lulc.tif", lulc, like=UTM)}
    tensors = raster_tensors(read_modality_rasters(files))
    assert list(tensors) == ["S1GRD", "LULC"]
    s1grd = mods.resolve("S1GRD")
    mean = torch.tensor(s1grd.mean, dtype=torch.float64)[:, None, None]  # (2, 1, 1)
    std = torch.tensor(s1grd.std, dtype=torch.float64)[:, None, None]
    expected = (torch.from_numpy(s1).double() - mean) / std  # float64 reference
    assert tensors["S1GRD"].shape == (1, 2, 32, 32)
    torch.testing.assert_close(tensors["S1GRD"][0].double(), expected, rtol=1e-6, atol=1e-6)  # float32 rounding
    assert torch.equal(tensors["LULC"], torch.from_numpy(lulc.astype(np.float32))[None])  # class ids as read


def test_modality_rasters_refuse_wrong_band_count_and_other_grids(tmp_path):
    s1 = write_geotiff(tmp_path / "s1.tif", np.zeros((2, 32, 32), np.float32), like=UTM)
    three = write_geotiff(tmp_path / "three.tif", np.zeros((3, 32, 32), np.float32), like=UTM)
    with pytest.raises(ValueError, match=r"S1GRD file .*three\.tif has 3 bands, expected 2"):
        read_modality_rasters({"S1GRD": three})
    dem = write_geotiff(tmp_path / "dem.tif", np.zeros((1, 32, 32), np.float32),
                        like={**UTM, "crs": CRS.from_epsg(4326)})
    with pytest.raises(ValueError, match="not co-registered"):
        read_modality_rasters({"S1GRD": s1, "DEM": dem})
