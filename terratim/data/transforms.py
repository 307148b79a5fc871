"""Geometric augmentations applied identically to every modality of a sample and to its label.

A sample here is ``{"image": {modality: (C, H, W) array}, "mask": (H, W) array | None, ...}``. Every transform
draws its random choices once per sample and applies them to all image modalities, the label and the validity
masks, so the modalities stay co-registered.

The transforms that TerraMind configs use (``albumentations.D4``, flips, 90-degree rotations,
``ToTensorV2``) are implemented natively, so configs that name them run without albumentations. Any other
albumentations transform is applied through albumentations (``pip install albumentations``), with every
modality and the label passed as additional targets.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

Sample = dict[str, Any]
SPATIAL_KEYS = ("image", "valid")  # dict-valued entries whose arrays are all transformed


def _randint(high: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(high, (1,), generator=generator))


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def map_spatial(sample: Sample, fn: Callable[[np.ndarray], np.ndarray]) -> Sample:
    """Apply ``fn`` to every spatial array of a sample (last two axes are H, W)."""
    out = dict(sample)
    for key in SPATIAL_KEYS:
        if out.get(key) is not None:
            out[key] = {mod: np.ascontiguousarray(fn(arr)) for mod, arr in out[key].items()}
    if out.get("mask") is not None and np.ndim(out["mask"]) >= 2:
        out["mask"] = np.ascontiguousarray(fn(out["mask"]))
    return out


class D4:
    """One of the 8 symmetries of the square (identity, 3 rotations, 4 reflections), uniformly at random."""

    def __init__(self, p: float = 1.0) -> None:
        self.p = p

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        if _rand(generator) >= self.p:
            return sample
        k = _randint(4, generator)
        flip = _randint(2, generator) == 1

        def fn(a: np.ndarray) -> np.ndarray:
            a = np.rot90(a, k, axes=(-2, -1))
            return a[..., ::-1] if flip else a

        return map_spatial(sample, fn)


class HorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        return map_spatial(sample, lambda a: a[..., ::-1]) if _rand(generator) < self.p else sample


class VerticalFlip:
    """Mirror top-bottom with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        return map_spatial(sample, lambda a: a[..., ::-1, :]) if _rand(generator) < self.p else sample


class RandomRotate90:
    """Rotate by a random multiple of 90 degrees with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        if _rand(generator) >= self.p:
            return sample
        k = _randint(4, generator)
        return map_spatial(sample, lambda a: np.rot90(a, k, axes=(-2, -1)))


class RandomCrop:
    """Crop the same random ``height`` x ``width`` window from every modality and the label."""

    def __init__(self, height: int, width: int | None = None) -> None:
        self.height, self.width = height, width or height

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        h, w = next(iter(sample["image"].values())).shape[-2:]
        if h < self.height or w < self.width:
            raise ValueError(f"RandomCrop({self.height}, {self.width}) is larger than the {h}x{w} sample")
        top, left = _randint(h - self.height + 1, generator), _randint(w - self.width + 1, generator)
        return map_spatial(sample, lambda a: a[..., top : top + self.height, left : left + self.width])


class CenterCrop(RandomCrop):
    """Crop the central ``height`` x ``width`` window."""

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        h, w = next(iter(sample["image"].values())).shape[-2:]
        top, left = max(0, (h - self.height) // 2), max(0, (w - self.width) // 2)
        return map_spatial(sample, lambda a: a[..., top : top + self.height, left : left + self.width])


class ToTensorV2:
    """No-op kept for config compatibility: samples are always converted to tensors at collation."""

    def __init__(self, **_: Any) -> None:
        pass

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        return sample


class AlbumentationsTransform:
    """Wrap an albumentations transform; every modality and the label go through it as targets."""

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        import albumentations as A

        mods = list(sample["image"])
        valid = sample.get("valid") or {}
        targets = {f"image_{i}": "image" for i in range(1, len(mods))}
        targets.update({f"valid_{i}": "mask" for i, mod in enumerate(mods) if mod in valid})
        kwargs = {"image": sample["image"][mods[0]].transpose(1, 2, 0)}  # albumentations wants (H, W, C)
        for i, mod in enumerate(mods):
            if i:
                kwargs[f"image_{i}"] = sample["image"][mod].transpose(1, 2, 0)
            if mod in valid:
                kwargs[f"valid_{i}"] = valid[mod].astype(np.uint8)
        if sample.get("mask") is not None and np.ndim(sample["mask"]) == 2:
            kwargs["mask"] = sample["mask"]
        result = A.Compose([self.transform], additional_targets=targets)(**kwargs)
        out = dict(sample)
        out["image"] = {
            mod: np.ascontiguousarray(result["image" if i == 0 else f"image_{i}"].transpose(2, 0, 1))
            for i, mod in enumerate(mods)
        }
        if valid:
            out["valid"] = {mod: result[f"valid_{i}"].astype(bool) for i, mod in enumerate(mods) if mod in valid}
        if "mask" in kwargs:
            out["mask"] = np.ascontiguousarray(result["mask"])
        return out


NATIVE: dict[str, type] = {
    cls.__name__: cls for cls in (D4, HorizontalFlip, VerticalFlip, RandomRotate90, RandomCrop, CenterCrop, ToTensorV2)
}


def _from_spec(spec: dict) -> Callable:
    class_path = spec.get("class_path")
    if not isinstance(class_path, str):
        raise ValueError(f"a transform must be given as {{class_path: ..., init_args: ...}}, got {spec!r}")
    init_args = dict(spec.get("init_args") or {})
    short = class_path.rsplit(".", 1)[-1]
    module = class_path.rsplit(".", 1)[0] if "." in class_path else ""
    if short in NATIVE and (module in ("", "terratim.data.transforms") or module.startswith("albumentations")):
        return NATIVE[short](**init_args)
    if module.startswith("albumentations") or not module:
        try:
            import albumentations  # noqa: F401
        except ImportError as err:
            raise ImportError(
                f"transform {class_path!r} needs albumentations: pip install albumentations "
                f"(built in without it: {sorted(NATIVE)})"
            ) from err
        mod = importlib.import_module(module or "albumentations")
        return AlbumentationsTransform(getattr(mod, short)(**init_args))
    cls = getattr(importlib.import_module(module), short)
    return cls(**init_args)


def build_transforms(specs: Sequence[Any] | Callable | None) -> Callable[..., Sample] | None:
    """Turn a config list of transforms (``class_path``/``init_args`` dicts or callables) into one callable.

    Args:
        specs: ``None``, a callable, or a list whose items are callables or ``{class_path, init_args}`` dicts.
            Native names (``D4``, ``HorizontalFlip``, ``VerticalFlip``, ``RandomRotate90``, ``RandomCrop``,
            ``CenterCrop``, ``ToTensorV2``) are accepted with or without the ``albumentations.`` prefix.
    """
    if specs is None:
        return None
    if callable(specs):
        return specs
    transforms = []
    for spec in specs:
        if hasattr(spec, "as_dict"):  # a jsonargparse Namespace
            spec = spec.as_dict()
        if isinstance(spec, dict):
            transforms.append(_from_spec(spec))
        elif callable(spec):
            try:
                import albumentations as A

                is_album = isinstance(spec, A.BasicTransform)
            except ImportError:
                is_album = False
            transforms.append(AlbumentationsTransform(spec) if is_album else spec)
        else:
            raise TypeError(f"not a transform: {spec!r}")
    return Compose(transforms)


class Compose:
    """Apply transforms in order, threading one generator through them."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        for t in self.transforms:
            sample = t(sample, generator) if not isinstance(t, AlbumentationsTransform) else t(sample)
        return sample
