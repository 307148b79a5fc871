"""Masked multimodal pretraining: the loss falls in a few steps, and checkpoints load through ``build``."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

import terratim
from terratim.model.config import TerraMindConfig
from terratim.pretraining.data import SimulatedDataset
from terratim.pretraining.masking import MaskingConfig
from terratim.pretraining.module import MaskedPretraining
from terratim.pretraining.tokenizer_training import tokenizer_loss
from terratim.sim_models import SIM_MICRO
from terratim.tokenizers.model import TokenizerConfig, make_tokenizer
from terratim.weights import read_state_dict

TINY_TOKENIZER = {"enc_dim": 32, "enc_depth": 1, "enc_heads": 2, "dec_dim": 32, "dec_depth": 1, "dec_heads": 2}
DATA = {"simulated": {"seed": 5, "count": 8, "size": 32}, "batch_size": 4}
TRAINER = {"max_steps": 2, "accelerator": "cpu"}


def tiny_tokenizer(modality: str) -> torch.nn.Module:
    torch.manual_seed(0)
    extra = {} if modality == "LULC" else {"unet": {"channels": 16, "channel_mult": [1], "num_res_blocks": 1,
                                                    "attention_ds": [], "num_groups": 8}}
    spec = {k: v for k, v in TINY_TOKENIZER.items() if modality == "LULC" or not k.startswith("dec")}
    return make_tokenizer(TokenizerConfig.for_modality(modality, **spec, **extra))


def test_a_few_pretraining_steps_decrease_the_loss() -> None:
    torch.manual_seed(0)
    config = TerraMindConfig(dim=32, encoder_depth=2, decoder_depth=1, num_heads=2, mlp_hidden=64,
                             gated_mlp=False, bias=True, img_size=32)
    module = MaskedPretraining(["S1GRD", "DEM", "LULC"], ["LULC", "DEM"],
                               {"LULC": tiny_tokenizer("LULC"), "DEM": tiny_tokenizer("DEM")}, architecture=config,
                               masking=MaskingConfig(input_tokens=6, target_tokens=4))
    batch = next(iter(DataLoader(SimulatedDataset(1, 8, size=32, modalities=["S1GRD", "DEM", "LULC"]), 8)))
    optimizer = torch.optim.AdamW(module.network.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        loss, per_mod = module.loss(batch, torch.Generator().manual_seed(step % 3))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert set(per_mod) == {"tok_lulc@224", "tok_dem@224"}
    assert losses[0] > 7.0  # about log(vocabulary) at the start
    assert sum(losses[-3:]) / 3 < losses[0] - 1.0
    assert all(p.grad is None for p in module.tokenizers.parameters())  # tokenizers stay frozen


def test_tokenizer_losses_fall() -> None:
    batch = next(iter(DataLoader(SimulatedDataset(2, 4, size=32, modalities=["LULC", "DEM"]), 4)))
    for modality in ("LULC", "DEM"):
        tokenizer = tiny_tokenizer(modality)  # built with its decoder: training optimises both
        optimizer = torch.optim.AdamW(tokenizer.parameters(), lr=3e-3)
        losses = []
        for step in range(15):
            loss = tokenizer_loss(tokenizer, batch[modality], torch.Generator().manual_seed(step % 2))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert sum(losses[-3:]) / 3 < 0.8 * losses[0], (modality, losses)


def run_command(command: str, config: dict, path: Path) -> pl.LightningModule:
    """``terratim <command> -c <config written as a file>``; returns the trained module."""
    from terratim.commands.pretrain import DEFAULT_OUTPUT
    from terratim.pretraining.cli import run_training
    from terratim.pretraining.tokenizer_training import TokenizerTraining

    path.with_suffix(".yaml").write_text(yaml.safe_dump(config))
    model_class = MaskedPretraining if command == "pretrain" else TokenizerTraining
    cli, written = run_training(command, model_class, ["-c", str(path.with_suffix(".yaml"))], DEFAULT_OUTPUT)
    assert written == path
    return cli.model


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[MaskedPretraining, Path, Path]:
    """The real commands: train a LULC tokenizer, then pretrain the sim_micro architecture, 2 steps each."""
    root = tmp_path_factory.mktemp("pretrain")
    tok_path, path = root / "lulc.safetensors", root / "tm.safetensors"
    run_command("train-tokenizer", {"model": {"modality": "LULC", "architecture": TINY_TOKENIZER}, "data": DATA,
                                    "trainer": TRAINER, "output": str(tok_path)}, tok_path)
    architecture = {**SIM_MICRO.to_dict(), "img_size": 32}
    model = {"architecture": architecture, "inputs": ["S1GRD", "LULC"], "targets": ["LULC"],
             "tokenizers": {"LULC": str(tok_path)}, "masking": {"input_tokens": 4, "target_tokens": 2}}
    module = run_command("pretrain", {"model": model, "data": DATA, "trainer": TRAINER, "output": str(path)}, path)
    assert isinstance(module, MaskedPretraining) and module.trainer.global_step == 2
    return module, path, tok_path


def test_checkpoint_is_the_official_layout(pretrained: tuple) -> None:
    module, path, _ = pretrained
    state = read_state_dict(path)
    assert {"encoder.0.attn.qkv.weight", "encoder_norm.weight", "decoder.0.cross_attn.kv.weight",
            "decoder_proj_context.weight", "mask_token", "encoder_embeddings.untok_sen1grd@224.proj.weight",
            "decoder_embeddings.tok_lulc@224.token_emb.weight"} <= set(state)
    assert path.with_suffix(".json").is_file()
    for key, value in module.network.state_dict().items():
        torch.testing.assert_close(state[key], value)


def test_checkpoint_loads_as_backbone_generator_and_tim(pretrained: tuple) -> None:
    module, path, tok_path = pretrained
    s1 = torch.randn(2, 2, 32, 32)
    backbone = terratim.build("terramind_sim_micro", modalities=["S1GRD"], ckpt_path=path, img_size=32)
    torch.testing.assert_close(backbone.encoder[0].attn.qkv.weight, module.network.encoder[0].attn.qkv.weight)
    assert len(backbone({"S1GRD": s1})) == SIM_MICRO.encoder_depth

    tokenizer = terratim.build("terramind_sim_micro_tokenizer_lulc", ckpt_path=tok_path)
    generator = terratim.build("terramind_sim_micro_generate", modalities=["S1GRD"], output_modalities=["LULC"],
                               ckpt_path=path, img_size=32, tokenizers={"LULC": tokenizer}, temps=0.0)
    torch.testing.assert_close(generator.network.decoder_embeddings["tok_lulc@224"].token_emb.weight,
                               module.network.decoder_embeddings["tok_lulc@224"].token_emb.weight)
    tokens = generator.generate_tokens({"S1GRD": s1})["LULC"]
    assert tokens.shape == (2, 2, 2) and int(tokens.max()) < 4375
    assert generator.decode({"LULC": tokens})["LULC"].shape == (2, 10, 32, 32)

    tim = terratim.build("terramind_sim_micro_tim", modalities=["S1GRD"], tim_modalities=["LULC"],
                           ckpt_path=path, img_size=32)
    torch.testing.assert_close(tim.generator.network.decoder[0].mlp.fc1.weight,
                               module.network.decoder[0].mlp.fc1.weight)
    features = tim({"S1GRD": s1}, torch.Generator().manual_seed(0))
    assert features[-1].shape == (2, 4, SIM_MICRO.dim)


def test_exported_file_builds_from_its_json_alone(pretrained: tuple) -> None:
    from terratim.registry import build_from_file
    from terratim.weights import checkpoint_config

    module, path, _ = pretrained
    saved = checkpoint_config(path)
    assert saved.architecture == module.network.config and saved.metadata["targets"] == ["LULC"]
    alone = build_from_file(path, "backbone", modalities=["S1GRD"]).eval()
    assert alone.config.img_size == 32  # the size it was pretrained at
    s1 = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        keyed = {"untok_sen1grd@224": s1}
        tokens, emb, _ = module.network.embed(keyed)
        expected = module.network.run_encoder(tokens + emb)[-1]
        torch.testing.assert_close(alone({"S1GRD": s1})[-1], expected, rtol=1e-5, atol=1e-5)
