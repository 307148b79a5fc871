"""Segmentation and regression losses with an ignore index, never NaN on an all-ignored batch.

``dice``, ``jaccard`` and ``focal`` follow segmentation_models_pytorch's multiclass semantics (the library the
reference uses): soft scores from the softmax, summed over batch and pixels per class, classes absent from the
target contribute zero, then the mean over classes; ``smooth=0``, ``eps=1e-7``. Focal is the sum over classes
of the binary focal loss (gamma 2) of each class's logit, averaged over the kept pixels. ``lovasz`` is the
Lovasz-Softmax loss (Berman et al. 2018) over all kept pixels of the batch, averaged over the classes present in
the target. A task's ``loss`` may name one loss, a list (summed) or a ``{name: weight}`` dict (weighted sum), as
in TerraTorch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _zero(logits: Tensor) -> Tensor:
    """A zero loss that still depends on the logits (keeps DDP gradients in sync)."""
    return logits.sum() * 0.0


def _valid(target: Tensor, ignore_index: int | None) -> Tensor:
    return target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)


def _soft_overlap(logits: Tensor, target: Tensor, ignore_index: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class intersection, cardinality and target presence. logits (B, K, H, W), target (B, H, W)."""
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1).flatten(2)  # (B, K, P)
    valid = _valid(target, ignore_index)
    target = torch.where(valid, target, 0).flatten(1)  # (B, P)
    valid = valid.flatten(1)  # (B, P)
    onehot = F.one_hot(target, num_classes).permute(0, 2, 1).float()  # (B, K, P)
    mask = valid.unsqueeze(1).float()
    probs, onehot = probs * mask, onehot * mask
    intersection = (probs * onehot).sum(dim=(0, 2))  # (K,)
    cardinality = (probs + onehot).sum(dim=(0, 2))
    return intersection, cardinality, onehot.sum(dim=(0, 2)) > 0


class _OverlapLoss(nn.Module):
    """1 - a soft overlap score, per class then averaged (classes absent from the target count as 0)."""

    def __init__(self, ignore_index: int | None = None, smooth: float = 0.0, eps: float = 1e-7) -> None:
        super().__init__()
        self.ignore_index, self.smooth, self.eps = ignore_index, smooth, eps

    def score(self, intersection: Tensor, cardinality: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        inter, card, present = _soft_overlap(logits, target, self.ignore_index)
        loss = (1 - self.score(inter, card)) * present.float()  # (K,)
        return loss.mean() + _zero(logits)


class DiceLoss(_OverlapLoss):
    """1 - soft Dice, per class then averaged (classes absent from the target count as 0)."""

    def score(self, intersection: Tensor, cardinality: Tensor) -> Tensor:
        return (2 * intersection + self.smooth) / (cardinality + self.smooth).clamp_min(self.eps)


class JaccardLoss(_OverlapLoss):
    """1 - soft IoU, per class then averaged (classes absent from the target count as 0)."""

    def score(self, intersection: Tensor, cardinality: Tensor) -> Tensor:
        return (intersection + self.smooth) / (cardinality - intersection + self.smooth).clamp_min(self.eps)


class FocalLoss(nn.Module):
    """Sum over classes of the binary focal loss FL = -(1 - p_t)^gamma log p_t of each class's logit."""

    def __init__(self, ignore_index: int | None = None, gamma: float = 2.0, alpha: float | None = None) -> None:
        super().__init__()
        self.ignore_index, self.gamma, self.alpha = ignore_index, gamma, alpha

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        valid = _valid(target, self.ignore_index)  # (B, H, W)
        if not valid.any():
            return _zero(logits)
        scores = logits.float().permute(0, 2, 3, 1)[valid]  # (P, K)
        onehot = F.one_hot(target[valid], logits.shape[1]).float()  # (P, K)
        logpt = F.binary_cross_entropy_with_logits(scores, onehot, reduction="none")
        loss = (1 - torch.exp(-logpt)).pow(self.gamma) * logpt
        if self.alpha is not None:
            loss = loss * (self.alpha * onehot + (1 - self.alpha) * (1 - onehot))
        return loss.mean(dim=0).sum()


def lovasz_jaccard_gradient(foreground: Tensor) -> Tensor:
    """Weights of the Lovasz extension of the Jaccard loss for pixels sorted by decreasing error.

    Berman et al. 2018, eq. 8-9 (Algorithm 1): with the first ``i`` sorted pixels taken as mispredicted, the
    Jaccard loss is ``1 - |F minus them| / |F union them|`` (F the foreground pixels); weight ``i`` is its increase
    when pixel ``i`` joins.

    Args:
        foreground: (K, P) 1.0 where the sorted pixel belongs to the class.
    """
    total = foreground.sum(dim=1, keepdim=True)  # (K, 1)
    intersection = total - foreground.cumsum(dim=1)  # (K, P)
    union = total + (1.0 - foreground).cumsum(dim=1)  # (K, P), >= 1 from the first pixel on
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)


class LovaszSoftmaxLoss(nn.Module):
    """Lovasz-Softmax (Berman et al. 2018, eq. 12): the Lovasz extension of each class's Jaccard loss applied to
    the errors ``|1[y = c] - p_c|`` of the softmax probabilities, over all kept pixels of the batch, averaged over
    the classes present in the target (zero when no pixel is kept)."""

    def __init__(self, ignore_index: int | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        valid = _valid(target, self.ignore_index)  # (B, H, W)
        if not valid.any():
            return _zero(logits)
        probs = logits.float().softmax(dim=1).permute(1, 0, 2, 3)[:, valid]  # (K, P)
        classes = torch.arange(logits.shape[1], device=logits.device)[:, None]
        foreground = (target[valid][None] == classes).float()  # (K, P)
        errors, order = (foreground - probs).abs().sort(dim=1, descending=True)  # (K, P)
        per_class = (errors * lovasz_jaccard_gradient(foreground.gather(1, order))).sum(dim=1)  # (K,)
        present = foreground.sum(dim=1) > 0
        return per_class[present].mean() + _zero(logits)


class CrossEntropyLoss(nn.Module):
    """Cross-entropy over the pixels that are not ignored (zero when all are)."""

    def __init__(self, ignore_index: int | None = None, weight: list[float] | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.weight: Tensor | None
        self.register_buffer("weight", torch.tensor(weight, dtype=torch.float32) if weight else None)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        valid = _valid(target, self.ignore_index)
        if not valid.any():
            return _zero(logits)
        ignore = self.ignore_index if self.ignore_index is not None else -100
        return F.cross_entropy(logits.float(), target, weight=self.weight, ignore_index=ignore)


class MaskedRegressionLoss(nn.Module):
    """MSE / MAE / RMSE / Huber over finite target pixels that differ from ``ignore_index``."""

    def __init__(self, kind: str = "mse", ignore_index: float | None = None) -> None:
        super().__init__()
        if kind not in ("mse", "mae", "rmse", "huber"):
            raise ValueError(f"unknown regression loss {kind!r}; choose mse, mae, rmse or huber")
        self.kind, self.ignore_index = kind, ignore_index

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        valid = torch.isfinite(target)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        if not valid.any():
            return _zero(pred)
        p, t = pred.float()[valid], target.float()[valid]
        if self.kind == "mae":
            return F.l1_loss(p, t)
        if self.kind == "huber":
            return F.huber_loss(p, t)
        mse = F.mse_loss(p, t)
        return mse.sqrt() if self.kind == "rmse" else mse


SEGMENTATION_LOSSES: dict[str, Callable[..., nn.Module]] = {
    "ce": CrossEntropyLoss,
    "dice": DiceLoss,
    "jaccard": JaccardLoss,
    "focal": FocalLoss,
    "lovasz": LovaszSoftmaxLoss,
}
REGRESSION_LOSSES = ("mse", "mae", "rmse", "huber")
LossSpec = str | Sequence[str] | Mapping[str, float]


class WeightedSumLoss(nn.Module):
    """``sum_i weight_i * loss_i(output, target)`` over named losses (TerraTorch's loss list or dict)."""

    def __init__(self, losses: Mapping[str, nn.Module], weights: Mapping[str, float]) -> None:
        super().__init__()
        self.losses = nn.ModuleDict(dict(losses))
        self.weights = dict(weights)

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        terms = [self.weights[name] * loss(output, target) for name, loss in self.losses.items()]
        return torch.stack(terms).sum()


def loss_weights(spec: LossSpec) -> dict[str, float]:
    """``{loss name: weight}`` of a ``loss`` option: a name (weight 1), a list (weights 1) or a dict of weights."""
    if isinstance(spec, str):
        return {spec: 1.0}
    if isinstance(spec, Mapping):
        weights = {str(name): float(w) for name, w in spec.items()}
    else:
        names = [str(name) for name in spec]
        if len(set(names)) != len(names):
            raise ValueError(f"loss list {names} names a loss twice")
        weights = dict.fromkeys(names, 1.0)
    if not weights:
        raise ValueError("loss is empty; name at least one loss")
    return weights


def combine_losses(spec: LossSpec, make: Callable[[str], nn.Module]) -> nn.Module:
    """One loss module for a ``loss`` option; ``make`` builds a loss by name."""
    weights = loss_weights(spec)
    if len(weights) == 1 and next(iter(weights.values())) == 1.0:
        return make(next(iter(weights)))
    return WeightedSumLoss({name: make(name) for name in weights}, weights)


def build_segmentation_loss(spec: LossSpec, ignore_index: int | None, class_weights: list[float] | None) -> nn.Module:
    """A segmentation loss (``ce``, ``dice``, ``jaccard``, ``focal``, ``lovasz``), a list of them (summed) or a
    ``{name: weight}`` dict (weighted sum). ``class_weights`` apply to the ``ce`` term, which must be there."""
    weights = loss_weights(spec)
    unknown = [name for name in weights if name not in SEGMENTATION_LOSSES]
    if unknown:
        raise ValueError(f"unknown loss {unknown[0]!r}; choose one of {sorted(SEGMENTATION_LOSSES)}")
    if class_weights is not None and "ce" not in weights:
        raise ValueError(f"class_weights are only supported with loss 'ce', not {list(weights)}")

    def make(name: str) -> nn.Module:
        if name == "ce":
            return CrossEntropyLoss(ignore_index, class_weights)
        return SEGMENTATION_LOSSES[name](ignore_index=ignore_index)

    return combine_losses(weights, make)


def build_regression_loss(spec: LossSpec, ignore_index: float | None) -> nn.Module:
    """A regression loss (``mse``, ``mae``, ``rmse``, ``huber``), a list of them (summed) or a dict of weights."""
    return combine_losses(loss_weights(spec), lambda name: MaskedRegressionLoss(name, ignore_index))
