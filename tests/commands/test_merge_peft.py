"""A LoRA fine-tune's checkpoint through test / predict / infer, and ``terratim merge-peft`` to plain weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import terratim.samples as samples
from terratim.cli import main
from terratim.inference.adapters import load_task_model
from terratim.tasks.cli import build_cli

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "configs" / "quick_sen1floods11_sim_micro.yaml"
LORA = ('{"method": "LORA", "replace_qkv": "qkv", "peft_config_kwargs": {"target_modules": '
        '["qkv.q_linear", "qkv.v_linear", "mlp.fc1", "mlp.fc2"], "r": 4, "lora_alpha": 8}}')


def run_args(folder: Path) -> list[str]:
    return ["-c", str(QUICK), f"--trainer.default_root_dir={folder}", f"--trainer.logger.init_args.save_dir={folder}"]


@pytest.fixture(scope="module")
def lora_fit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``last.ckpt`` of two LoRA steps on the packaged chips with the quick config (bundled model, offline)."""
    folder = tmp_path_factory.mktemp("lora_fit")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setenv("HF_HUB_OFFLINE", "1")
        args = ["fit", *run_args(folder), f"--model.init_args.model_args.peft_config={LORA}", "--trainer.max_steps=2"]
        assert main(args) == 0
    (last,) = folder.rglob("last.ckpt")
    return last


def test_lora_checkpoint_tests_predicts_and_infers_without_a_config(lora_fit: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    state = torch.load(lora_fit, weights_only=True)
    assert state["hyper_parameters"]["model_args"]["peft_config"]["method"] == "LORA"  # travels with the weights
    assert any(".lora_A." in k for k in state["state_dict"])
    peft = [f"--model.init_args.model_args.peft_config={LORA}", f"--ckpt_path={lora_fit}"]
    cli = build_cli(["test", *run_args(tmp_path), *peft])
    assert math.isfinite(float(cli.trainer.callback_metrics["test/loss"]))
    preds = tmp_path / "preds"
    assert main(["predict", *run_args(tmp_path), *peft, f"--predict_output_dir={preds}"]) == 0
    assert list(preds.glob("*_pred.tif"))  # one class map per chip of the predict split
    chip = sorted((samples.SEN1FLOODS11_SAMPLE / "S1Hand").glob("*.tif"))[0]
    out = tmp_path / "pred.tif"
    argv = ["infer", "--ckpt", str(lora_fit), "--input", f"S1GRD={chip}", "--out", str(out), "--chip", "64", "--quiet"]
    assert main(argv) == 0 and out.is_file()


def test_merge_peft_writes_plain_weights_with_the_same_outputs(lora_fit: Path, tmp_path: Path, monkeypatch, capsys):
    merged = tmp_path / "merged.ckpt"
    assert main(["merge-peft", "--ckpt", str(lora_fit), "--out", str(merged)]) == 0
    state = torch.load(merged, weights_only=True)
    assert "peft_config" not in state["hyper_parameters"]["model_args"]
    assert not any("lora_" in k or "base_layer" in k or "q_linear" in k for k in state["state_dict"])
    assert "optimizer_states" not in state and state["terratim"] == torch.load(lora_fit, weights_only=True)["terratim"]

    adapted, _ = load_task_model(None, lora_fit)
    plain, _ = load_task_model(None, merged)  # builds a task without peft_config, strict load
    assert type(plain.model.backbone).__name__ == "TerraMindBackbone"
    x = {"S1GRD": torch.randn(2, 2, 64, 64, generator=torch.Generator().manual_seed(0))}
    with torch.no_grad():
        torch.testing.assert_close(plain(x), adapted(x), rtol=1e-5, atol=1e-5)

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cli = build_cli(["test", *run_args(tmp_path), f"--ckpt_path={merged}"])  # the quick config as shipped
    assert math.isfinite(float(cli.trainer.callback_metrics["test/loss"]))

    capsys.readouterr()
    assert main(["merge-peft", "--ckpt", str(lora_fit), "--out", str(merged)], report_errors=True) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"terratim merge-peft: error: {merged} exists; merge-peft never replaces a file, give a new --out"


def test_merge_peft_refuses_a_checkpoint_without_adapters(lora_fit: Path, tmp_path: Path, capsys):
    plain = tmp_path / "plain.ckpt"
    assert main(["merge-peft", "--ckpt", str(lora_fit), "--out", str(plain)]) == 0
    capsys.readouterr()
    assert main(["merge-peft", "--ckpt", str(plain), "--out", str(tmp_path / "again.ckpt")], report_errors=True) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (f"terratim merge-peft: error: {plain} has no model_args.peft_config: it is not a PEFT fine-tune, "
                    "nothing to merge")
    assert not (tmp_path / "again.ckpt").exists()
