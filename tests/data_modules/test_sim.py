"""The simulated Earth: determinism, physical relations, and value ranges against the real samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from terratim.data import sim
from terratim.data.geotiff import read_geotiff
from terratim.modalities import MODALITIES

DATA = Path(__file__).resolve().parents[1] / "data"
EXAMPLES = DATA / "terramesh_examples"
SIZE = 128


@pytest.fixture(scope="module")
def chips() -> list[dict[str, np.ndarray]]:
    return list(sim.samples(seed=7, count=24, config=sim.SimConfig(size=SIZE)))


def _pooled(chips: list[dict], key: str) -> np.ndarray:
    return np.concatenate([c[key].reshape(c[key].shape[0], -1) for c in chips], axis=1)


def _real(folder: Path) -> np.ndarray:
    arrays = [read_geotiff(f).data for f in sorted(folder.glob("*.tif"))]
    return np.concatenate([a.reshape(a.shape[0], -1) for a in arrays], axis=1)


def test_deterministic_for_a_seed_and_independent_per_index() -> None:
    cfg = sim.SimConfig(size=64)
    a, b = sim.sample(3, 5, cfg), sim.sample(3, 5, cfg)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    other = sim.sample(3, 6, cfg)
    assert not np.array_equal(a["S1GRD"], other["S1GRD"])
    # Index 5 does not depend on how many samples were drawn before it.
    assert np.array_equal(list(sim.samples(3, 6, cfg))[5]["DEM"], a["DEM"])


def test_shapes_dtypes_and_band_order(chips: list[dict]) -> None:
    chip = chips[0]
    assert set(chip) == {*sim.SIM_MODALITIES, sim.LABEL}
    for mod in sim.SIM_MODALITIES:
        assert chip[mod].shape == (MODALITIES[mod].num_bands, SIZE, SIZE), mod
    assert chip["LULC"].dtype == np.uint8 and chip[sim.LABEL].dtype == np.uint8
    assert all(np.isfinite(chip[m]).all() for m in ("S2L2A", "S1GRD", "DEM", "NDVI"))


def test_ndvi_is_computed_from_simulated_red_and_nir(chips: list[dict]) -> None:
    s2 = chips[1]["S2L2A"]
    nir, red = s2[MODALITIES["S2L2A"].band_index("B08")], s2[MODALITIES["S2L2A"].band_index("B04")]
    np.testing.assert_allclose(chips[1]["NDVI"][0], (nir - red) / (nir + red), atol=1e-6)


def test_s2_value_ranges_match_real_examples(chips: list[dict]) -> None:
    simulated, real = _pooled(chips, "S2L2A"), _real(EXAMPLES / "S2L2A")
    for q, factor in ((50, 2.5), (95, 2.5), (99.5, 2.0)):
        ratio = np.percentile(simulated, q, axis=1) / np.nanpercentile(real, q, axis=1)
        assert np.all((ratio > 1 / factor) & (ratio < factor)), (q, ratio)
    assert simulated.min() >= 0 and simulated.max() < 16000


def test_s1_value_ranges_match_real_rtc_and_sen1floods11(chips: list[dict]) -> None:
    simulated = _pooled(chips, "S1GRD")
    rtc = _real(EXAMPLES / "S1RTC")
    grd = _real(DATA / "sen1floods11" / "S1Hand")
    for q in (5, 50, 95):
        s = np.percentile(simulated, q, axis=1)
        bounds = np.stack([np.nanpercentile(rtc, q, axis=1), np.nanpercentile(grd, q, axis=1)])
        # Within 4 dB of the span of the two real sources, for VV and VH.
        assert np.all(s > bounds.min(0) - 4) and np.all(s < bounds.max(0) + 4), (q, s, bounds)
    assert np.median(simulated[0]) > np.median(simulated[1])  # VV above VH, as always in real data


def test_dem_ndvi_and_lulc_ranges(chips: list[dict]) -> None:
    dem = _pooled(chips, "DEM")
    assert dem.min() >= 0 and dem.max() < 6000
    assert 0 < np.median(dem) < 1500  # real examples: 59 m; pretraining mean 671 m
    ndvi, real_ndvi = _pooled(chips, "NDVI"), _real(EXAMPLES / "NDVI")
    assert ndvi.min() >= -1 and ndvi.max() <= 1
    assert abs(np.median(ndvi) - np.nanmedian(real_ndvi)) < 0.25
    classes = set(np.unique(_pooled(chips, "LULC")).tolist())
    assert classes <= {1, 2, 3, 4, 5, 6, 7, 9}, "no 'no data' and no cloud class in an annual map"
    assert {sim.WATER, sim.TREES, sim.FLOODED_VEG} <= classes


def _majority_float64(water: np.ndarray, window: int) -> np.ndarray:
    """The majority of each pixel's window, by direct float64 summation over the mirrored image."""
    r = window // 2
    padded = np.pad(water.astype(np.float64), r, mode="reflect")
    h, w = water.shape
    share = np.zeros((h, w))
    for dy in range(window):
        for dx in range(window):
            share += padded[dy : dy + h, dx : dx + w]
    return share / window**2 > 0.5


def test_water_label_is_the_majority_of_open_water_plus_flooded_vegetation(chips: list[dict]) -> None:
    for chip in chips:
        water = np.isin(chip["LULC"][0], (sim.WATER, sim.FLOODED_VEG))
        np.testing.assert_array_equal(chip[sim.LABEL][0].astype(bool), _majority_float64(water, 5))
    per_pixel = sim.sample(7, 0, sim.SimConfig(size=SIZE, label_window=1))
    np.testing.assert_array_equal(per_pixel[sim.LABEL][0].astype(bool),
                                  np.isin(per_pixel["LULC"][0], (sim.WATER, sim.FLOODED_VEG)))
    for key in sim.SIM_MODALITIES:  # the label window touches nothing else
        np.testing.assert_array_equal(per_pixel[key], chips[0][key])
    with pytest.raises(ValueError, match="label_window"):
        sim.SimConfig(label_window=4)


def _isolated_share(labels: list[np.ndarray]) -> float:
    """Share of valid pixels none of whose valid 8-neighbours has the same label (-1 = no data)."""
    isolated = valid = 0
    for label in labels:
        padded = np.pad(label.astype(np.int64), 1, constant_values=-1)
        h, w = label.shape
        neighbours = [padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                      for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
        same = sum((n == label) for n in neighbours)
        other = sum(((n >= 0) & (n != label)) for n in neighbours)
        isolated += int(((label >= 0) & (same == 0) & (other > 0)).sum())
        valid += int((label >= 0).sum())
    return isolated / valid


def test_water_label_is_as_coherent_as_real_hand_labels(chips: list[dict]) -> None:
    """Sen1Floods11 hand labels have few isolated pixels; the per-pixel land cover has ~8x more, the label not."""
    files = sorted((DATA / "sen1floods11" / "LabelHand").glob("*.tif"))
    real = [np.nan_to_num(read_geotiff(f).data[0], nan=-1) for f in files]
    real_share = _isolated_share(real)
    simulated = _isolated_share([c[sim.LABEL][0] for c in chips])
    per_pixel = _isolated_share([np.isin(c["LULC"][0], (sim.WATER, sim.FLOODED_VEG)).astype(np.int64) for c in chips])
    assert 0 < real_share < 0.002 and per_pixel > 3 * real_share  # what the label window fixes
    assert simulated <= real_share, (simulated, real_share)
    shares = [(c[sim.LABEL].mean(), np.isin(c["LULC"], (sim.WATER, sim.FLOODED_VEG)).mean()) for c in chips]
    assert abs(np.mean([a for a, _ in shares]) - np.mean([b for _, b in shares])) < 0.01  # water share kept


def test_physical_relations(chips: list[dict]) -> None:
    lulc, dem, s1, s2 = (_pooled(chips, k) for k in ("LULC", "DEM", "S1GRD", "S2L2A"))
    lulc = lulc[0]
    water, trees = lulc == sim.WATER, lulc == sim.TREES
    assert np.median(s1[0, water]) < np.median(s1[0, ~water]) - 5  # open water is dark in VV
    nir = MODALITIES["S2L2A"].band_index("NIR_BROAD")
    assert np.median(s2[nir, trees]) > 3 * np.median(s2[nir, water])  # vegetation is bright in NIR
    # Water sits in the lowest ground of its chip.
    for chip in chips:
        w = chip["LULC"][0] == sim.WATER
        if w.any() and (~w).any():
            assert chip["DEM"][0][w].mean() < chip["DEM"][0][~w].mean()


def test_clouds_change_optical_only() -> None:
    clear = sim.sample(11, 0, sim.SimConfig(size=64, cloud_prob=0.0))
    cloudy = sim.sample(11, 0, sim.SimConfig(size=64, cloud_prob=1.0))
    for key in ("S1GRD", "DEM", "LULC", sim.LABEL):
        np.testing.assert_array_equal(clear[key], cloudy[key])
    assert not np.array_equal(clear["S2L2A"], cloudy["S2L2A"])


def test_flooded_vegetation_is_ambiguous_per_pixel_but_separable_in_context(chips: list[dict]) -> None:
    """The design property the TiM demo relies on, measured with nearest-class-mean on VV, VH."""
    lulc, s1 = _pooled(chips, "LULC")[0], _pooled(chips, "S1GRD")
    flooded, trees = s1[:, lulc == sim.FLOODED_VEG], s1[:, lulc == sim.TREES]
    n = min(flooded.shape[1], trees.shape[1])
    assert n > 1000
    x = np.concatenate([flooded[:, :n], trees[:, :n]], axis=1)
    y = np.r_[np.ones(n), np.zeros(n)]
    centres = np.stack([trees.mean(1), flooded.mean(1)])
    pred = np.argmin(((x.T[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert (pred == y).mean() < 0.75  # per pixel: close to a coin flip

    # Averaging 4x4 windows of pure class removes speckle and the classes separate.
    def windows(cls: int) -> np.ndarray:
        feats = []
        for chip in chips:
            lab, img = chip["LULC"][0], chip["S1GRD"]
            for i in range(0, SIZE, 4):
                for j in range(0, SIZE, 4):
                    if (lab[i : i + 4, j : j + 4] == cls).all():
                        window = img[:, i : i + 4, j : j + 4].reshape(2, -1)
                        feats.append(10 * np.log10((10 ** (window / 10)).mean(1)))  # mean intensity, dB
        return np.array(feats)

    wf, wt = windows(sim.FLOODED_VEG), windows(sim.TREES)
    assert len(wf) > 50 and len(wt) > 50
    ratio_f, ratio_t = wf[:, 0] - wf[:, 1], wt[:, 0] - wt[:, 1]  # VV - VH, the polarization ratio
    threshold = (np.median(ratio_f) + np.median(ratio_t)) / 2
    accuracy = ((ratio_f > threshold).mean() + (ratio_t <= threshold).mean()) / 2
    assert accuracy > 0.85


def test_write_dataset_uses_the_terramesh_layout(tmp_path: Path) -> None:
    names = sim.write_dataset(tmp_path, count=2, seed=4, config=sim.SimConfig(size=32))
    assert names == ["sim4_00000", "sim4_00001"]
    chip = sim.sample(4, 1, sim.SimConfig(size=32))
    for mod in (*sim.SIM_MODALITIES, sim.LABEL):
        raster = read_geotiff(tmp_path / mod / "sim4_00001.tif")
        assert raster.data.shape == chip[mod].shape
        tolerance = 0.5 if mod in ("S2L2A", "DEM") else 1e-6  # int16 files round
        np.testing.assert_allclose(raster.data, chip[mod].astype(np.float32), atol=tolerance)
    with pytest.raises(FileExistsError):
        sim.write_dataset(tmp_path, count=1, seed=4, config=sim.SimConfig(size=32))
    with pytest.raises(ValueError, match="no modality"):
        sim.write_dataset(tmp_path, count=1, modalities=("S2L1C",))
