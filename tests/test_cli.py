"""The ``terratim`` entry point: user errors as one line and exit status 2, bugs with their traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from terratim import cli
from terratim.commands import info
from terratim.weights import HubDownloadError


@pytest.fixture(autouse=True)
def no_debug_env(monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)


def run_cli(argv: list[str]) -> int:
    """``terratim ARGV`` as the installed program runs it (errors reported, not raised)."""
    return cli.main(argv, report_errors=True)


def _stderr_lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_missing_file_is_one_line_and_status_2(tmp_path, capsys):
    missing = tmp_path / "nope.tif"
    assert run_cli(["embed", "--input", f"S2L2A={missing}"]) == 2
    lines = _stderr_lines(capsys)
    assert lines == [f"terratim embed: error: S2L2A file not found: {missing}"]


def test_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert run_cli(["convert", str(garbage), str(tmp_path / "out.safetensors")]) == 2
    (line,) = _stderr_lines(capsys)
    assert line.startswith(f"terratim convert: error: {garbage} is not a readable PyTorch checkpoint")


def test_unknown_modality_lists_valid_names(capsys):
    assert run_cli(["info", "--modality", "foo"]) == 2
    (line,) = _stderr_lines(capsys)
    assert line.startswith("terratim info: error: unknown modality 'foo'; valid names: ")
    assert "S2L2A" in line and "LULC" in line and '"' not in line  # KeyError's argument, not its quoted repr


def test_debug_flag_and_environment_reraise_with_traceback(tmp_path, monkeypatch):
    argv = ["embed", "--input", f"S2L2A={tmp_path / 'nope.tif'}"]
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        run_cli(["--debug", *argv])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        run_cli(argv)


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("internal invariant violated")

    monkeypatch.setattr(info, "run", broken)
    with pytest.raises(RuntimeError, match="internal invariant"):
        run_cli(["info"])
    monkeypatch.setattr(info, "run", lambda args: {}["modality"])  # a bare KeyError is a lookup bug
    with pytest.raises(KeyError):
        run_cli(["info"])
    assert capsys.readouterr().err == ""


def test_ctrl_c_exits_130_with_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "run", interrupted)
    assert run_cli(["info"]) == 130
    assert _stderr_lines(capsys) == ["terratim info: interrupted"]


def test_system_exit_message_becomes_an_error_line(monkeypatch, capsys):
    def refuse(args):
        raise SystemExit("terratim info: no tokenizer for ['LULC']")

    monkeypatch.setattr(info, "run", refuse)
    assert run_cli(["info"]) == 2
    assert _stderr_lines(capsys) == ["terratim info: error: no tokenizer for ['LULC']"]


def test_python_callers_get_the_exception(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        cli.main(["embed", "--input", f"S2L2A={tmp_path / 'nope.tif'}"])


def test_argparse_errors_keep_their_usage_and_status(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["info", "--no-such-option"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def _offline(*args, **kwargs):
    from huggingface_hub.errors import LocalEntryNotFoundError

    raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing traffic "
                                  "has been disabled.\nTo enable hf.co look-ups, set HF_HUB_OFFLINE=0.")


def test_hub_error_names_the_command_option(monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _offline)
    assert run_cli(["embed", "--pretrained"]) == 2
    (line,) = _stderr_lines(capsys)
    assert line.startswith("terratim embed: error: could not get TerraMind_v1_tiny.pt")
    assert "LocalEntryNotFoundError: Cannot find the requested files" in line
    assert "ckpt_path='/path/to/TerraMind_v1_tiny.pt'" in line  # the library's Python hint
    assert line.endswith("On the command line: terratim embed --ckpt PATH.")


@pytest.mark.parametrize(
    ("command", "weights", "modality", "option"),
    [
        ("infer", "model", None, "--model-ckpt PATH"),
        ("generate", "model", None, "--ckpt PATH"),
        ("generate", "tokenizer", "DEM", "--tokenizer DEM=PATH"),
        ("imagine", "tokenizer", "LULC", "--tokenizer LULC=PATH"),
        ("reconstruct", "tokenizer", "S1GRD", "--ckpt PATH"),
        ("fit", "model", None, "--model.init_args.model_args.backbone_ckpt_path PATH"),
    ],
)
def test_hub_hint_per_command(command, weights, modality, option):
    err = HubDownloadError("could not get X.", "repo", "X.pt", weights, modality)
    assert cli.hub_error_message(err, command) == f"could not get X. On the command line: terratim {command} {option}."


def test_hub_hint_without_an_option_keeps_the_library_message():
    err = HubDownloadError("could not get X.", "repo", "X.pt", "tokenizer", "DEM")
    assert cli.hub_error_message(err, "infer") == "could not get X."  # infer has no tokenizer option


def test_real_entry_point_prints_no_traceback(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(cli.DEBUG_ENV, None)
    command = [sys.executable, "-m", "terratim.cli", "info", "--modality", "foo"]
    plain = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == 2
    assert len(plain.stderr.splitlines()) == 1 and "Traceback" not in plain.stderr
    debug = subprocess.run([*command[:3], "--debug", *command[3:]], capture_output=True, text=True, env=env,
                           timeout=120)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and "unknown modality 'foo'" in debug.stderr
