"""Geometric augmentations applied identically to every modality of a sample and to its label.

A sample here is ``{"image": {modality: (C, H, W) array}, "mask": (H, W) array | None, ...}``. Every transform
draws its random choices once per sample and applies them to all image modalities, the label and the validity
masks, so the modalities stay co-registered.

The transforms that TerraMind configs use (``albumentations.D4``, flips, 90-degree rotations,
``ToTensorV2``) are implemented natively, so configs that name them run without albumentations. Any other
albumentations transform is applied through albumentations (``pip install albumentations``), with every
modality and the label passed as additional targets.

Time series: images may be (C, T, H, W). The native geometric transforms act on the last two axes, so they
apply one draw to every date. Albumentations transforms take (C, H, W) images only: wrap them between
``FlattenTemporalIntoChannels`` and ``UnflattenTemporalFromChannels``, as TerraTorch configs do. TerraTorch's
class paths ``terratorch.datasets.transforms.X`` are accepted as ``terratim.datasets.transforms.X`` (or
``terratim.data.transforms.X``).
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


def map_images(sample: Sample, fn: Callable[[np.ndarray], np.ndarray]) -> Sample:
    """Apply ``fn`` to every modality's image (not to the label or validity masks)."""
    out = dict(sample)
    out["image"] = {mod: np.ascontiguousarray(fn(arr)) for mod, arr in sample["image"].items()}
    return out


class FlattenTemporalIntoChannels:
    """(C, T, H, W) images -> (T*C, H, W), date by date (the C bands of date 1, then of date 2, ...).

    Lets 2-D albumentations transforms see every date of a time series; ``UnflattenTemporalFromChannels``
    undoes it. Same channel order as TerraTorch's transform of the same name.
    """

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        def flatten(a: np.ndarray) -> np.ndarray:
            if a.ndim != 4:
                raise ValueError(f"FlattenTemporalIntoChannels expects (C, T, H, W) images, got shape {a.shape}")
            c, t, h, w = a.shape
            return a.swapaxes(0, 1).reshape(t * c, h, w)

        return map_images(sample, flatten)


class UnflattenTemporalFromChannels:
    """(T*C, H, W) images, date by date -> (C, T, H, W); the inverse of ``FlattenTemporalIntoChannels``.

    Args:
        n_timesteps: the number of dates T (give this or ``n_channels``).
        n_channels: the number of bands per date C.
    """

    def __init__(self, n_timesteps: int | None = None, n_channels: int | None = None) -> None:
        if n_timesteps is None and n_channels is None:
            raise ValueError("UnflattenTemporalFromChannels needs n_timesteps or n_channels")
        for name, value in (("n_timesteps", n_timesteps), ("n_channels", n_channels)):
            if value is not None and value < 1:
                raise ValueError(f"UnflattenTemporalFromChannels: {name} must be positive, got {value}")
        self.n_timesteps, self.n_channels = n_timesteps, n_channels

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        return map_images(sample, self.unflatten)

    def unflatten(self, a: np.ndarray) -> np.ndarray:
        if a.ndim != 3:
            raise ValueError(f"UnflattenTemporalFromChannels expects (T*C, H, W) images, got shape {a.shape}")
        stacked, h, w = a.shape
        name, divisor = ("n_channels", self.n_channels) if self.n_channels else ("n_timesteps", self.n_timesteps)
        assert divisor is not None
        if stacked % divisor:
            raise ValueError(f"UnflattenTemporalFromChannels: {stacked} channels do not split by {name} {divisor}")
        c = self.n_channels or stacked // divisor
        t = stacked // c
        return a.reshape(t, c, h, w).swapaxes(0, 1)  # (C, T, H, W)


class AlbumentationsTransform:
    """Wrap an albumentations transform; every modality and the label go through it as targets."""

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        import albumentations as A

        mods = list(sample["image"])
        for mod in mods:
            if sample["image"][mod].ndim != 3:
                raise ValueError(
                    f"albumentations {type(self.transform).__name__} takes (C, H, W) images, got shape "
                    f"{sample['image'][mod].shape} ({mod}); put FlattenTemporalIntoChannels before it and "
                    "UnflattenTemporalFromChannels after it"
                )
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


GEOMETRIC: tuple[type, ...] = (D4, HorizontalFlip, VerticalFlip, RandomRotate90, RandomCrop, CenterCrop, ToTensorV2)
TEMPORAL: tuple[type, ...] = (FlattenTemporalIntoChannels, UnflattenTemporalFromChannels)
NATIVE: dict[str, type] = {cls.__name__: cls for cls in GEOMETRIC + TEMPORAL}
TEMPORAL_NAMES = {cls.__name__ for cls in TEMPORAL}
# Module paths whose transforms are the native ones: ours, and TerraTorch's with the package renamed.
NATIVE_MODULES = ("", "terratim.data.transforms", "terratim.datasets.transforms")


def _from_spec(spec: dict) -> Callable:
    class_path = spec.get("class_path")
    if not isinstance(class_path, str):
        raise ValueError(f"a transform must be given as {{class_path: ..., init_args: ...}}, got {spec!r}")
    init_args = dict(spec.get("init_args") or {})
    short = class_path.rsplit(".", 1)[-1]
    module = class_path.rsplit(".", 1)[0] if "." in class_path else ""
    from_albumentations = module.startswith("albumentations") and short not in TEMPORAL_NAMES
    if short in NATIVE and (module in NATIVE_MODULES or from_albumentations):
        return NATIVE[short](**init_args)
    if module in NATIVE_MODULES[1:]:
        raise ValueError(f"unknown transform {class_path!r}; {module} has {sorted(NATIVE)}")
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


def native_equivalent(transform: Any) -> Callable | None:
    """The native transform doing what an albumentations instance does (configs may arrive instantiated:
    jsonargparse builds ``albumentations.D4`` itself), or None when there is none."""
    cls = NATIVE.get(type(transform).__name__)
    if cls is None or cls in TEMPORAL:
        return None
    if cls is ToTensorV2:
        return ToTensorV2()
    if issubclass(cls, RandomCrop):
        height, width = getattr(transform, "height", None), getattr(transform, "width", None)
        return cls(height, width) if isinstance(height, int) and isinstance(width, int) else None
    p = getattr(transform, "p", None)
    random_flips = (D4, HorizontalFlip, VerticalFlip, RandomRotate90)
    flips: dict[str, Callable[..., Callable]] = {c.__name__: c for c in random_flips}
    make = flips.get(cls.__name__)
    return make(p=float(p)) if make is not None and isinstance(p, int | float) else None


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
            transforms.append((native_equivalent(spec) or AlbumentationsTransform(spec)) if is_album else spec)
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
