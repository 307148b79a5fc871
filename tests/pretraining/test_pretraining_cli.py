"""``terratim pretrain`` / ``train-tokenizer`` as LightningCLIs: sections, overrides, ``--print_config``, and the
conversion of flat configs of earlier releases."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from terratim.cli import main
from terratim.pretraining.cli import convert_legacy_config, is_legacy_config, run_training
from terratim.pretraining.module import MaskedPretraining
from terratim.pretraining.tokenizer_training import TokenizerTraining
from terratim.sim_models import tokenizer_path
from terratim.weights import read_state_dict

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "pretrain"
TINY_LULC = {"enc_dim": 32, "enc_depth": 1, "enc_heads": 2, "dec_dim": 32, "dec_depth": 1, "dec_heads": 2}
DATA = {"simulated": {"seed": 5, "count": 8, "size": 32}, "batch_size": 4}
ARCHITECTURE = {"dim": 32, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2, "mlp_hidden": 64,
                "gated_mlp": False, "bias": True, "img_size": 32}


@pytest.fixture(autouse=True)
def errors_raise(monkeypatch):
    monkeypatch.setenv("TERRATIM_DEBUG", "1")


def write(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def tokenizer_config(output: Path, **extra) -> dict:
    return {"model": {"modality": "LULC", "architecture": TINY_LULC}, "data": DATA,
            "trainer": {"max_steps": 2, "accelerator": "cpu"}, "output": str(output), **extra}


def pretrain_config(output: Path) -> dict:
    model = {"architecture": ARCHITECTURE, "inputs": ["S1GRD", "LULC"], "targets": ["LULC"],
             "tokenizers": {"LULC": str(tokenizer_path("LULC"))}, "masking": {"input_tokens": 4, "target_tokens": 2}}
    return {"model": model, "data": DATA, "trainer": {"max_steps": 2, "accelerator": "cpu"}, "output": str(output)}


def test_tokenizer_training_runs_the_configured_steps_and_exports(tmp_path):
    """A few steps of ``train-tokenizer``; ``--trainer.max_steps`` overrides the file and sets the schedule."""
    from terratim.tokenizers.build import build_tokenizer

    config = write(tmp_path / "tok.yaml", tokenizer_config(tmp_path / "lulc.safetensors"))
    argv = ["-c", config, "--trainer.max_steps", "3", "--model.warmup_steps", "1"]
    cli, path = run_training("train-tokenizer", TokenizerTraining, argv, "unused.safetensors")
    assert cli.trainer.global_step == 3 and path == tmp_path / "lulc.safetensors"
    assert cli.model.lr_schedulers().get_last_lr() == pytest.approx([0.0], abs=1e-12)  # cosine ends at max_steps
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    loaded = build_tokenizer("LULC", ckpt_path=path)
    assert loaded.config.enc_dim == 32
    trained = cli.model.tokenizer.state_dict()
    assert loaded.state_dict().keys() == trained.keys()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, trained[key])


def test_pretraining_runs_through_the_command_line(tmp_path, capsys):
    config = write(tmp_path / "pre.yaml", pretrain_config(tmp_path / "tm.safetensors"))
    assert main(["pretrain", "-c", config, "--trainer.max_steps", "1"]) == 0
    assert "TerraMind checkpoint written to" in capsys.readouterr().out
    state = read_state_dict(tmp_path / "tm.safetensors")
    assert "decoder_embeddings.tok_lulc@224.token_emb.weight" in state
    assert (tmp_path / "tm.json").is_file()


def test_print_config_shows_the_sections_with_overrides(tmp_path, capsys):
    config = write(tmp_path / "pre.yaml", pretrain_config(tmp_path / "tm.safetensors"))
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "-c", config, "--trainer.max_steps", "7", "--model.lr", "0.01", "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert {"seed_everything", "trainer", "model", "data", "output", "export_dtype", "overwrite"} <= set(printed)
    assert printed["trainer"]["max_steps"] == 7 and printed["model"]["lr"] == 0.01
    assert printed["model"]["masking"] == {"input_tokens": 4, "target_tokens": 2, "alpha": 1.0}
    assert not (tmp_path / "tm.safetensors").exists()


def test_bad_sections_are_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TERRATIM_DEBUG")
    both = pretrain_config(tmp_path / "a.safetensors")
    both["model"]["size"] = "tiny"
    assert main(["pretrain", "-c", write(tmp_path / "a.yaml", both)], report_errors=True) == 2
    assert capsys.readouterr().err.splitlines()[-1] == ("terratim pretrain: error: config: give exactly one of "
                                                        "model.size (tiny, small, base, large) or model.architecture")
    no_data = tokenizer_config(tmp_path / "b.safetensors", data={"batch_size": 4})
    assert main(["train-tokenizer", "-c", write(tmp_path / "b.yaml", no_data)], report_errors=True) == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "error: config: the data section needs exactly one of 'simulated: {count, seed, size}' or 'root: DIR'")
    assert not (tmp_path / "a.safetensors").exists() and not (tmp_path / "b.safetensors").exists()


# The bundle's recipe as it was written in the earlier flat format (before pretraining moved to LightningCLI).
FLAT_BUNDLE = {
    "sim_micro.yaml": {
        "model": {"architecture": {"dim": 64, "encoder_depth": 4, "decoder_depth": 2, "num_heads": 4,
                                   "mlp_hidden": 256, "gated_mlp": False, "bias": True, "patch_size": 16,
                                   "img_size": 64},
                  "inputs": ["S1GRD", "DEM", "LULC"], "targets": ["LULC", "DEM"]},
        "tokenizers": {"LULC": "terratim/assets/sim_micro/tokenizer_lulc.safetensors",
                       "DEM": "terratim/assets/sim_micro/tokenizer_dem.safetensors"},
        "masking": {"input_tokens": 24, "target_tokens": 16, "alpha": 0.5},
        "loss_weighting": "mod",
        "data": {"simulated": {"seed": 1, "count": 1024, "size": 64}, "batch_size": 32},
        "optim": {"lr": 2.0e-3, "weight_decay": 0.05, "warmup_steps": 50},
        "trainer": {"max_steps": 2000, "accelerator": "cpu", "devices": 1},
        "seed": 0,
        "output": "terratim/assets/sim_micro/terramind_sim_micro.safetensors",
        "export_dtype": "float16",
    },
    "sim_micro_tokenizer_dem.yaml": {
        "tokenizer": {"modality": "DEM", "enc_dim": 64, "enc_depth": 2, "enc_heads": 4,
                      "unet": {"channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_ds": [],
                               "num_groups": 8}},
        "data": {"simulated": {"seed": 0, "count": 512, "size": 64}, "batch_size": 16},
        "optim": {"lr": 1.0e-3, "weight_decay": 0.01, "warmup_steps": 50},
        "trainer": {"max_steps": 150, "accelerator": "cpu", "devices": 1},
        "seed": 0,
        "output": "terratim/assets/sim_micro/tokenizer_dem.safetensors",
        "export_dtype": "float16",
    },
    "sim_micro_tokenizer_lulc.yaml": {
        "tokenizer": {"modality": "LULC", "enc_dim": 64, "enc_depth": 2, "enc_heads": 4, "decoder": "vit",
                      "dec_dim": 64, "dec_depth": 2, "dec_heads": 4},
        "data": {"simulated": {"seed": 0, "count": 512, "size": 64}, "batch_size": 16},
        "optim": {"lr": 2.0e-3, "weight_decay": 0.01, "warmup_steps": 50},
        "trainer": {"max_steps": 250, "accelerator": "cpu", "devices": 1},
        "seed": 0,
        "output": "terratim/assets/sim_micro/tokenizer_lulc.safetensors",
        "export_dtype": "float16",
    },
}


@pytest.mark.parametrize("name", sorted(FLAT_BUNDLE))
def test_the_bundle_configs_are_the_conversion_of_their_flat_form(name):
    """The shipped recipe configs are in the new format and equal the conversion of their earlier flat form."""
    command = "pretrain" if name == "sim_micro.yaml" else "train-tokenizer"
    old = FLAT_BUNDLE[name]
    assert is_legacy_config(command, old)
    shipped = yaml.safe_load((CONFIGS / name).read_text())
    assert not is_legacy_config(command, shipped)
    assert convert_legacy_config(command, old) == shipped


def test_a_flat_config_trains_like_its_conversion(tmp_path, capsys):
    """Old format and new format give the same weights for the same seed; the notice names the new keys."""
    spec = {"modality": "LULC", **TINY_LULC}
    old = {"tokenizer": spec, "data": DATA, "optim": {"lr": 3e-3, "warmup_steps": 1},
           "trainer": {"max_steps": 2, "accelerator": "cpu"}, "seed": 3, "output": str(tmp_path / "old.safetensors")}
    assert main(["train-tokenizer", "-c", write(tmp_path / "old.yaml", old), "--max-steps", "1"]) == 0
    err = capsys.readouterr().err
    assert "old flat format" in err and "model.architecture.<key>" in err and "seed_everything" in err
    assert "--max-steps is now --trainer.max_steps" in err
    new = tokenizer_config(tmp_path / "new.safetensors", seed_everything=3)
    new["model"].update(lr=3e-3, warmup_steps=1, seed=3)
    new["data"] = {**DATA, "seed": 3}
    assert main(["train-tokenizer", "-c", write(tmp_path / "new.yaml", new), "--trainer.max_steps", "1"]) == 0
    assert "old flat format" not in capsys.readouterr().err
    before, after = read_state_dict(tmp_path / "old.safetensors"), read_state_dict(tmp_path / "new.safetensors")
    assert before.keys() == after.keys()
    for key in before:
        torch.testing.assert_close(after[key].double(), before[key].double(), rtol=0, atol=1e-6)
    torch.manual_seed(3)  # the initial weights both runs started from: training moved them
    untrained = TokenizerTraining("LULC", TINY_LULC).tokenizer.state_dict()
    assert any(not torch.allclose(untrained[key], after[key]) for key in after)


def test_the_data_module_loads_what_the_model_trains_on():
    from types import SimpleNamespace

    from terratim.model.config import TerraMindConfig
    from terratim.pretraining.data import PretrainingDataModule, SimulatedData

    model = MaskedPretraining(["S1GRD", "DEM"], ["LULC"], {"LULC": str(tokenizer_path("LULC"))},
                              architecture=TerraMindConfig(**ARCHITECTURE))
    assert model.data_modalities == ["S1GRD", "DEM", "LULC"]
    data = PretrainingDataModule(simulated=SimulatedData(count=4, size=32), batch_size=2)
    data.trainer = SimpleNamespace(lightning_module=model)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"S1GRD", "DEM", "LULC"} and batch["LULC"].dtype == torch.int64
    assert batch["S1GRD"].shape == (2, 2, 32, 32)
    only = PretrainingDataModule(simulated=SimulatedData(count=4, size=32), batch_size=2, modalities=["DEM"])
    only.setup("fit")
    assert set(next(iter(only.train_dataloader()))) == {"DEM"}
