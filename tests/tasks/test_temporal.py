"""Time series (backbone_use_temporal): pooling over dates, one batched backbone forward, model assembly, errors."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

import terratim
from terratim.tasks import SemanticSegmentationTask, build_model
from terratim.tasks.temporal import TemporalBackbone, TemporalSettings

PYRAMID = [
    {"name": "SelectIndices", "indices": [2, 5, 8, 11]},
    {"name": "ReshapeTokensToImage"},
    {"name": "LearnedInterpolateToPyramidal"},
]
D = 192  # tiny width
CROP_CONFIG = Path(__file__).parent / "reference_configs" / "terramind_v1_base_multitemporal_crop.yaml"


@pytest.fixture(scope="module")
def backbone(tiny_checkpoint):
    """The tiny backbone on S1GRD (2 bands), parity weights, eval mode."""
    return terratim.build("terramind_v1_tiny", modalities=["S1GRD"], ckpt_path=str(tiny_checkpoint)).eval()


@pytest.fixture(scope="module")
def backbone64(backbone):
    """The same backbone in float64, for reference features."""
    return copy.deepcopy(backbone).double()


def dates(*singles: torch.Tensor) -> torch.Tensor:
    """Single-date chips (B, C, H, W) -> one time series (B, C, T, H, W)."""
    return torch.stack(singles, dim=2)


def chip(seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(seed)).to(dtype)  # (B, C, H, W)


def features64(backbone64, x: torch.Tensor) -> list[torch.Tensor]:
    """Single-date features computed in float64 (the reference)."""
    with torch.no_grad():
        return list(backbone64(x.double()))


def run(backbone, x, **settings) -> list[torch.Tensor]:
    with torch.no_grad():
        return TemporalBackbone(backbone, TemporalSettings(**settings))(x)


def assert_near(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    """Close to a float64 reference, relative to the reference's scale."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual.double(), expected, rtol=0, atol=rtol * scale)


def test_mean_of_identical_dates_equals_the_single_date_output(backbone, backbone64):
    x = chip(0)
    reference = features64(backbone64, x)  # (B, N, D) per layer
    pooled64 = run(backbone64, dates(x, x, x).double(), pooling="mean")
    pooled32 = run(backbone, dates(x, x, x), pooling="mean")
    assert len(pooled32) == 12 and pooled32[-1].shape == (2, 4, D)
    for layer64, layer32, ref in zip(pooled64, pooled32, reference, strict=True):
        assert_near(layer64, ref, 1e-12)  # the same computation, batched: float64 rounding only
        assert_near(layer32, ref, 1e-5)  # float32 through 12 layers (about 1e-6 measured)


def test_one_backbone_forward_for_all_dates(backbone):
    calls: list[tuple[int, ...]] = []
    hook = backbone.register_forward_pre_hook(lambda m, args: calls.append(tuple(args[0].shape)))
    try:
        run(backbone, dates(chip(0), chip(1), chip(2)), pooling="mean")
    finally:
        hook.remove()
    assert calls == [(6, 2, 32, 32)]  # B=2 chips x T=3 dates folded into one batch


def test_concat_stacks_dates_along_channels_date_major(backbone, backbone64):
    x0, x1, x2 = chip(0), chip(1), chip(2)
    pooled = run(backbone, dates(x0, x1, x2), pooling="concat", n_timestamps=3)
    assert TemporalBackbone(backbone, TemporalSettings("concat", 3)).out_channels == [3 * D] * 12
    assert pooled[-1].shape == (2, 4, 3 * D)
    for t, single in enumerate((x0, x1, x2)):
        assert_near(pooled[-1][..., t * D : (t + 1) * D], features64(backbone64, single)[-1], 1e-5)


def test_concat_model_wires_decoder_channels_and_pads_odd_inputs():
    args = {"backbone": "terramind_v1_tiny", "backbone_modalities": ["S1GRD"], "backbone_img_size": 32,
            "backbone_use_temporal": True, "backbone_temporal_pooling": "concat",
            "backbone_temporal_n_timestamps": 3, "necks": PYRAMID, "decoder": "UNetDecoder",
            "decoder_channels": [32, 16, 8, 8], "num_classes": 4}
    model = build_model("EncoderDecoderFactory", args, "segmentation").eval()
    assert model.backbone.out_channels == [3 * D] * 12
    assert model.necks.out_channels == [3 * D // 4, 3 * D // 2, 3 * D, 3 * D]
    assert [b.conv1[0].in_channels for b in model.decoder.blocks] == [2 * 3 * D, 32 + 3 * D // 2, 16 + 3 * D // 4, 8]
    with torch.no_grad():
        out = model({"S1GRD": torch.randn(1, 2, 3, 30, 40)})  # padded to 32x48 inside, cropped back
    assert out.shape == (1, 4, 30, 40) and torch.isfinite(out).all()


def test_published_multitemporal_crop_model_args_build_and_run():
    """The published config's model_args (concat of 3 dates, 6 HLS bands), backbone switched to tiny."""
    args = yaml.safe_load(CROP_CONFIG.read_text())["model"]["init_args"]["model_args"]
    args.update(backbone="terramind_v1_tiny", backbone_pretrained=False, backbone_img_size=32)
    model = build_model("EncoderDecoderFactory", args, "segmentation").eval()
    assert model.backbone.out_channels[0] == 3 * D and model.necks.out_channels[-1] == 3 * D
    with torch.no_grad():
        out = model({"S2L2A": torch.randn(1, 6, 3, 32, 32)})  # (B, bands, dates, H, W)
    assert out.shape == (1, 13, 32, 32) and torch.isfinite(out).all()


def test_diff_of_two_identical_dates_is_zero_and_of_two_dates_their_difference(backbone, backbone64):
    x0, x1 = chip(0), chip(1)
    same = run(backbone, dates(x0, x0), pooling="diff")
    scale = features64(backbone64, x0)[-1].abs().max().item()
    assert same[-1].shape == (2, 4, D) and same[-1].abs().max().item() <= 1e-5 * scale
    changed = run(backbone, dates(x0, x1), pooling="diff")
    expected = features64(backbone64, x0)[-1] - features64(backbone64, x1)[-1]
    assert_near(changed[-1], expected, 1e-5)


def test_max_is_the_elementwise_maximum_over_dates(backbone, backbone64):
    x0, x1 = chip(0), chip(1)
    pooled = run(backbone, dates(x0, x1), pooling="max")
    expected = torch.maximum(features64(backbone64, x0)[5], features64(backbone64, x1)[5])
    assert_near(pooled[5], expected, 1e-5)


def test_subset_lengths_average_groups_before_pooling(backbone, backbone64):
    singles = [chip(s) for s in range(3)]
    f = [features64(backbone64, x)[-1] for x in singles]
    diff = run(backbone, dates(*singles), pooling="diff", subset_lengths=[2, 1])
    assert_near(diff[-1], (f[0] + f[1]) / 2 - f[2], 1e-5)
    concat = run(backbone, dates(*singles), pooling="concat", subset_lengths=[1, 2])
    assert concat[-1].shape == (2, 4, 2 * D)  # two groups, so 2 x channels
    assert TemporalBackbone(backbone, TemporalSettings("concat", subset_lengths=(1, 2))).out_channels[0] == 2 * D
    assert_near(concat[-1][..., D:], (f[1] + f[2]) / 2, 1e-5)


def test_keep_returns_every_date(backbone, backbone64):
    x0, x1 = chip(0), chip(1)
    kept = run(backbone, dates(x0, x1), pooling="keep")
    assert kept[-1].shape == (2, 2, 4, D)  # (B, T, N, D) as TerraTorch
    assert_near(kept[-1][:, 1], features64(backbone64, x1)[-1], 1e-5)


def test_dict_inputs_and_dict_features_pool_per_modality(tiny_checkpoint):
    model = terratim.build("terramind_v1_tiny", modalities=["S1GRD", "S2L2A"], merge_method="dict",
                           ckpt_path=str(tiny_checkpoint)).eval()
    x = {"S1GRD": torch.randn(1, 2, 2, 32, 32), "S2L2A": torch.randn(1, 12, 2, 32, 32)}
    pooled = run(model, x, pooling="concat", n_timestamps=2)
    assert {name: tuple(v.shape) for name, v in pooled[-1].items()} == {"S1GRD": (1, 4, 2 * D),
                                                                        "S2L2A": (1, 4, 2 * D)}
    with pytest.raises(ValueError, match="same batch size and dates"):
        run(model, {"S1GRD": x["S1GRD"], "S2L2A": x["S2L2A"][:, :, :1]}, pooling="mean")


def test_tim_backbone_imagines_all_dates_in_one_call(tiny_checkpoint):
    args = {"backbone": "terramind_v1_tiny_tim", "backbone_modalities": ["S1GRD"], "backbone_tim_temps": 0.0,
            "backbone_ckpt_path": str(tiny_checkpoint), "backbone_use_temporal": True,
            "backbone_temporal_pooling": "mean", "necks": PYRAMID, "decoder": "FCNDecoder",
            "decoder_channels": 8, "num_classes": 3}
    model = build_model("EncoderDecoderFactory", args, "segmentation").eval()
    tim = model.backbone.encoder
    imagined: list[tuple[int, ...]] = []  # input shapes of the generator's calls
    generate_tokens = tim.generator.generate_tokens
    tim.generator.generate_tokens = lambda given, *a, **k: (imagined.append(tuple(given["S1GRD"].shape))
                                                             or generate_tokens(given, *a, **k))
    x = chip(3)
    with torch.no_grad():
        out = model({"S1GRD": dates(x, x)})
        single = tim({"S1GRD": x})[-1]
        pooled = model.backbone({"S1GRD": dates(x, x)})[-1]
    assert imagined == [(4, 2, 32, 32), (2, 2, 32, 32), (4, 2, 32, 32)]  # one generator call per forward, B*T
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
    scale = single.abs().max().item()
    torch.testing.assert_close(pooled, single, rtol=0, atol=1e-5 * scale)  # argmax TiM: same tokens per date


def test_lora_on_a_temporal_tim_backbone_leaves_the_generator_alone(tiny_checkpoint):
    lora = {"method": "LORA", "replace_qkv": "qkv",
            "peft_config_kwargs": {"target_modules": ["qkv.q_linear", "qkv.v_linear"], "r": 4, "lora_alpha": 8}}
    args = {"backbone": "terramind_v1_tiny_tim", "backbone_modalities": ["S1GRD"], "backbone_tim_temps": 0.0,
            "backbone_ckpt_path": str(tiny_checkpoint), "backbone_use_temporal": True,
            "backbone_temporal_pooling": "concat", "backbone_temporal_n_timestamps": 2, "necks": PYRAMID,
            "decoder": "FCNDecoder", "decoder_channels": 8, "num_classes": 3, "peft_config": lora}
    model = build_model("EncoderDecoderFactory", args, "segmentation")
    names = [n for n, p in model.named_parameters() if "lora_" in n]
    assert names and not any(".generator." in n for n in names)
    assert not any(p.requires_grad for p in model.backbone.encoder.generator.parameters())
    out = model({"S1GRD": torch.randn(2, 2, 2, 32, 32)})
    out.sum().backward()
    assert out.shape == (2, 3, 32, 32) and all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)


def test_bad_temporal_options_and_inputs_raise_naming_the_option(backbone):
    base = {"backbone": "terramind_v1_tiny", "backbone_modalities": ["S1GRD"], "num_classes": 2,
            "necks": PYRAMID, "backbone_use_temporal": True}

    def build(**extra):
        return build_model("EncoderDecoderFactory", {**base, **extra}, "segmentation")

    with pytest.raises(ValueError, match=r"backbone_temporal_pooling: unknown pooling 'median'; expected one of"):
        build(backbone_temporal_pooling="median")
    with pytest.raises(ValueError, match="'concat' needs backbone_temporal_n_timestamps"):
        build(backbone_temporal_pooling="concat")
    with pytest.raises(ValueError, match="'keep' returns .* use concat, mean, max or diff"):
        build(backbone_temporal_pooling="keep")
    with pytest.raises(ValueError, match="'diff' needs exactly 2 subsets"):
        build(backbone_temporal_pooling="diff", backbone_temporal_subset_lengths=[1, 1, 1])
    with pytest.raises(ValueError, match="sum to 3, but backbone_temporal_n_timestamps is 4"):
        build(backbone_temporal_subset_lengths=[1, 2], backbone_temporal_n_timestamps=4)
    with pytest.raises(ValueError, match=r"\['backbone_temporal_concat'\] not supported.*pooling: concat"):
        build(backbone_temporal_concat=True)
    with pytest.raises(ValueError, match=r"\['backbone_temporal_pooling'\] need backbone_use_temporal: true"):
        build(backbone_use_temporal=False, backbone_temporal_pooling="mean")
    concat = TemporalBackbone(backbone, TemporalSettings("concat", n_timestamps=3))
    with pytest.raises(ValueError, match="n_timestamps is 3 .*but the input has 2 dates"):
        concat(dates(chip(0), chip(1)))
    with pytest.raises(ValueError, match=r"backbone_use_temporal: expected \(B, C, T, H, W\) inputs"):
        concat({"S1GRD": chip(0)})
    with pytest.raises(ValueError, match="'diff' needs 2 dates, but the input has 3"):
        run(backbone, dates(chip(0), chip(1), chip(2)), pooling="diff")
    with pytest.raises(ValueError, match=r"subset_lengths \[1, 1\] cover 2 dates, but the input has 3"):
        run(backbone, dates(chip(0), chip(1), chip(2)), pooling="mean", subset_lengths=[1, 1])


def test_segmentation_task_fits_one_step_on_a_time_series():
    torch.manual_seed(0)
    args = {"backbone": "terramind_v1_tiny", "backbone_modalities": ["S1GRD"], "backbone_img_size": 32,
            "backbone_use_temporal": True, "backbone_temporal_pooling": "concat",
            "backbone_temporal_n_timestamps": 2, "necks": PYRAMID, "decoder": "UNetDecoder",
            "decoder_channels": [16, 8, 8, 8], "num_classes": 3}
    task = SemanticSegmentationTask(args, loss="ce", ignore_index=-1)
    batch = {"image": {"S1GRD": torch.randn(2, 2, 2, 32, 32)}, "mask": torch.randint(0, 3, (2, 32, 32))}
    before = task.model.backbone.encoder.encoder[0].attn.qkv.weight.detach().clone()
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(task, DataLoader([batch], batch_size=None))
    after = task.model.backbone.encoder.encoder[0].attn.qkv.weight
    assert trainer.global_step == 1 and not torch.equal(before, after)  # gradients reached the backbone
