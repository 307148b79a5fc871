"""``terratim compute-statistics``: per-band means and stds against numpy in float64, nodata and NaN left out,
windowed reading, modality keys, dated stacks, and the YAML the data modules read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from terratim.cli import main
from terratim.commands.compute_statistics import BandStatistics, compute, windows

from rasters import write_tif


def _files(root: Path, seed: int = 0) -> list[np.ndarray]:
    """Three 3-band float32 files of different sizes: a large offset on band 2, nodata -9999 and NaN pixels."""
    rng = np.random.default_rng(seed)
    arrays = []
    for i, (h, w) in enumerate([(9, 13), (16, 5), (7, 7)]):
        a = rng.normal(0.0, 1.0, (3, h, w)).astype(np.float32)
        a[1] = rng.uniform(0, 3000, (h, w))
        a[2] = 1.0e4 + rng.normal(0, 0.01, (h, w))  # mean far from 0, tiny spread
        a[0, 0, :3] = -9999  # file nodata, band 0 only
        a[1, -1, -1] = np.nan
        write_tif(root / "data" / f"chip_{i}_merged.tif", a, nodata=-9999)
        arrays.append(a)
    write_tif(root / "data" / "chip_0.mask.tif", np.zeros((1, 9, 13), np.int16))  # not matched by the glob
    return arrays


def _numpy_stats(arrays: list[np.ndarray], nodata: float = -9999) -> tuple[np.ndarray, np.ndarray]:
    means, stds = [], []
    for band in range(arrays[0].shape[0]):
        values = np.concatenate([a[band].astype(np.float64).ravel() for a in arrays])
        values = values[np.isfinite(values) & (values != nodata)]
        means.append(values.mean())
        stds.append(values.std())
    return np.asarray(means), np.asarray(stds)


def test_matches_numpy_with_nodata_and_nan(tmp_path: Path, capsys):
    arrays = _files(tmp_path)
    assert main(["compute-statistics", str(tmp_path / "data"), "--glob", "*_merged.tif", "--window", "4"]) == 0
    out = capsys.readouterr().out
    stats = yaml.safe_load(out)
    mean, std = _numpy_stats(arrays)
    np.testing.assert_allclose(stats["means"], mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats["stds"], std, rtol=1e-9, atol=1e-12)
    assert stats["stds"][2] == pytest.approx(0.01, rel=0.2)  # the small spread survives the 1e4 offset
    pixels = sum(a.shape[1] * a.shape[2] for a in arrays)
    assert f"# 3 files; valid pixels per band: [{pixels - 9}, {pixels - 3}, {pixels}]" in out


def test_window_size_does_not_change_the_result(tmp_path: Path):
    _files(tmp_path)
    data = str(tmp_path / "data" / "*_merged.tif")
    small, large = compute([data], window=1)[0][None], compute([data], window=4096)[0][None]
    np.testing.assert_array_equal(small.count, large.count)
    np.testing.assert_allclose(small.mean, large.mean, rtol=1e-12)
    np.testing.assert_allclose(small.std, large.std, rtol=1e-9)


def test_windows_cover_each_pixel_once():
    seen = np.zeros((10, 7), dtype=int)
    for row, col, rows, cols in windows(10, 7, 3):
        seen[row : row + rows, col : col + cols] += 1
    assert (seen == 1).all()


def test_merge_is_stable_for_large_offsets():
    """Chan's update against a float64 reference where the naive sum of squares loses the variance."""
    rng = np.random.default_rng(1)
    values = 1.0e8 + rng.normal(0, 1.0, (1, 20000))
    merged = BandStatistics.empty(1)
    for chunk in np.array_split(values, 37, axis=1):
        merged = merged.merge(BandStatistics.of(chunk, np.ones_like(chunk, dtype=bool)))
    np.testing.assert_allclose(merged.mean, values.mean(axis=1), rtol=1e-15)
    np.testing.assert_allclose(merged.std, values.std(axis=1), rtol=1e-6)


def test_modality_keys_and_time_steps(tmp_path: Path, capsys):
    """NAME=PATH keys the output by canonical modality name; --time-steps pools each band over the dates."""
    rng = np.random.default_rng(2)
    stack = rng.uniform(0, 100, (6, 8, 8)).astype(np.float32)  # 3 dates x 2 bands, date by date
    stack[0] += 1000  # band 0 of date 0 only
    write_tif(tmp_path / "s1" / "a.tif", stack)
    assert main(["compute-statistics", f"s1grd={tmp_path / 's1'}", "--time-steps", "3"]) == 0
    stats = yaml.safe_load(capsys.readouterr().out)
    by_band = stack.astype(np.float64).reshape(3, 2, -1).transpose(1, 0, 2).reshape(2, -1)
    np.testing.assert_allclose(stats["means"]["S1GRD"], by_band.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats["stds"]["S1GRD"], by_band.std(axis=1), rtol=1e-9)
    assert main(["compute-statistics", str(tmp_path / "s1"), "--time-steps", "3", "--temporal-channel-major"]) == 0
    channel_major = yaml.safe_load(capsys.readouterr().out)
    np.testing.assert_allclose(channel_major["means"], stack.astype(np.float64).reshape(2, -1).mean(axis=1))


def test_output_file_feeds_a_data_module(tmp_path: Path, capsys):
    """The written YAML is what the single-raster data modules take as ``means``/``stds`` (a file path)."""
    from terratim.datamodules import GenericNonGeoSegmentationDataModule

    arrays = _files(tmp_path)
    out = tmp_path / "stats.yaml"
    args = ["compute-statistics", str(tmp_path / "data"), "--glob", "*_merged.tif", "--output", str(out)]
    assert main(args) == 0
    dm = GenericNonGeoSegmentationDataModule(2, 0, means=str(out), stds=str(out), num_classes=2)
    mean, std = _numpy_stats(arrays)
    np.testing.assert_allclose(dm.means, mean, rtol=1e-6)
    np.testing.assert_allclose(dm.stds, std, rtol=1e-6)
    capsys.readouterr()
    assert main(args, report_errors=True) == 2  # never overwrites
    assert capsys.readouterr().err.strip() == (f"terratim compute-statistics: error: {out} exists; pass --overwrite "
                                               "(overwrite=True) to replace it")


def test_bad_inputs_name_what_is_wrong(tmp_path: Path):
    empty = np.full((2, 4, 4), -9999, dtype=np.float32)
    empty[0] = 1.0
    write_tif(tmp_path / "nodata" / "a.tif", empty, nodata=-9999)
    with pytest.raises(ValueError, match=r"band\(s\) \[1\] \(0-based\) have no valid pixel in any of 1 files"):
        compute([str(tmp_path / "nodata")])
    write_tif(tmp_path / "mixed" / "a.tif", np.ones((2, 4, 4), np.float32))
    write_tif(tmp_path / "mixed" / "b.tif", np.ones((3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"b\.tif has 3 bands but .*a\.tif has 2"):
        compute([str(tmp_path / "mixed")])
    with pytest.raises(FileNotFoundError, match="no file in .* matches '\\*.png'"):
        compute([str(tmp_path / "mixed")], pattern="*.png")
    with pytest.raises(ValueError, match="give every input as NAME=PATH, or none"):
        compute([f"S1GRD={tmp_path / 'mixed'}", str(tmp_path / "nodata")])
    with pytest.raises(KeyError):
        compute([f"NOTAMODALITY={tmp_path / 'mixed'}"])
    with pytest.raises(ValueError, match="3 bands do not split into --time-steps 2 dates"):
        compute([str(tmp_path / "mixed" / "b.tif")], time_steps=2)
