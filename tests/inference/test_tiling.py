"""Chip grid, reference blend weights and the streaming accumulator (pure arrays)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from terratim.inference.tiling import BlendAccumulator, ChipGrid, blend_image, blend_weights, ramp_weights

AWKWARD = [  # (H, W, chip, stride, delta, blend)
    (300, 517, 64, 48, 8, "cosine"),
    (97, 131, 32, 20, 8, "average"),
    (64, 64, 64, 32, 4, "cosine"),
    (70, 200, 33, 7, 30, "cosine"),
    (50, 51, 40, 40, 8, "cosine"),  # no overlap: delta drops to 0
    (241, 239, 224, 192, 8, "cosine"),  # reference defaults, just above one chip
]


@pytest.mark.parametrize(("height", "width", "chip", "stride", "delta", "blend"), AWKWARD)
def test_identity_is_exact_and_constant_stays_constant(height, width, chip, stride, delta, blend):
    image = np.random.default_rng(height).standard_normal((3, height, width)).astype(np.float32)
    grid = ChipGrid(height, width, chip, stride, delta)
    out = blend_image(image, lambda x: x, grid, blend)
    assert np.array_equal(out.astype(np.float32), image)  # every pixel, bit for bit: no seams
    const = blend_image(image, lambda x: np.full((x.shape[0], 2, chip, chip), 3.25), grid, blend)
    assert np.array_equal(const.astype(np.float32), np.full((2, height, width), 3.25, np.float32))


def test_grid_matches_reference_offsets_and_covers_every_pixel():
    grid = ChipGrid(500, 500, 256, 192, 8)  # padded 516: range(0, 259, 192) = [0, 192] + edge 260
    assert grid.row_offsets == [0, 192, 260]
    assert grid.core == 240 and len(grid) == 9
    cover = np.zeros((500, 500), int)
    for chip in grid.chips():
        cover[chip.y : chip.y + grid.core, chip.x : chip.x + grid.core] += 1
    assert cover.min() >= 1
    # The reference's range would be empty when padded - chip == 1; we still start at 0.
    assert ChipGrid(49, 49, 64, 32, 8).row_offsets == [0, 1]


def test_delta_is_lowered_to_half_the_overlap():
    assert ChipGrid(300, 300, 224, 192, 50).delta == 16
    assert ChipGrid(300, 300, 224, 224, 8).delta == 0


def test_reference_ramp_numbers():
    # crop 256 / stride 192 / delta 8 -> ramp length min(128, 64) - 8 = 56 (TerraTorch's get_blend_mask).
    axis = ramp_weights(256, 192, 8)
    assert axis.shape == (240,)
    ramp = 0.5 + 0.5 * np.cos(math.pi * (np.arange(56) + 1) / 57)
    assert np.allclose(axis[-56:], ramp) and np.allclose(axis[:56], ramp[::-1])
    assert np.all(axis[56:-56] == 1.0)
    mask = blend_weights(256, 192, 8)
    assert mask.min() > 0 and np.isclose(mask.min(), ramp[-1] ** 2 + 1e-6)
    assert np.all(blend_weights(256, 192, 8, "average") == 1.0)
    with pytest.raises(ValueError, match="blend mode"):
        blend_weights(256, 192, 8, "gaussian")


def test_scene_smaller_than_a_chip_is_refused():
    with pytest.raises(ValueError, match=r"smaller than one chip.*at most 116 px"):
        ChipGrid(100, 300, 224, 192, 8)
    with pytest.raises(ValueError, match="stride"):
        ChipGrid(300, 300, 64, 65, 0)


def test_accumulator_holds_only_rows_in_flight():
    acc = BlendAccumulator(1, 10, np.ones((4, 4)), start_row=0)
    acc.add(np.full((1, 4, 4), 2.0), 0, 0, np.ones((4, 4), bool))
    acc.add(np.full((1, 4, 4), 4.0), 2, 0, np.ones((4, 4), bool))
    assert acc.rows_held == 6
    blended, covered, valid = acc.pop(2)
    assert acc.rows_held == 4 and acc.base == 2
    assert np.all(blended[0, :, :4] == 2.0) and not covered[:, 4:].any() and valid[:, :4].all()
    blended, covered, _ = acc.pop(6)
    assert np.all(blended[0, :2, :4] == 3.0) and np.all(blended[0, 2:, :4] == 4.0)
    with pytest.raises(ValueError, match="above the rows still held"):
        acc.add(np.zeros((1, 4, 4)), 0, 0)
