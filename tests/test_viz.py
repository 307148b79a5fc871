"""Colour schemes per modality and the panel figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from terratim import viz
from terratim.data.geotiff import read_geotiff
from terratim.modalities import LULC_COLORS, MODALITIES

EXAMPLES = Path(__file__).parent / "data" / "terramesh_examples"
SAMPLE = "282D_485L_3_3.tif"


def _sample(name: str) -> np.ndarray:
    return read_geotiff(EXAMPLES / name / SAMPLE).data


@pytest.mark.parametrize("name", ["S2L2A", "S2L1C", "S2RGB", "S1RTC", "DEM", "NDVI", "LULC"])
def test_colorize_real_samples_in_unit_range(name):
    rgb = viz.colorize(name, _sample(name))
    assert rgb.shape == (224, 224, 3) and rgb.dtype == np.float32
    assert 0.0 <= rgb.min() and rgb.max() <= 1.0
    assert rgb.std() > 0.01  # a real image is not a flat colour


def test_s2_true_colour_uses_red_green_blue_in_that_order():
    array = np.zeros((12, 4, 4), np.float32)
    s2 = MODALITIES["S2L2A"]
    array[s2.band_index("RED")] = np.arange(16).reshape(4, 4)
    rgb = viz.colorize("S2L2A", array)
    assert rgb[..., 0].max() == 1.0 and rgb[..., 1].max() == 0.0 and rgb[..., 2].max() == 0.0


def test_s1_false_colour_blue_is_vv_minus_vh():
    vv = np.full((2, 2), -10.0, np.float32)
    vh = np.array([[-20.0, -15.0], [-25.0, -12.0]], np.float32)
    rgb = viz.colorize("S1GRD", np.stack([vv, vh]))
    ratio = vv - vh
    assert np.argmax(rgb[..., 2]) == np.argmax(ratio)  # brightest blue where VV/VH is largest
    assert np.argmin(rgb[..., 2]) == np.argmin(ratio)


def test_ndvi_diverging_fixed_range():
    rgb = viz.colorize("NDVI", np.array([[[-1.0, 0.0, 1.0]]], np.float32))
    red_end, green_end = rgb[0, 0], rgb[0, 2]
    assert red_end[0] > red_end[1] and green_end[1] > green_end[0]  # RdYlGn: red at -1, green at +1


def test_lulc_ids_and_logits_give_class_colours():
    ids = np.arange(10).reshape(2, 5)
    expected = np.array([viz._hex_to_rgb(c) for c in LULC_COLORS], np.float32).reshape(2, 5, 3)
    np.testing.assert_allclose(viz.colorize("LULC", ids), expected)
    np.testing.assert_allclose(viz.colorize("LULC", ids[None].astype(np.float32)), expected)
    logits = np.eye(10, dtype=np.float32)[ids].transpose(2, 0, 1)  # (10, 2, 5), one-hot
    np.testing.assert_allclose(viz.colorize("LULC", logits), expected)


def test_nan_and_invalid_classes_are_black():
    dem = np.array([[[1.0, np.nan], [3.0, 4.0]]], np.float32)
    rgb = viz.colorize("DEM", dem)
    assert (rgb[0, 1] == 0).all() and rgb[0, 0].sum() > 0
    s2 = np.ones((12, 2, 2), np.float32)
    s2[5, 1, 1] = np.nan  # NaN in a band not drawn still marks the pixel as nodata
    assert (viz.colorize("S2L2A", s2)[1, 1] == 0).all()
    classes = viz.colorize("LULC", np.array([[np.nan, 12.0, 3.0]], np.float32))
    assert (classes[0, :2] == 0).all() and classes[0, 2].sum() > 0


def test_shared_limits_make_panels_comparable():
    dark = np.full((1, 2, 2), 100.0, np.float32)
    bright = np.full((1, 2, 2), 900.0, np.float32)
    limits = viz.stretch_limits("DEM", [dark, bright])
    assert not np.allclose(viz.colorize("DEM", dark, limits), viz.colorize("DEM", bright, limits))


@pytest.mark.parametrize(
    ("name", "shape"), [("S2L2A", (3, 8, 8)), ("S1GRD", (1, 8, 8)), ("LULC", (4, 8, 8)), ("DEM", (8,))]
)
def test_wrong_shapes_raise(name, shape):
    with pytest.raises(ValueError, match=name):
        viz.colorize(name, np.zeros(shape, np.float32))


def test_sequence_modality_has_no_colours():
    with pytest.raises(ValueError, match="COORDS"):
        viz.colorize("coords", np.zeros((2, 1, 1), np.float32))


def test_save_panel_writes_png(tmp_path):
    panels = [(name, name, _sample(name)) for name in ("S2L2A", "S1RTC", "DEM", "NDVI", "LULC")]
    path = viz.save_panel(tmp_path / "sub" / "panel.png", panels, title="sample")
    assert path == tmp_path / "sub" / "panel.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    image = imread(path)
    assert image.shape[1] > 5 * 224 and image.shape[0] > 224  # five panels side by side
    with pytest.raises(ValueError, match="at least one"):
        viz.save_panel(tmp_path / "empty.png", [])


def test_class_scheme_names_colours_and_legend():
    water = viz.class_scheme(2, ["no water", "water"])
    assert water.legend_labels() == ["0 no water", "1 water"]
    assert len(set(water.colors)) == 2
    assert [h.get_label() for h in viz.class_legend_handles(water)] == ["0 no water", "1 water"]
    unnamed = viz.class_scheme(25)
    assert unnamed.legend_labels()[:2] == ["class 0", "class 1"] and len(set(unnamed.colors)) == 25
    with pytest.raises(ValueError, match="3 class_names for 2 classes"):
        viz.class_scheme(2, ["a", "b", "c"])


def test_panel_of_a_task_class_map_uses_its_scheme():
    water = viz.class_scheme(2, ["no water", "water"])
    ids = np.array([[0, 1], [-1, 7]])  # -1 (ignore) and 7 (out of range) are invalid
    fig = viz.panel_figure([("prediction", water, ids), ("land cover", "LULC", np.zeros((2, 2)))])
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes]
    assert legends[0] == ["0 no water", "1 water"]
    assert legends[1][0] == "0 no data" and len(legends[1]) == 10  # LULC keeps its own classes
    rgb = fig.axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(rgb[0], water.rgb)
    np.testing.assert_allclose(rgb[1], 0.0)
    logits = np.stack([np.zeros((2, 2)), np.ones((2, 2))]).astype(np.float32)  # (2, H, W): class 1 wins
    np.testing.assert_allclose(viz.colorize_classes(logits, water), np.broadcast_to(water.rgb[1], (2, 2, 3)))
