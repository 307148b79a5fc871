"""``pretrain``, ``train-tokenizer`` and ``convert`` check their output before any work.

The work itself is replaced by a function that fails the test if it is reached: an output that cannot be written
must be refused before training (or reading a checkpoint), never after it. Unwritable folders are ``/proc``
(which refuses new files even to root; tests may run as root, where ``chmod`` stops nothing) and a path under an
existing regular file.
"""

from __future__ import annotations

import pytest
import yaml

from terratim.cli import main
from terratim.sim_models import tokenizer_path


@pytest.fixture(autouse=True)
def errors_raise(monkeypatch):
    """User errors propagate as exceptions (the CLI otherwise prints one line and returns 2)."""
    monkeypatch.setenv("TERRATIM_DEBUG", "1")


def _no_work(*args, **kwargs):
    raise AssertionError("the work started before the output was checked")


@pytest.fixture
def no_training(monkeypatch):
    """Building the model (which reads tokenizer files) or training fails the test."""
    from terratim.pretraining.cli import PretrainingCLI

    monkeypatch.setattr(PretrainingCLI, "instantiate_classes", _no_work)
    monkeypatch.setattr(PretrainingCLI, "fit_and_export", _no_work)


def _pretrain_config(tmp_path, **extra) -> str:
    config = {
        "model": {"architecture": {"dim": 64, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 4,
                                   "mlp_hidden": 128, "gated_mlp": False, "bias": True, "img_size": 64},
                  "inputs": ["S1GRD"], "targets": ["LULC"], "tokenizers": {"LULC": str(tokenizer_path("LULC"))}},
        "data": {"simulated": {"seed": 0, "count": 4, "size": 64}, "batch_size": 2},
        "trainer": {"max_steps": 1, "accelerator": "cpu", "devices": 1},
        **extra,
    }
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _tokenizer_config(tmp_path, **extra) -> str:
    config = {"model": {"modality": "LULC", "architecture": {"enc_dim": 32, "enc_depth": 1, "enc_heads": 2,
                                                             "dec_dim": 32, "dec_depth": 1, "dec_heads": 2}},
              "data": {"simulated": {"seed": 0, "count": 4, "size": 64}, "batch_size": 2},
              "trainer": {"max_steps": 1, "accelerator": "cpu", "devices": 1}, **extra}
    path = tmp_path / "tokenizer.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize("command", ["pretrain", "train-tokenizer"])
def test_unwritable_output_is_refused_before_training(tmp_path, no_training, command):
    config = _pretrain_config(tmp_path) if command == "pretrain" else _tokenizer_config(tmp_path)
    with pytest.raises(PermissionError, match=r"cannot write /proc/p\.safetensors: folder /proc is not writable"):
        main([command, "-c", config, "--output", "/proc/p.safetensors"])
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError, match="a_file is a file, not a folder"):
        main([command, "-c", config, "--output", str(blocker / "p.safetensors")])


@pytest.mark.parametrize("command", ["pretrain", "train-tokenizer"])
def test_existing_config_sidecar_and_bad_export_dtype_are_refused_before_training(tmp_path, no_training, command):
    make = _pretrain_config if command == "pretrain" else _tokenizer_config
    sidecar = tmp_path / "p.json"
    sidecar.write_text('{"someone": "else"}')
    with pytest.raises(FileExistsError, match=r"p\.json exists; pass --overwrite"):
        main([command, "-c", make(tmp_path), "--output", str(tmp_path / "p.safetensors")])
    assert sidecar.read_text() == '{"someone": "else"}'
    with pytest.raises(ValueError, match="export_dtype must be float16, bfloat16 or float32, got 'float61'"):
        main([command, "-c", make(tmp_path, export_dtype="float61"), "--output", str(tmp_path / "q.safetensors")])


def test_convert_refuses_an_unwritable_destination_before_reading(tmp_path, monkeypatch, tiny_checkpoint):
    import terratim.weights

    monkeypatch.setattr(terratim.weights, "read_state_dict", _no_work)
    with pytest.raises(PermissionError, match=r"cannot write /proc/tiny\.safetensors: folder /proc is not writable"):
        main(["convert", str(tiny_checkpoint), "/proc/tiny.safetensors"])
