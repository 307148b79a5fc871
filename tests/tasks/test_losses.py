"""Lovasz-Softmax against a brute-force Lovasz extension, and TerraTorch's loss lists and weighted dicts."""

from __future__ import annotations

import itertools

import pytest
import torch

from terratim.tasks import PixelwiseRegressionTask, SemanticSegmentationTask
from terratim.tasks.losses import (
    CrossEntropyLoss,
    LovaszSoftmaxLoss,
    MaskedRegressionLoss,
    WeightedSumLoss,
    build_regression_loss,
    build_segmentation_loss,
)

TINY = {"backbone": "terramind_v1_tiny", "backbone_pretrained": False, "backbone_modalities": ["S2L2A"],
        "decoder": "UNetDecoder", "decoder_channels": [32, 16, 8, 8]}


def jaccard_set_loss(mispredicted: set[int], foreground: set[int]) -> float:
    """Berman et al. 2018, eq. 5: Delta_J(M) = |M| / |F union M| (0 for the empty set)."""
    return len(mispredicted) / len(foreground | mispredicted) if mispredicted else 0.0


def lovasz_extension_brute_force(errors: list[float], foreground: set[int]) -> float:
    """The Lovasz extension as a Choquet integral: sum over the distinct error levels v_1 > v_2 > ... > 0 of
    (v_j - v_{j+1}) * Delta_J({i : e_i >= v_j}), in float64 Python arithmetic (no sorting of pixels, no cumsum)."""
    levels = sorted({e for e in errors if e > 0}, reverse=True) + [0.0]
    total = 0.0
    for upper, lower in itertools.pairwise(levels):
        above = {i for i, e in enumerate(errors) if e >= upper}
        total += (upper - lower) * jaccard_set_loss(above, foreground)
    return total


def lovasz_softmax_brute_force(logits: torch.Tensor, target: torch.Tensor, ignore: int | None) -> float:
    probs = logits.double().softmax(dim=1).permute(1, 0, 2, 3).reshape(logits.shape[1], -1)  # (K, P)
    labels = target.reshape(-1).tolist()
    keep = [i for i, y in enumerate(labels) if y != ignore]
    losses = []
    for c in range(logits.shape[1]):
        foreground = {j for j, i in enumerate(keep) if labels[i] == c}
        if not foreground:
            continue  # classes absent from the target are left out ("present")
        errors = [abs(float(labels[i] == c) - float(probs[c, i])) for i in keep]
        losses.append(lovasz_extension_brute_force(errors, foreground))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lovasz_softmax_matches_the_brute_force_extension(seed: int):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 3, 4, generator=gen) * 2
    target = torch.randint(0, 3, (2, 3, 4), generator=gen)
    target[0, 0, :2] = -1  # ignored pixels
    got = LovaszSoftmaxLoss(ignore_index=-1)(logits, target)
    assert float(got) == pytest.approx(lovasz_softmax_brute_force(logits, target, -1), rel=1e-5, abs=1e-6)


def test_lovasz_extension_is_tight_and_zero_for_perfect_predictions():
    """On 0/1 errors the extension equals the Jaccard loss of the mispredicted set; confident correct logits
    give (almost) zero; a batch with every pixel ignored gives an exact zero with a gradient path."""
    target = torch.tensor([[[0, 1], [1, 1]]])
    onehot = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float()
    assert float(LovaszSoftmaxLoss()(onehot * 50.0, target)) == pytest.approx(0.0, abs=1e-6)
    wrong_first = onehot.clone()
    wrong_first[0, :, 0, 0] = torch.tensor([0.0, 1.0])  # pixel 0 (class 0) predicted as class 1
    # class 0: F = {0}, M = {0} -> 1; class 1: F = {1, 2, 3}, M = {0} -> 1/4; mean 0.625
    assert float(LovaszSoftmaxLoss()(wrong_first * 50.0, target)) == pytest.approx(0.625, abs=1e-6)
    logits = torch.randn(1, 2, 2, 2, requires_grad=True)
    zero = LovaszSoftmaxLoss(ignore_index=-1)(logits, torch.full((1, 2, 2), -1))
    zero.backward()
    assert float(zero.detach()) == 0.0 and logits.grad is not None


def test_loss_list_sums_and_dict_weighs_the_named_losses():
    gen = torch.Generator().manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 4, generator=gen), torch.randint(0, 3, (2, 4, 4), generator=gen)
    ce, lovasz = CrossEntropyLoss(-1)(logits, target), LovaszSoftmaxLoss(-1)(logits, target)
    summed = build_segmentation_loss(["ce", "lovasz"], -1, None)
    assert isinstance(summed, WeightedSumLoss)
    assert float(summed(logits, target)) == pytest.approx(float(ce + lovasz), rel=1e-6)
    weighted = build_segmentation_loss({"ce": 0.25, "lovasz": 2.0}, -1, None)
    assert float(weighted(logits, target)) == pytest.approx(float(0.25 * ce + 2.0 * lovasz), rel=1e-6)
    assert isinstance(build_segmentation_loss("ce", -1, None), CrossEntropyLoss)  # one name: the loss itself

    pred, values = torch.randn(2, 4, 4, generator=gen), torch.randn(2, 4, 4, generator=gen)
    values[0, 0, 0] = float("nan")  # left out of every term
    rmse, mse = MaskedRegressionLoss("rmse")(pred, values), MaskedRegressionLoss("mse")(pred, values)
    both = build_regression_loss({"rmse": 0.5, "mse": 0.5}, None)(pred, values)
    assert float(both) == pytest.approx(float(0.5 * rmse + 0.5 * mse), rel=1e-6)


@pytest.mark.parametrize(
    ("loss", "class_weights", "message"),
    [
        (["ce", "bogus"], None, r"unknown loss 'bogus'; choose one of \['ce', 'dice', 'focal', 'jaccard', 'lovasz'\]"),
        (["ce", "ce"], None, r"loss list \['ce', 'ce'\] names a loss twice"),
        ([], None, "loss is empty"),
        (["dice", "lovasz"], [1.0, 2.0], r"class_weights are only supported with loss 'ce', not \['dice', 'lovasz'\]"),
    ],
)
def test_bad_segmentation_loss_options(loss, class_weights, message):
    with pytest.raises(ValueError, match=message):
        build_segmentation_loss(loss, -1, class_weights)


def test_tasks_take_loss_lists_and_dicts():
    seg = SemanticSegmentationTask({**TINY, "num_classes": 2}, loss=["ce", "lovasz"], ignore_index=-1)
    assert isinstance(seg.criterion, WeightedSumLoss) and set(seg.criterion.losses) == {"ce", "lovasz"}
    reg = PixelwiseRegressionTask(TINY, loss={"rmse": 0.5, "mse": 0.5})
    assert isinstance(reg.criterion, WeightedSumLoss) and reg.criterion.weights == {"rmse": 0.5, "mse": 0.5}
    with pytest.raises(ValueError, match="unknown regression loss 'ce'"):
        PixelwiseRegressionTask(TINY, loss=["mse", "ce"])
