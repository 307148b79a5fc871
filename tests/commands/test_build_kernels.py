"""``terratim build-kernels``: the one opt-in step that compiles the decoder's Winograd kernels."""

from __future__ import annotations

from pathlib import Path

from terratim.cli import main
from terratim.tokenizers import winograd_kernels


def test_prints_the_library_path_and_how_to_use_it(monkeypatch, capsys, tmp_path):
    library = tmp_path / "winograd.so"
    monkeypatch.setattr(winograd_kernels, "build_kernels", lambda: library)
    assert main(["build-kernels"]) == 0
    out = capsys.readouterr().out
    assert str(library) in out and "TERRATIM_NATIVE_KERNELS=1" in out


def test_no_compiler_is_one_line_and_status_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("TERRATIM_KERNEL_CACHE", str(tmp_path / "kernels"))
    monkeypatch.delenv("TERRATIM_DEBUG", raising=False)
    assert main(["build-kernels"], report_errors=True) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "terratim build-kernels: error: no C compiler" in err[0]
    assert not Path(tmp_path / "kernels").exists() or not any((tmp_path / "kernels").iterdir())
