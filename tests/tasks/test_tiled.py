"""Tiled inference of the tasks (``tiled_inference_parameters``): grid, blending, and use in val/test/predict."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from terratim.inference.tiling import ChipGrid, blend_image
from terratim.tasks import SemanticSegmentationTask
from terratim.tasks.tiled import TiledInferenceParameters, tiled_forward

TINY = {"backbone": "terramind_v1_tiny", "backbone_pretrained": False, "backbone_modalities": ["S2L2A"],
        "necks": [{"name": "ReshapeTokensToImage"}, {"name": "SelectIndices", "indices": [2, 5, 8, 11]},
                  {"name": "LearnedInterpolateToPyramidal"}],
        "decoder": "UNetDecoder", "decoder_channels": [32, 16, 8, 8], "num_classes": 2}
TILES = {"h_crop": 32, "h_stride": 24, "w_crop": 32, "w_stride": 24, "average_patches": True}


def pointwise(x: dict[str, Tensor] | Tensor) -> Tensor:
    """A per-pixel model (no context): tiled and untiled outputs must agree everywhere."""
    t = x["S2L2A"] if isinstance(x, dict) else x
    return torch.stack([t[:, 0] * 2.0 - t[:, 1], t[:, 1].sin()], dim=1)  # (N, 2, h, w)


def _image(shape: tuple[int, ...], seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("average", [True, False])
def test_pointwise_model_tiled_equals_untiled(average: bool):
    """Any grid, rectangular chips, dict input: per-pixel outputs blend back to the untiled ones."""
    x = {"S2L2A": _image((2, 3, 40, 52))}
    params = TiledInferenceParameters(h_crop=24, h_stride=16, w_crop=32, w_stride=20, average_patches=average,
                                      batch_size=5)
    expected = pointwise(x).double()
    got = tiled_forward(pointwise, x, params)
    assert got.shape == (2, 2, 40, 52) and got.dtype == torch.float32
    assert torch.allclose(got.double(), expected, atol=1e-5)


def test_one_chip_covering_the_image_equals_the_untiled_model():
    """A context-dependent model: a chip as large as the image (no margin) gives the untiled output."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 2, 5, padding=2)
    x = _image((1, 3, 32, 32))
    params = TiledInferenceParameters(h_crop=32, h_stride=32, w_crop=32, w_stride=32)
    assert params.margin == 0
    with torch.no_grad():
        assert torch.allclose(tiled_forward(conv, x, params).double(), conv(x).double(), atol=1e-5)


def test_blending_matches_the_scene_tiler():
    """Square chips: the same grid and raised-cosine weights as terratim.inference.tiling.blend_image."""
    x = _image((1, 2, 40, 40))
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    params = TiledInferenceParameters(h_crop=24, h_stride=16, w_crop=24, w_stride=16, delta=4)
    with torch.no_grad():
        got = tiled_forward(conv, x, params)[0].double().numpy()
        reference = blend_image(x[0].numpy(), lambda chip: conv(torch.from_numpy(chip)).numpy(),
                                ChipGrid(40, 40, 24, 16, delta=4))
    np.testing.assert_allclose(got, reference, atol=1e-5)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({**TILES, "h_stride": 40}, r"h_stride \(40\) must be a positive integer no larger than h_crop \(32\)"),
        ({**TILES, "overlap": 2}, r"unknown keys \['overlap'\]"),
        ({**TILES, "padding": "zeros"}, "padding 'zeros' is not supported"),
    ],
)
def test_bad_tiled_parameters_raise_when_the_task_is_built(params: dict, message: str):
    with pytest.raises(ValueError, match=message):
        SemanticSegmentationTask(TINY, tiled_inference_parameters=params)


def test_crop_larger_than_the_image_raises():
    params = TiledInferenceParameters.from_config({"crop": 64, "stride": 48})
    assert (params.h_crop, params.w_stride) == (64, 48)
    with pytest.raises(ValueError, match=r"h_crop 64 is larger than the image \(32 x 40 pixels\)"):
        tiled_forward(pointwise, _image((1, 2, 32, 40)), params)


def test_task_tiles_predict_always_and_val_test_behind_terratorch_flags(monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[int, ...]] = []
    task = SemanticSegmentationTask(TINY, tiled_inference_parameters=TILES, tiled_inference_on_testing=True)
    model_forward = task.model.forward
    monkeypatch.setattr(task.model, "forward", lambda x: calls.append(tuple(x["S2L2A"].shape)) or model_forward(x))
    batch = {"image": {"S2L2A": _image((1, 12, 48, 48))}, "mask": torch.zeros(1, 48, 48, dtype=torch.long)}
    task.eval()
    with torch.no_grad():
        task.validation_step(batch, 0)  # tiled_inference_on_validation is off (TerraTorch's default)
        assert calls == [(1, 12, 48, 48)]
        calls.clear()
        task.test_step(batch, 0)
        assert calls and all(shape[-2:] == (32, 32) for shape in calls)
        calls.clear()
        prediction = task.predict_step(batch, 0)["prediction"]
        assert prediction.shape == (1, 48, 48) and all(shape[-2:] == (32, 32) for shape in calls)
    with pytest.raises(ValueError, match="tiled_inference_on_validation needs tiled_inference_parameters"):
        SemanticSegmentationTask(TINY, tiled_inference_on_validation=True)
