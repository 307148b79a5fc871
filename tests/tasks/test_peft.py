"""PEFT (LoRA) on the backbone: trainable counts, qkv splitting, merging, TiM's frozen generator, bad configs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from terratim.layers import Linear
from terratim.tasks import SemanticSegmentationTask, build_model
from terratim.tasks.peft import SplitQKV, count_parameters, merge_peft, replace_qkv

from finetune_data import REPO

TERRATORCH_TARGETS = ["qkv.q_linear", "qkv.v_linear", "mlp.fc1", "mlp.fc2"]
LORA = {"method": "LORA", "replace_qkv": "qkv",
        "peft_config_kwargs": {"target_modules": TERRATORCH_TARGETS, "r": 4, "lora_alpha": 8}}
NECKS = [{"name": "SelectIndices", "indices": [2, 5, 8, 11]}, {"name": "ReshapeTokensToImage"},
         {"name": "LearnedInterpolateToPyramidal"}]
TINY = {"backbone": "terramind_v1_tiny", "backbone_modalities": ["S1GRD"], "necks": NECKS, "decoder": "UNetDecoder",
        "decoder_channels": [32, 16, 16, 8], "num_classes": 2}
TIM = {**TINY, "backbone": "terramind_v1_tiny_tim", "backbone_tim_modalities": ["LULC"]}


def lora_parameter_count(plain_backbone: nn.Module, r: int) -> int:
    """LoRA adds A (r x in) and B (out x r) per adapted Linear; q and v are the D x D thirds of each fused qkv.
    TiM's generator gets none."""
    total = 0
    for name, module in plain_backbone.named_modules():
        if name.startswith("generator."):
            continue
        if name.endswith("attn.qkv"):
            total += 2 * r * (module.in_features + module.in_features)  # q and v
        elif name.endswith(("mlp.fc1", "mlp.fc2")):
            total += r * (module.in_features + module.out_features)
    return total


def s1(batch: int = 1, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    return {"S1GRD": torch.randn(batch, 2, size, size, generator=torch.Generator().manual_seed(seed))}


def randomize_adapters(model: nn.Module, seed: int = 1) -> None:
    """LoRA's B starts at zero (adapters add nothing); give them values so merging has something to fold."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def test_lora_trains_only_adapters_and_the_decoder_side(capsys):
    plain = build_model("EncoderDecoderFactory", TINY, "segmentation")
    capsys.readouterr()
    model = build_model("EncoderDecoderFactory", {**TINY, "peft_config": LORA}, "segmentation")
    printed = capsys.readouterr().out
    decoder_side = sum(p.numel() for n, p in plain.named_parameters() if not n.startswith("backbone."))
    adapters = lora_parameter_count(plain.backbone, r=4)
    assert adapters == 12 * (2 * 4 * (192 + 192) + 2 * 4 * (192 + 768))  # tiny: D = 192, MLP 768, 12 blocks
    trainable, total = count_parameters(model)
    assert trainable == decoder_side + adapters
    assert total == count_parameters(plain)[1] + adapters
    assert f"PEFT LORA: {trainable:,} trainable of {total:,} parameters ({adapters:,} in the backbone)" in printed
    backbone_trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert backbone_trainable and all(".lora_A." in n or ".lora_B." in n for n in backbone_trainable)
    assert model(s1()).shape == (1, 2, 32, 32)


def test_replace_qkv_is_function_preserving():
    """The split projection equals the fused one (float64 reference), and so does a whole backbone."""
    fused = nn.Linear(24, 72)
    x = torch.randn(3, 5, 24, generator=torch.Generator().manual_seed(0))
    expected = fused.double()(x.double())
    fused.float()
    split = SplitQKV(fused)
    assert [p.shape for p in split.q_linear.parameters()] == [torch.Size([24, 24]), torch.Size([24])]
    torch.testing.assert_close(split(x).double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(split.fused().weight, fused.weight, rtol=0, atol=0)  # a copy, no arithmetic

    plain = build_model("EncoderDecoderFactory", TINY, "segmentation").backbone.double()
    split_backbone = copy.deepcopy(plain)
    assert replace_qkv(split_backbone, "qkv") == 12
    inputs = {k: v.double() for k, v in s1().items()}
    for a, b in zip(split_backbone(inputs), plain(inputs), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_merged_model_matches_the_adapter_model_and_loads_as_plain():
    model = build_model("EncoderDecoderFactory", {**TINY, "peft_config": LORA}, "segmentation").eval()
    randomize_adapters(model)
    x = s1(batch=2)
    with torch.no_grad():
        with_adapters = model(x)
        model.backbone = merge_peft(model.backbone)
        merged = model(x)
    plain = build_model("EncoderDecoderFactory", TINY, "segmentation").eval()
    assert set(model.state_dict()) == set(plain.state_dict())  # the plain backbone's names, fused qkv again
    plain.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        reloaded = plain(x)
    torch.testing.assert_close(merged, with_adapters, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reloaded, with_adapters, rtol=1e-5, atol=1e-5)
    assert (with_adapters - build_model("EncoderDecoderFactory", TINY, "segmentation").eval()(x)).abs().max() > 0


class OneBatch(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict:
        image = s1(seed=i)["S1GRD"][0]
        return {"image": {"S1GRD": image}, "mask": (image[0] > 0).long()}


def fit_one_step(task: pl.LightningModule, tmp_path: Path) -> None:
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(task, torch.utils.data.DataLoader(OneBatch(), batch_size=2))
    assert trainer.global_step == 1


def test_tim_lora_fit_step_leaves_the_generator_frozen_and_unchanged(tmp_path: Path):
    task = SemanticSegmentationTask({**TIM, "peft_config": LORA}, lr=1e-2)
    backbone = task.model.backbone
    generator = backbone.generator
    assert not any("lora" in n or "q_linear" in n for n, _ in generator.named_modules())  # no adapters, fused qkv
    assert all(type(m) is Linear for n, m in generator.named_modules() if n.endswith("attn.qkv"))
    before = {n: p.detach().clone() for n, p in generator.named_parameters()}
    frozen_base = {n: p.detach().clone() for n, p in backbone.named_parameters() if "base_layer" in n}
    lora_b = {n: p.detach().clone() for n, p in backbone.named_parameters() if "lora_B" in n}
    fit_one_step(task, tmp_path)
    assert not any(p.requires_grad for p in generator.parameters())
    assert all(torch.equal(p, before[n]) for n, p in generator.named_parameters())
    assert all(torch.equal(p, frozen_base[n]) for n, p in backbone.named_parameters() if "base_layer" in n)
    assert any(not torch.equal(p, lora_b[n]) for n, p in backbone.named_parameters() if "lora_B" in n)
    assert not generator.training  # the generator stays in eval mode


@pytest.mark.parametrize(
    ("peft_config", "message"),
    [
        ({**LORA, "method": "LORAX"}, "model_args.peft_config.method: unknown or unsupported PEFT method 'LORAX'"),
        ({**LORA, "peft_config_kwargs": {"target_modules": ["qkv.q_linear", "attn.nothing"], "r": 4}},
         "target_modules: 'attn.nothing' matches no module of the backbone; its Linear layers end in"),
        ({**LORA, "replace_qkv": None}, "target_modules: 'qkv.q_linear' matches no module of the backbone"),
        ({**LORA, "replace_qkv": "qkvz"}, "replace_qkv: no module of the backbone is named *.qkvz"),
        ({**LORA, "replace_qkv": "fc1"}, "replace_qkv: a qkv projection maps D to 3 D features, got 192 -> 768"),
        ({**LORA, "peft_config_kwargs": {"target_modules": ["mlp.fc1"], "rank": 4}},
         "peft_config_kwargs: ['rank'] are not options of LoraConfig"),
        ({**LORA, "peft_config_kwargs": {"r": 4}}, "peft_config_kwargs needs target_modules"),
        ({**LORA, "adapter": "x"}, "model_args.peft_config: unknown keys ['adapter']"),
    ],
)
def test_bad_peft_configs_are_one_line_errors(peft_config: dict, message: str):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        build_model("EncoderDecoderFactory", {**TINY, "peft_config": peft_config}, "segmentation")
    assert "\n" not in str(err.value)


def test_tim_config_with_terratorch_lora_block_prints_the_trainable_count(flood_tree: Path, tmp_path: Path, capsys):
    """TerraTorch's LoRA block added to a TiM config: fit prints our count and Lightning's summary agrees."""
    from terratim.tasks.cli import build_cli

    block = ('{"method": "LORA", "replace_qkv": "qkv", "peft_config_kwargs": {"target_modules": '
             '["qkv.q_linear", "qkv.v_linear", "mlp.fc1", "mlp.fc2"], "r": 4, "lora_alpha": 8}}')
    args = ["fit", "-c", str(REPO / "configs" / "terramind_v1_tiny_tim_lulc_sen1floods11.yaml"),
            f"--data.init_args.root={flood_tree / 'flat'}", "--data.init_args.batch_size=2",
            "--data.init_args.num_workers=0", "--trainer.accelerator=cpu", "--trainer.precision=32",
            f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--model.init_args.model_args.backbone_pretrained=false",
            f"--model.init_args.model_args.peft_config={block}", "--trainer.max_steps=1",
            "--trainer.limit_val_batches=0"]
    cli = build_cli(args)
    out = capsys.readouterr().out
    trainable = sum(p.numel() for p in cli.model.parameters() if p.requires_grad)  # what the summary counts
    (line,) = [line for line in out.splitlines() if line.startswith("PEFT LORA:")]
    assert line.startswith(f"PEFT LORA: {trainable:,} trainable of ")
    plain_tim = build_model("EncoderDecoderFactory", {**cli.model.hparams["model_args"], "peft_config": None},
                            "segmentation")
    decoder_side = sum(p.numel() for n, p in plain_tim.named_parameters() if not n.startswith("backbone."))
    assert trainable == decoder_side + lora_parameter_count(plain_tim.backbone, r=4)
    shown = re.search(r"Trainable params:?\s+([\d.]+) ?([KM]?)", out)
    assert shown is not None, out
    scale = {"K": 1e3, "M": 1e6, "": 1}[shown.group(2)]
    assert abs(float(shown.group(1)) * scale - trainable) <= 0.05 * scale  # printed to one decimal
