"""Geometric transforms: one draw shared by every modality, the label and the validity masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terratim.data.transforms import D4, build_transforms


def _sample() -> dict:
    base = np.arange(36, dtype=np.float32).reshape(6, 6)
    return {
        "image": {"S2L2A": np.stack([base, base * 2]), "S1GRD": base[None] + 100},
        "valid": {"S2L2A": base > 10, "S1GRD": base > 10},
        "mask": base.astype(np.int64),
    }


def _consistent(s: dict) -> bool:
    m = s["mask"].astype(np.float32)
    return (
        np.array_equal(s["image"]["S2L2A"][0], m)
        and np.array_equal(s["image"]["S2L2A"][1], 2 * m)
        and np.array_equal(s["image"]["S1GRD"][0], m + 100)
        and all(np.array_equal(v, m > 10) for v in s["valid"].values())
    )


def test_d4_applies_one_symmetry_to_everything_and_reaches_all_eight():
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        out = D4()(_sample(), gen)
        assert _consistent(out)
        seen.add(out["mask"].tobytes())
    assert len(seen) == 8


def test_config_names_work_without_albumentations_and_random_crop_is_shared():
    transform = build_transforms(
        [{"class_path": "albumentations.D4"}, {"class_path": "RandomCrop", "init_args": {"height": 4}},
         {"class_path": "albumentations.pytorch.transforms.ToTensorV2"}]
    )
    out = transform(_sample(), torch.Generator().manual_seed(1))
    assert out["mask"].shape == (4, 4) and _consistent(out)


def test_other_albumentations_transforms_need_the_extra_or_run_through_it():
    spec = [{"class_path": "albumentations.Transpose", "init_args": {"p": 1.0}}]
    try:
        import albumentations  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install albumentations"):
            build_transforms(spec)
        return
    out = build_transforms(spec)(_sample())
    assert np.array_equal(out["mask"], _sample()["mask"].T) and _consistent(out)
