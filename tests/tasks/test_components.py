"""Necks, decoders, heads, losses, model assembly and the regression / classification tasks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from terratim.tasks import ClassificationTask, PixelwiseRegressionTask, SemanticSegmentationTask, build_model
from terratim.tasks.decoders import FCNDecoder, UNetDecoder, UperNetDecoder
from terratim.tasks.losses import CrossEntropyLoss, DiceLoss, FocalLoss, JaccardLoss, MaskedRegressionLoss
from terratim.tasks.necks import NeckSequence

PYRAMID = [
    {"name": "SelectIndices", "indices": [0, 1, 2, 3]},
    {"name": "ReshapeTokensToImage"},
    {"name": "LearnedInterpolateToPyramidal"},
]


class StandIn(nn.Module):
    """A 4-layer token backbone: (B, C, H, W) per modality -> 4 x (B, (H/16)(W/16), D), mean-merged."""

    def __init__(self, dim: int = 32, channels: dict[str, int] | None = None) -> None:
        super().__init__()
        self.proj = nn.ModuleDict({m: nn.Conv2d(c, dim, 16, 16) for m, c in (channels or {"S1GRD": 2}).items()})
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(4))
        self.out_channels = [dim] * 4

    def forward(self, x: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        tokens = torch.stack([self.proj[m](t).flatten(2).transpose(1, 2) for m, t in x.items()]).mean(0)
        outs = []
        for layer in self.layers:
            tokens = layer(tokens).relu()
            outs.append(tokens)
        return outs


def test_reshape_tokens_rectangular_grid_keeps_row_major_order():
    necks = NeckSequence([{"name": "ReshapeTokensToImage"}], [4])
    tokens = torch.arange(2 * 6 * 4, dtype=torch.float32).view(2, 6, 4)  # (B, N=2*3, D)
    (grid,) = necks([tokens], (2, 3))
    assert grid.shape == (2, 4, 2, 3)
    assert torch.equal(grid[:, :, 1, 2], tokens[:, 5])  # token (row 1, col 2) = index 1*3+2
    with pytest.raises(ValueError, match="do not fill the 3x3 token grid"):
        necks([tokens], (3, 3))


def test_pyramid_neck_and_unet_decoder_shapes_match_the_spec():
    """224 input, D=192: pyramid 56/28/14/7 with D/4, D/2, D, D; UNet output channels[-1] at 56x56."""
    necks = NeckSequence(PYRAMID, [192] * 4)
    assert necks.out_channels == [48, 96, 192, 192]
    feats = necks([torch.randn(1, 196, 192) for _ in range(4)], (14, 14))
    assert [tuple(f.shape[-3:]) for f in feats] == [(48, 56, 56), (96, 28, 28), (192, 14, 14), (192, 7, 7)]
    unet = UNetDecoder(necks.out_channels, [256, 128, 64, 32])
    assert [b.conv1[0].in_channels for b in unet.blocks] == [192 + 192, 256 + 96, 128 + 48, 64]
    assert unet(feats).shape == (1, 32, 56, 56)
    assert UperNetDecoder(necks.out_channels, 64).eval()(feats).shape == (1, 64, 56, 56)
    assert FCNDecoder(necks.out_channels, 16)(feats).shape == (1, 16, 7, 7)


@pytest.mark.parametrize("decoder", ["UNetDecoder", "UperNetDecoder", "FCNDecoder"])
def test_model_output_matches_odd_rectangular_input(decoder: str):
    args = {"backbone": StandIn(), "necks": PYRAMID, "decoder": decoder, "num_classes": 3, "head_dropout": 0.1}
    model = build_model("EncoderDecoderFactory", args, "segmentation").eval()
    out = model({"S1GRD": torch.randn(2, 2, 40, 72)})  # padded to 48x80 internally
    assert out.shape == (2, 3, 40, 72) and torch.isfinite(out).all()


def test_real_tiny_backbone_on_rectangular_input():
    args = {"backbone": "terramind_v1_tiny", "backbone_modalities": ["S1GRD"], "backbone_img_size": 64,
            "necks": [dict(n, indices=[2, 5, 8, 11]) if n["name"] == "SelectIndices" else n for n in PYRAMID],
            "decoder": "UNetDecoder", "decoder_channels": [64, 32, 16, 8], "num_classes": 2}
    model = build_model("EncoderDecoderFactory", args, "segmentation").eval()
    assert model({"S1GRD": torch.randn(1, 2, 32, 64)}).shape == (1, 2, 32, 64)


def test_unknown_and_unsupported_model_args_raise():
    base = {"backbone": "terramind_v1_tiny", "num_classes": 2}
    with pytest.raises(ValueError, match=r"does not take \['backbone_bogus'\]; it takes .*backbone_modalities"):
        build_model("EncoderDecoderFactory", {**base, "backbone_bogus": 1}, "segmentation")
    with pytest.raises(ValueError, match="auxiliary decoders"):
        build_model("EncoderDecoderFactory", {**base, "aux_decoders": []}, "segmentation")
    with pytest.raises(ValueError, match="unknown model_args key 'decoer'"):
        build_model("EncoderDecoderFactory", {**base, "decoer": "UNetDecoder"}, "segmentation")
    with pytest.raises(ValueError, match="unknown neck"):
        build_model("EncoderDecoderFactory", {"backbone": StandIn(), "necks": [{"name": "Nope"}], "num_classes": 2},
                    "segmentation")


def test_dice_and_jaccard_follow_smp_multiclass_semantics():
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 2, (2, 4, 4))  # class 2 absent -> contributes 0
    target[0, 0, 0] = -1
    probs = logits.softmax(1)
    valid = (target != -1).unsqueeze(1).float()
    onehot = F.one_hot(target.clamp_min(0), 3).permute(0, 3, 1, 2).float() * valid
    inter = (probs * valid * onehot).sum((0, 2, 3))
    card = (probs * valid + onehot).sum((0, 2, 3))
    present = torch.tensor([1.0, 1.0, 0.0])
    dice = ((1 - 2 * inter / card) * present).mean()
    iou = ((1 - inter / (card - inter)) * present).mean()
    assert DiceLoss(-1)(logits, target).item() == pytest.approx(dice.item(), rel=1e-5)
    assert JaccardLoss(-1)(logits, target).item() == pytest.approx(iou.item(), rel=1e-5)
    perfect = F.one_hot(target.clamp_min(0), 3).permute(0, 3, 1, 2).float() * 50
    assert DiceLoss(-1)(perfect, target).item() < 1e-6


def test_focal_and_ce_against_direct_formulas():
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    target[1] = -1
    keep = target != -1
    assert CrossEntropyLoss(-1)(logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target, ignore_index=-1).item(), rel=1e-6
    )
    scores = logits.permute(0, 2, 3, 1)[keep]
    onehot = F.one_hot(target[keep], 3).float()
    p = scores.sigmoid()
    pt = p * onehot + (1 - p) * (1 - onehot)
    expected = (-((1 - pt) ** 2) * pt.log()).mean(0).sum()
    assert FocalLoss(-1)(logits, target).item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.parametrize(
    "loss", [CrossEntropyLoss(-1), DiceLoss(-1), JaccardLoss(-1), FocalLoss(-1), MaskedRegressionLoss("mse", -1)]
)
def test_all_ignored_target_gives_zero_loss_not_nan(loss: nn.Module):
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), -1)
    out = loss(logits[:, 0], target.float()) if isinstance(loss, MaskedRegressionLoss) else loss(logits, target)
    assert out.item() == 0.0
    out.backward()
    assert torch.isfinite(logits.grad).all()


def _batch(mask: torch.Tensor) -> dict:
    return {"image": {"S1GRD": torch.randn(mask.shape[0], 2, 32, 32)}, "mask": mask}


def test_segmentation_task_step_and_freezing():
    args = {"backbone": StandIn(), "necks": PYRAMID, "decoder": "UNetDecoder", "decoder_channels": [16, 8, 8, 8],
            "num_classes": 2}
    task = SemanticSegmentationTask(args, loss="dice", ignore_index=-1, freeze_backbone=True, freeze_decoder=True)
    assert not any(p.requires_grad for p in task.model.backbone.parameters())
    assert not any(p.requires_grad for p in task.model.decoder.parameters())
    assert all(p.requires_grad for p in task.model.head.parameters())
    loss = task.training_step(_batch(torch.full((2, 32, 32), -1)), 0)  # an all-ignore batch
    assert loss.item() == 0.0


def test_regression_task_masks_nan_targets():
    args = {"backbone": StandIn(), "necks": PYRAMID, "decoder": "FCNDecoder", "decoder_channels": 8}
    task = PixelwiseRegressionTask(args, loss="rmse")
    target = torch.randn(2, 32, 32)
    target[0] = float("nan")
    loss = task.training_step(_batch(target), 0)
    assert math.isfinite(loss.item()) and loss.item() > 0
    assert task.predictions(task(_batch(target)["image"])).shape == (2, 32, 32)


@pytest.mark.parametrize("multi_label", [False, True])
def test_classification_task_single_and_multi_label(multi_label: bool):
    task = ClassificationTask({"backbone": StandIn(), "num_classes": 5, "head_dropout": 0.1}, multi_label=multi_label)
    target = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 1, 0, 0]]) if multi_label else torch.tensor([3, 1])
    loss = task.training_step(_batch(target), 0)
    assert math.isfinite(loss.item())
    probs = task.predictions(task(_batch(target)["image"]))
    assert probs.shape == (2, 5)
    if not multi_label:
        assert torch.allclose(probs.sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="bce"):
        ClassificationTask({"backbone": StandIn(), "num_classes": 5}, loss="ce", multi_label=True)
