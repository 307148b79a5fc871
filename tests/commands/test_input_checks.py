"""One rule for inputs in every command that reads rasters: an input with no valid pixel is refused with the same
message, and inputs that are not on one grid (CRS, transform, size) are refused by the same check."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.crs import CRS
from rasterio.transform import from_origin

from terratim.cli import main
from terratim.data.geotiff import write_geotiff
from terratim.sim_models import tokenizer_path

UTM = {"crs": CRS.from_epsg(32736), "transform": from_origin(500000, 9000000, 10, 10)}
NO_VALID_PIXEL = r"input .*{file} has no valid pixel: every pixel is nodata"
SIM = ["--model", "terramind_sim_micro_generate", "--pretrained"]


@pytest.fixture(autouse=True)
def errors_raise(monkeypatch):
    """User errors propagate as exceptions (the CLI otherwise prints one line and returns 2); no hub."""
    monkeypatch.setenv("TERRATIM_DEBUG", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _write(path, bands: int, size: int, fill: float = np.nan, like=UTM, valid: bool = False):
    data = np.full((bands, size, size), fill, np.float32)
    if valid:
        data[:] = 0.0
    return write_geotiff(path, data, like=like)


@pytest.mark.parametrize("size", [64, 512])  # one forward pass, and the tiled scene engine
def test_generate_refuses_an_all_nan_input_at_any_size(tmp_path, size):
    s1 = _write(tmp_path / "s1.tif", 2, size)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=NO_VALID_PIXEL.format(file="s1.tif")) as info:
        main(["generate", *SIM, "--input", f"S1GRD={s1}", "--output", "LULC", "--out", str(out)])
    assert str(info.value).startswith("S1GRD input")
    assert not out.exists()


def test_imagine_and_embed_refuse_an_all_nan_input(tmp_path):
    s1 = _write(tmp_path / "s1.tif", 2, 64)
    with pytest.raises(ValueError, match=NO_VALID_PIXEL.format(file="s1.tif")):
        main(["imagine", "--model", "terramind_sim_micro_tim", "--pretrained", "--input", f"S1GRD={s1}",
              "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=NO_VALID_PIXEL.format(file="s1.tif")):
        main(["embed", "--model", "terramind_sim_micro", "--pretrained", "--input", f"S1GRD={s1}"])


@pytest.mark.parametrize("modality", ["LULC", "DEM"])
def test_reconstruct_refuses_an_all_nan_input(tmp_path, modality, capsys):
    source = _write(tmp_path / "empty.tif", 1, 64)
    argv = ["reconstruct", "--modality", modality, "--input", str(source), "--out", str(tmp_path / "out"),
            "--ckpt", str(tokenizer_path(modality)), "--steps", "1"]
    with pytest.raises(ValueError, match=f"{modality} " + NO_VALID_PIXEL.format(file="empty.tif")):
        main(argv)
    assert "nan" not in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_reconstruct_keeps_masking_a_partly_nodata_input(tmp_path, capsys):
    data = np.full((1, 64, 64), 500.0, np.float32)
    data[:, :32] = np.nan  # top half nodata
    source = write_geotiff(tmp_path / "half.tif", data, like=UTM)
    assert main(["reconstruct", "--modality", "DEM", "--input", str(source), "--out", str(tmp_path / "out"),
                 "--ckpt", str(tokenizer_path("DEM")), "--steps", "1"]) == 0
    assert "mean absolute error nan" not in capsys.readouterr().out
    from terratim.data.geotiff import read_geotiff

    recon = read_geotiff(tmp_path / "out" / "half_DEM_reconstruction.tif").data
    assert np.isnan(recon[:, :32]).all() and np.isfinite(recon[:, 32:]).all()


def _misregistered(tmp_path):
    """S2L2A in UTM 36S and S1GRD in geographic coordinates, same pixel size."""
    s2 = _write(tmp_path / "s2_utm.tif", 12, 64, valid=True)
    s1 = _write(tmp_path / "s1_wgs84.tif", 2, 64, valid=True,
                like={"crs": CRS.from_epsg(4326), "transform": from_origin(33.0, -9.0, 1e-4, 1e-4)})
    return s2, s1


MISREGISTERED = r"not co-registered: S1GRD \(.*s1_wgs84\.tif\) and S2L2A \(.*s2_utm\.tif\) differ in CRS EPSG:4326"


def test_embed_and_imagine_refuse_inputs_on_different_grids(tmp_path):
    s2, s1 = _misregistered(tmp_path)
    with pytest.raises(ValueError, match=MISREGISTERED):
        main(["embed", "--input", f"S2L2A={s2}", "--input", f"S1GRD={s1}", "--repeat", "1"])
    with pytest.raises(ValueError, match=MISREGISTERED):
        main(["imagine", "--input", f"S2L2A={s2}", "--input", f"S1GRD={s1}", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_generate_refuses_inputs_on_different_grids(tmp_path):
    s2, s1 = _misregistered(tmp_path)
    with pytest.raises(ValueError, match=MISREGISTERED):
        main(["generate", "--input", f"S2L2A={s2}", "--input", f"S1GRD={s1}", "--output", "LULC",
              "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
