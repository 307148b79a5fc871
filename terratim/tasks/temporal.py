"""Time series through a single-date backbone, with TerraTorch's ``TemporalWrapper`` semantics.

A chip of T dates ``(B, C, T, H, W)`` (or ``{modality: (B, C, T, H, W)}``) is folded into the batch,
``(B*T, C, H, W)``, so the T backbone passes run as one forward. Each layer's features are unfolded to
``(B, T, ...)`` and pooled over the dates:

- ``mean`` / ``max``: per-feature mean / maximum over the dates; same channels as the backbone.
- ``diff``: first minus second date (exactly two dates, or two subsets); same channels as the backbone.
- ``concat``: the dates side by side along the channels, date-major (date 0's channels first); T x the
  backbone's channels, so ``n_timestamps`` must be known when the model is built.
- ``keep``: no pooling; ``(B, T, N, D)`` per layer (``(B, T, C, h, w)`` for maps), as TerraTorch returns it.

``subset_lengths`` first averages consecutive groups of dates (``[2, 3]``: dates 0-1 and 2-4), then pools
the group means as above. In model arguments these are ``backbone_use_temporal``,
``backbone_temporal_pooling``, ``backbone_temporal_n_timestamps`` and ``backbone_temporal_subset_lengths``
(see :func:`split_temporal_kwargs`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

Pooling = Literal["keep", "concat", "mean", "max", "diff"]
POOLINGS: tuple[str, ...] = ("keep", "concat", "mean", "max", "diff")
OPTION = "backbone_temporal_"  # prefix of the settings in model_args


@dataclass(frozen=True)
class TemporalSettings:
    """How dates are pooled (see the module docstring).

    Args:
        pooling: ``keep``, ``concat``, ``mean``, ``max`` or ``diff``.
        n_timestamps: dates per chip; needed for ``concat`` without subsets, checked against the input.
        subset_lengths: sizes of consecutive date groups averaged before pooling.
    """

    pooling: Pooling = "mean"
    n_timestamps: int | None = None
    subset_lengths: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"{OPTION}pooling: unknown pooling {self.pooling!r}; expected one of {list(POOLINGS)}")
        if self.n_timestamps is not None and (not isinstance(self.n_timestamps, int) or self.n_timestamps < 1):
            raise ValueError(f"{OPTION}n_timestamps must be a positive integer, got {self.n_timestamps!r}")
        if self.subset_lengths is not None:
            self._check_subsets(self.subset_lengths)
        elif self.pooling == "diff" and self.n_timestamps not in (None, 2):
            raise ValueError(
                f"{OPTION}pooling 'diff' needs 2 dates, got {OPTION}n_timestamps={self.n_timestamps}; "
                f"give {OPTION}subset_lengths to split the dates into two groups"
            )
        if self.pooling == "concat" and self.groups is None:
            raise ValueError(
                f"{OPTION}pooling 'concat' needs {OPTION}n_timestamps (the dates per chip) "
                "to know the decoder's input channels"
            )

    def _check_subsets(self, lengths: Sequence[int]) -> None:
        if not lengths or any(not isinstance(n, int) or n < 1 for n in lengths):
            raise ValueError(f"{OPTION}subset_lengths must be a non-empty list of positive integers, got {lengths!r}")
        if self.pooling == "diff" and len(lengths) != 2:
            raise ValueError(
                f"{OPTION}pooling 'diff' needs exactly 2 subsets in {OPTION}subset_lengths, got {list(lengths)}"
            )
        if self.n_timestamps is not None and sum(lengths) != self.n_timestamps:
            raise ValueError(
                f"{OPTION}subset_lengths {list(lengths)} sum to {sum(lengths)}, "
                f"but {OPTION}n_timestamps is {self.n_timestamps}"
            )

    @property
    def groups(self) -> int | None:
        """Date groups left after subset averaging (the ``concat`` channel factor); None when not fixed."""
        return len(self.subset_lengths) if self.subset_lengths is not None else self.n_timestamps


def split_temporal_kwargs(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], TemporalSettings | None]:
    """Backbone keyword arguments -> (those for the backbone builder, temporal settings or None).

    ``kwargs`` are ``backbone_<arg>`` entries without their prefix: ``use_temporal``, ``temporal_pooling``,
    ``temporal_n_timestamps`` and ``temporal_subset_lengths`` are taken out.
    """
    rest = {k: v for k, v in kwargs.items() if k != "use_temporal" and not k.startswith("temporal_")}
    temporal = {k[len("temporal_") :]: v for k, v in kwargs.items() if k.startswith("temporal_")}
    if not kwargs.get("use_temporal", False):
        if temporal:
            names = [OPTION + k for k in sorted(temporal)]
            raise ValueError(f"model_args {names} need backbone_use_temporal: true")
        return rest, None
    known = {"pooling", "n_timestamps", "subset_lengths"}
    unknown = sorted(set(temporal) - known)
    if unknown:
        hint = " (use backbone_temporal_pooling: concat)" if "concat" in unknown else ""
        raise ValueError(
            f"model_args {[OPTION + k for k in unknown]} not supported; expected "
            f"{[OPTION + k for k in sorted(known)]}{hint}"
        )
    subsets = temporal.get("subset_lengths")
    settings = TemporalSettings(
        pooling=temporal.get("pooling", "mean"),
        n_timestamps=temporal.get("n_timestamps"),
        subset_lengths=tuple(subsets) if subsets is not None else None,
    )
    return rest, settings


def fold_dates(x: Tensor | Mapping[str, Tensor]) -> tuple[Tensor | dict[str, Tensor], int, int]:
    """``(B, C, T, H, W)`` (or a dict of them, one B and T) -> ``(B*T, C, H, W)`` date-major per chip, B, T."""
    named = dict(x) if isinstance(x, Mapping) else {"input": x}
    shapes = {name: tuple(v.shape) for name, v in named.items()}
    bad = {name: s for name, s in shapes.items() if len(s) != 5}
    if bad:
        raise ValueError(
            f"backbone_use_temporal: expected (B, C, T, H, W) inputs, got shapes {bad}; "
            "stack the dates along dimension 2"
        )
    if len({(s[0], s[2]) for s in shapes.values()}) > 1:
        raise ValueError(f"backbone_use_temporal: all inputs need the same batch size and dates, got {shapes}")
    b, _, t = next(iter(shapes.values()))[:3]
    folded = {name: v.transpose(1, 2).reshape(b * t, *v.shape[1:2], *v.shape[3:]) for name, v in named.items()}
    return (folded if isinstance(x, Mapping) else folded["input"]), b, t  # (B*T, C, H, W)


class TemporalBackbone(nn.Module):
    """A backbone applied to every date of a chip in one batched forward, its features pooled over dates.

    Args:
        encoder: a backbone returning a list of per-layer features, each ``(B, N, D)`` tokens, a
            ``(B, D, h, w)`` map, or a dict of those per modality (``merge_method="dict"``).
        settings: the pooling (see :class:`TemporalSettings`).
    """

    def __init__(self, encoder: nn.Module, settings: TemporalSettings) -> None:
        super().__init__()
        self.encoder = encoder
        self.settings = settings
        channels = list(getattr(encoder, "out_channels", []))
        factor = settings.groups if settings.pooling == "concat" else 1
        self.out_channels = [c * int(factor or 1) for c in channels]
        self._takes_generator = "generator" in inspect.signature(encoder.forward).parameters

    def forward(self, x: Tensor | Mapping[str, Tensor], generator: torch.Generator | None = None) -> list[Any]:
        """Per-layer pooled features of ``(B, C, T, H, W)`` inputs (``generator`` goes to the encoder)."""
        folded, b, t = fold_dates(x)
        self._check_dates(t)
        if self._takes_generator:
            features = self.encoder(folded, generator=generator)
        else:
            features = self.encoder(folded)
        return [self._pool_layer(f, b, t) for f in features]

    def _check_dates(self, t: int) -> None:
        """Dates must match ``subset_lengths``, or ``n_timestamps`` for ``concat`` (other poolings take any T)."""
        subsets = self.settings.subset_lengths
        if subsets is not None and t != sum(subsets):
            raise ValueError(
                f"{OPTION}subset_lengths {list(subsets)} cover {sum(subsets)} dates, but the input has {t}"
            )
        if self.settings.pooling == "concat" and subsets is None and t != self.settings.n_timestamps:
            raise ValueError(
                f"{OPTION}n_timestamps is {self.settings.n_timestamps} (pooling 'concat'), but the input has {t} dates"
            )
        if self.settings.pooling == "diff" and self.settings.subset_lengths is None and t != 2:
            raise ValueError(
                f"{OPTION}pooling 'diff' needs 2 dates, but the input has {t}; "
                f"give {OPTION}subset_lengths to split them into two groups"
            )

    def _pool_layer(self, feature: Any, b: int, t: int) -> Any:
        if isinstance(feature, Mapping):
            return {name: self._pool_layer(value, b, t) for name, value in feature.items()}
        dated = feature.reshape(b, t, *feature.shape[1:])  # (B, T, N, D) or (B, T, D, h, w)
        return pool_dates(dated, self.settings.pooling, self.settings.subset_lengths)


def pool_dates(dated: Tensor, pooling: str, subset_lengths: Sequence[int] | None = None) -> Tensor:
    """Pool ``(B, T, ...)`` over dates: tokens ``(B, T, N, D)`` concatenate along D, maps ``(B, T, D, h, w)``
    along D, so ``concat`` gives ``(B, N, T*D)`` / ``(B, T*D, h, w)`` with date 0's channels first."""
    if subset_lengths is not None:
        groups = torch.split(dated, list(subset_lengths), dim=1)
        dated = torch.stack([g.mean(dim=1) for g in groups], dim=1)  # (B, S, ...) subset means
    if pooling == "keep":
        return dated
    if pooling == "mean":
        return dated.mean(dim=1)
    if pooling == "max":
        return dated.amax(dim=1)
    if pooling == "diff":
        return dated[:, 0] - dated[:, 1]
    if pooling == "concat":
        if dated.ndim == 4:  # tokens (B, T, N, D) -> (B, N, T*D)
            return dated.permute(0, 2, 1, 3).flatten(2)
        return dated.flatten(1, 2)  # maps (B, T, D, h, w) -> (B, T*D, h, w)
    raise ValueError(f"{OPTION}pooling: unknown pooling {pooling!r}; expected one of {list(POOLINGS)}")


def apply_temporal(backbone: nn.Module, settings: TemporalSettings | None) -> nn.Module:
    """Wrap ``backbone`` for an encoder-decoder model (unchanged when ``settings`` is None).

    ``keep`` is refused here: it returns ``(B, T, N, D)`` per layer, which the necks and decoders do not
    take (TerraTorch's docs say the same); use :class:`TemporalBackbone` directly for that.
    """
    if settings is None:
        return backbone
    if settings.pooling == "keep":
        raise ValueError(
            f"{OPTION}pooling 'keep' returns (B, T, N, D) per layer, which the necks and decoders "
            "cannot take; use concat, mean, max or diff"
        )
    if not getattr(backbone, "out_channels", None):
        raise ValueError("backbone_use_temporal: the backbone has no out_channels list; cannot wire the necks")
    return TemporalBackbone(backbone, settings)
