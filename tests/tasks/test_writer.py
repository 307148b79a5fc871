"""Prediction output panels: legend from the task's class names, the label panel when the label is known."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from affine import Affine

from terratim import viz
from terratim.tasks.writer import GeoTiffPredictionWriter, prediction_panels, task_class_scheme

WATER = SimpleNamespace(task="segmentation", num_classes=2, class_names=["no water", "water"])


def _outputs(with_mask: bool) -> dict:
    """A predict_step result for one 16x16 S1GRD sample of a 2-class task."""
    prediction = torch.zeros(1, 16, 16, dtype=torch.long)
    prediction[:, :, 8:] = 1
    outputs = {
        "prediction": prediction,
        "image": {"S1GRD": torch.randn(1, 2, 16, 16, generator=torch.Generator().manual_seed(0))},
        "meta": [{"sample_id": "chip0", "crs": "EPSG:32633", "transform": Affine(10, 0, 500000, 0, -10, 4600000)}],
    }
    if with_mask:
        mask = prediction.clone()
        mask[:, 0] = -1  # ignore index: drawn black
        outputs["mask"] = mask
    return outputs


def _run_writer(tmp_path: Path, monkeypatch, pl_module, outputs: dict) -> list:
    """Run the writer's batch hook with PNG panels; returns the figures it drew."""
    figures = []
    draw = viz.panel_figure

    def recording(panels, title=None):
        figures.append(draw(panels, title))
        return figures[-1]

    monkeypatch.setattr(viz, "panel_figure", recording)
    writer = GeoTiffPredictionWriter(str(tmp_path / "pred"), png=True)
    trainer = SimpleNamespace(datamodule=None, global_rank=0)
    (tmp_path / "pred").mkdir()
    writer.on_predict_batch_end(trainer, pl_module, outputs, batch={}, batch_idx=0)
    assert (tmp_path / "pred" / "chip0_panel.png").stat().st_size > 1000
    return figures


def _legend_texts(ax) -> list[str] | None:
    legend = ax.get_legend()
    return None if legend is None else [t.get_text() for t in legend.get_texts()]


def test_two_class_panel_legend_comes_from_class_names_and_label_is_drawn(tmp_path, monkeypatch):
    (fig,) = _run_writer(tmp_path, monkeypatch, WATER, _outputs(with_mask=True))
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["S1GRD", "prediction", "label"]
    assert _legend_texts(axes[1]) == ["0 no water", "1 water"]
    assert _legend_texts(axes[2]) == ["0 no water", "1 water"]
    assert _legend_texts(axes[0]) is None  # the input has no class legend
    label_rgb = axes[2].get_images()[0].get_array()  # (H, W, 3)
    scheme = viz.class_scheme(2, WATER.class_names)
    np.testing.assert_allclose(label_rgb[0], 0.0)  # ignored row is black
    np.testing.assert_allclose(label_rgb[1, 0], scheme.rgb[0])
    np.testing.assert_allclose(label_rgb[1, -1], scheme.rgb[1])


def test_no_label_panel_without_a_mask(tmp_path, monkeypatch):
    (fig,) = _run_writer(tmp_path, monkeypatch, WATER, _outputs(with_mask=False))
    assert [ax.get_title() for ax in fig.axes] == ["S1GRD", "prediction"]


def test_unnamed_classes_and_regression_maps():
    unnamed = task_class_scheme(SimpleNamespace(task="segmentation", num_classes=3, class_names=None))
    assert unnamed.names == ("class 0", "class 1", "class 2")
    assert task_class_scheme(SimpleNamespace(task="regression")) is None
    raw = {"S1GRD": np.zeros((2, 4, 4), np.float32)}
    panels = prediction_panels(raw, torch.rand(4, 4), torch.rand(4, 4), None)
    assert [(caption, name, array.shape) for caption, name, array in panels] == [
        ("S1GRD", "S1GRD", (2, 4, 4)), ("prediction", "DEM", (1, 4, 4)), ("label", "DEM", (1, 4, 4))
    ]


def test_class_names_must_match_the_class_count():
    with pytest.raises(ValueError, match="3 class_names for 2 classes"):
        task_class_scheme(SimpleNamespace(task="segmentation", num_classes=2, class_names=["a", "b", "c"]))


def test_rgb_panel_stretches_the_chosen_channels():
    """``rgb_indices`` pick the channels (default the first three), each stretched 2-98 percent to 0..255."""
    from terratim.tasks.writer import rgb_panel

    ramp = np.linspace(0.0, 1.0, 101, dtype=np.float32).reshape(1, 1, 101)
    image = np.concatenate([ramp * 10, ramp * 20, ramp * 30, ramp * 40])  # (4, 1, 101)
    image[0, 0, 0] = np.nan
    rgb = rgb_panel(image, [3, 2, 1])
    assert rgb.shape == (3, 1, 101)
    np.testing.assert_allclose(rgb[:, 0, 50], 127.5, atol=1e-3)  # the median sits mid-range in every channel
    assert (rgb[:, 0, -1] == 255.0).all() and (rgb[:, 0, 1] == 0.0).all()
    assert np.isnan(rgb_panel(image)[0, 0, 0])  # default channels 0, 1, 2; nodata stays NaN (drawn black)
    with pytest.raises(ValueError, match=r"rgb_indices \[0, 4, 1\] must name 3 \(or 1\) of the input's 4 channels"):
        rgb_panel(image, [0, 4, 1])


def test_tensor_input_is_unstandardized_per_channel_and_shows_the_last_date():
    from terratim.tasks.writer import _raw

    module = SimpleNamespace(means=np.array([10.0, 20.0], np.float32), stds=np.array([2.0, 4.0], np.float32))
    series = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(1, 2, 3, 2, 2)  # (B, C, T, H, W)
    raw = _raw(series, 0, module)["image"]
    expected = series[0, :, -1].double() * torch.tensor([2.0, 4.0]).view(2, 1, 1) + torch.tensor([10.0, 20.0]).view(
        2, 1, 1)
    np.testing.assert_allclose(raw, expected.numpy(), rtol=1e-6)


def test_existing_outputs_are_this_runs_files_only(tmp_path):
    writer = GeoTiffPredictionWriter(str(tmp_path), png=True)
    (tmp_path / "old_pred.tif").write_bytes(b"x")
    (tmp_path / "a_panel.png").write_bytes(b"x")
    assert writer.existing_outputs(["a", "b"], []) == [tmp_path / "a_panel.png"]
    assert writer.existing_outputs(["b"], []) == []
    assert writer.existing_outputs(None, []) == [tmp_path / "old_pred.tif"]  # ids unknown: any prediction counts
