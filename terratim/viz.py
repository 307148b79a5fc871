"""Pictures of modalities: one colour scheme per modality and a one-row panel figure.

``colorize`` turns a (C, H, W) array in physical units into an (H, W, 3) RGB image in [0, 1]:

=============== ==================================================================================
S2L2A / S2L1C   true colour (RED, GREEN, BLUE), 2-98 percentile stretch per band
S2RGB           as stored, divided by 255
S1GRD / S1RTC   false colour: R = VV, G = VH, B = VV/VH ratio (VV - VH in dB), stretched per channel
DEM             ``terrain`` colormap (land part) between the 2nd and 98th percentile of elevation
NDVI            diverging ``RdYlGn`` over the fixed range -1..1
LULC            ``modalities.LULC_COLORS`` per class, from class ids (H, W) / (1, H, W) or logits (10, H, W)
=============== ==================================================================================

Any other class map (a fine-tuned task's prediction or label) is drawn with a :class:`ClassScheme`: the task's
``class_names`` and one colour per class (``class_scheme``), with a legend of those names.

NaN pixels (nodata) and invalid class ids (an ignore index such as -1) are drawn black. ``save_panel`` draws
several arrays side by side; panels of the same modality share one stretch so that an input and its
reconstruction compare fairly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from terratim.modalities import LULC_CLASSES, resolve

Limits = np.ndarray  # (C, 2): per-channel (low, high) of a linear stretch
PERCENTILES = (2.0, 98.0)
NDVI_RANGE = (-1.0, 1.0)


def _hex_to_rgb(color: str) -> tuple[float, float, float]:
    color = color.lstrip("#")
    return tuple(int(color[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]


@dataclass(frozen=True)
class ClassScheme:
    """How a class map is drawn: a name and a ``#rrggbb`` colour per class id (0..K-1)."""

    names: tuple[str, ...]
    colors: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.names or len(self.names) != len(self.colors):
            raise ValueError(
                f"a class scheme needs one colour per class: {len(self.names)} names, {len(self.colors)} colours"
            )

    @property
    def rgb(self) -> np.ndarray:
        """(K, 3) float32 colours in [0, 1]."""
        return np.array([_hex_to_rgb(c) for c in self.colors], dtype=np.float32)

    def legend_labels(self) -> list[str]:
        """``"<id> <name>"`` per class (just the name where it is the default ``class <id>``)."""
        return [n if n == f"class {i}" else f"{i} {n}" for i, n in enumerate(self.names)]


def modality_scheme(name: str) -> ClassScheme:
    """The class scheme of a categorical modality (its record's class names and colours)."""
    modality = resolve(name)
    if not modality.is_categorical:
        raise ValueError(f"{modality.name} is not a class map")
    return ClassScheme(modality.classes, modality.colors)


def class_scheme(num_classes: int, class_names: Sequence[str] | None = None) -> ClassScheme:
    """The scheme of a task's class map: its ``class_names`` (default ``class 0`` .. ``class K-1``) and
    colours from matplotlib's ``tab10`` (up to 10 classes), ``tab20`` (up to 20) or ``turbo`` (more).
    """
    import matplotlib
    from matplotlib.colors import to_hex

    if num_classes < 1:
        raise ValueError(f"a class map needs at least one class, got num_classes={num_classes}")
    names = tuple(class_names) if class_names is not None else tuple(f"class {i}" for i in range(num_classes))
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class_names for {num_classes} classes")
    if num_classes <= 20:
        cmap = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
        colors = [cmap(i) for i in range(num_classes)]
    else:
        colors = list(matplotlib.colormaps["turbo"](np.linspace(0.0, 1.0, num_classes)))
    return ClassScheme(names, tuple(to_hex(c) for c in colors))


def _as_chw(name: str, array: np.ndarray, channels: int) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] != channels:
        raise ValueError(f"{name}: expected an array of shape ({channels}, H, W), got {tuple(array.shape)}")
    return array


def _display_channels(name: str, array: np.ndarray) -> np.ndarray:
    """The channels that are stretched for display, (K, H, W) in physical units."""
    modality = resolve(name)
    array = _as_chw(modality.name, array, modality.num_bands)
    if modality.name in ("S2L2A", "S2L1C"):
        return array[[modality.band_index(b) for b in ("RED", "GREEN", "BLUE")]]
    if modality.name in ("S1GRD", "S1RTC"):
        vv, vh = array[modality.band_index("VV")], array[modality.band_index("VH")]
        return np.stack([vv, vh, vv - vh])  # dB, so the VV/VH ratio is a difference
    return array


def stretch_limits(name: str, arrays: Sequence[np.ndarray]) -> Limits | None:
    """Per-channel percentile limits over one or more arrays of modality ``name`` (None: fixed scheme)."""
    modality = resolve(name)
    if modality.name not in ("S2L2A", "S2L1C", "S1GRD", "S1RTC", "DEM"):
        return None
    per_array = [_display_channels(name, a) for a in arrays]  # each (K, H, W)
    return percentile_limits(np.concatenate([c.reshape(c.shape[0], -1) for c in per_array], axis=1))


def percentile_limits(channels: np.ndarray) -> Limits:
    """(K, ...) values -> (K, 2) per-channel 2nd and 98th percentiles of the finite values ((0, 0) where none)."""
    channels = channels.reshape(channels.shape[0], -1)  # (K, pixels)
    limits = np.zeros((channels.shape[0], 2), dtype=np.float32)
    for c, values in enumerate(channels):
        finite = values[np.isfinite(values)]
        if finite.size:
            limits[c] = np.percentile(finite, PERCENTILES)
    return limits


def stretch(channels: np.ndarray, limits: Limits) -> np.ndarray:
    """(K, H, W) -> (K, H, W) in [0, 1], each channel linear between its limits (NaN stays NaN)."""
    low, high = limits[:, 0, None, None], limits[:, 1, None, None]
    span = np.where(high > low, high - low, 1.0)
    return np.clip((channels - low) / span, 0.0, 1.0)


def _cmap(name: str):
    """A matplotlib colormap; ``terrain`` without its sea-blue first fifth, since land heights are drawn."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    if name == "terrain":
        land = matplotlib.colormaps["terrain"](np.linspace(0.22, 1.0, 256))
        return ListedColormap(land, name="terrain_land")
    return matplotlib.colormaps[name]


def _colormap(cmap: str, values: np.ndarray, low: float, high: float) -> np.ndarray:
    span = high - low if high > low else 1.0
    scaled = np.clip((values - low) / span, 0.0, 1.0)
    return _cmap(cmap)(np.nan_to_num(scaled))[..., :3].astype(np.float32)


def class_ids(array: np.ndarray, num_classes: int, what: str = "class map") -> np.ndarray:
    """Class ids (H, W) from ids (H, W) / (1, H, W) or logits (K, H, W); ids outside 0..K-1 become -1."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == num_classes and num_classes > 1:
        logits = np.asarray(array, dtype=np.float32)
        classes = np.argmax(np.nan_to_num(logits, nan=-np.inf), axis=0)
        return np.where(np.isnan(logits).any(axis=0), -1, classes)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(
            f"{what}: expected class ids (H, W) or (1, H, W), or logits ({num_classes}, H, W); got {tuple(array.shape)}"
        )
    values = np.asarray(array, dtype=np.float64)
    valid = np.isfinite(values) & (values >= 0) & (values < num_classes) & (values == np.round(values))
    return np.where(valid, np.nan_to_num(values), -1).astype(np.int64)


def lulc_classes(array: np.ndarray) -> np.ndarray:
    """Class ids (H, W) from class ids (H, W) / (1, H, W) or logits (10, H, W); invalid ids become -1."""
    return class_ids(array, len(LULC_CLASSES), "LULC")


def colorize_classes(array: np.ndarray, scheme: ClassScheme, what: str = "class map") -> np.ndarray:
    """Class ids or logits -> (H, W, 3) float32 RGB in the scheme's colours; invalid ids black."""
    classes = class_ids(array, len(scheme.names), what)  # (H, W)
    rgb = scheme.rgb[np.clip(classes, 0, None)]
    rgb[classes < 0] = 0.0
    return rgb


def colorize(modality: str, array: np.ndarray, limits: Limits | None = None) -> np.ndarray:
    """(C, H, W) physical-unit array of ``modality`` -> (H, W, 3) float32 RGB in [0, 1] for ``imshow``.

    Args:
        modality: modality name (any accepted alias).
        array: pixels in physical units; LULC also accepts (H, W) class ids or (10, H, W) logits.
        limits: per-channel stretch limits from :func:`stretch_limits` (default: this array's own).
    """
    mod = resolve(modality)
    if mod.is_categorical:
        return colorize_classes(array, modality_scheme(mod.name), mod.name)
    if mod.kind == "sequence":
        raise ValueError(f"{mod.name} is not an image and has no colour scheme")
    channels = _display_channels(mod.name, array)  # (K, H, W)
    nodata = ~np.isfinite(channels).all(axis=0)  # (H, W)
    if mod.name == "S2RGB":
        rgb = np.clip(np.moveaxis(channels, 0, -1) / 255.0, 0.0, 1.0)
    elif mod.name == "NDVI":
        rgb = _colormap("RdYlGn", channels[0], *NDVI_RANGE)
    else:
        limits = stretch_limits(mod.name, [array]) if limits is None else np.asarray(limits, np.float32)
        if limits is None:
            raise ValueError(f"{mod.name} has no display stretch")
        if mod.name == "DEM":
            rgb = _colormap("terrain", channels[0], float(limits[0, 0]), float(limits[0, 1]))
        else:
            rgb = np.moveaxis(stretch(channels, limits), 0, -1)
    rgb = np.nan_to_num(rgb.astype(np.float32))
    rgb[nodata] = 0.0
    return rgb


def _colorbar(fig, ax, cmap: str, low: float, high: float, label: str) -> None:
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    mappable = ScalarMappable(norm=matplotlib.colors.Normalize(low, high), cmap=_cmap(cmap))
    bar = fig.colorbar(mappable, ax=ax, orientation="horizontal", fraction=0.046, pad=0.04)
    bar.ax.xaxis.set_major_locator(MaxNLocator(5))
    bar.ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def class_legend_handles(scheme: ClassScheme) -> list:
    """One colour patch per class, labelled by :meth:`ClassScheme.legend_labels`."""
    from matplotlib.patches import Patch

    return [
        Patch(facecolor=c, edgecolor="0.4", label=label)
        for c, label in zip(scheme.colors, scheme.legend_labels(), strict=True)
    ]


def _class_legend(ax, scheme: ClassScheme) -> None:
    ax.legend(
        handles=class_legend_handles(scheme),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=2 if len(scheme.names) > 2 else 1,
        fontsize=7,
        frameon=False,
        handlelength=1.2,
        columnspacing=0.8,
    )


Panel = tuple[str, "str | ClassScheme", np.ndarray]  # (caption, modality name or class scheme, array)


def _scheme_of(name: str | ClassScheme) -> ClassScheme | None:
    """The class scheme a panel is drawn with (LULC's own), or None for a continuous modality."""
    if isinstance(name, ClassScheme):
        return name
    return modality_scheme(name) if resolve(name).is_categorical else None


def panel_figure(panels: Sequence[Panel], title: str | None = None):
    """A matplotlib ``Figure`` with ``panels`` in one row (see :func:`save_panel`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("save_panel needs at least one panel")
    by_modality: dict[str, list[np.ndarray]] = {}
    for _, name, array in panels:
        if isinstance(name, str) and _scheme_of(name) is None:
            by_modality.setdefault(resolve(name).name, []).append(array)
    shared = {name: stretch_limits(name, arrays) for name, arrays in by_modality.items()}
    has_legend = any(_scheme_of(name) is not None for _, name, _ in panels)
    fig = Figure(figsize=(3.4 * len(panels), 4.8 if has_legend else 3.9))
    FigureCanvasAgg(fig)  # the Agg backend, without pyplot's global state
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (caption, name, array) in zip(axes, panels, strict=True):
        ax.set_title(caption, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        scheme = _scheme_of(name)
        if scheme is not None:
            ax.imshow(colorize_classes(array, scheme), interpolation="nearest")
            _class_legend(ax, scheme)
            continue
        canonical = resolve(cast(str, name)).name  # not a class scheme, so a modality name
        limits = shared[canonical]
        ax.imshow(colorize(canonical, array, limits=limits), interpolation="nearest")
        if canonical == "DEM" and limits is not None:
            _colorbar(fig, ax, "terrain", float(limits[0, 0]), float(limits[0, 1]), "elevation (m)")
        elif canonical == "NDVI":
            _colorbar(fig, ax, "RdYlGn", *NDVI_RANGE, "NDVI")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def save_panel(
    path: str | os.PathLike,
    panels: Sequence[Panel],
    title: str | None = None,
) -> Path:
    """Draw ``panels`` in one row and save the figure as an image (PNG by the file suffix).

    Args:
        path: output file; the parent folder is created.
        panels: ``(caption, modality name, array)`` each, arrays as accepted by :func:`colorize`; or
            ``(caption, ClassScheme, class ids or logits)`` for a task's class map, drawn with the scheme's
            colours and a legend of its class names.
        title: optional figure title.

    Returns:
        The written path.
    """
    fig = panel_figure(panels, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
