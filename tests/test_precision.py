"""Precision choice: fp32/bf16 as asked, auto by the hardware (capability checks mocked), autocast outputs."""

from __future__ import annotations

import pytest
import torch

from terratim import precision


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo=precision.CPUINFO: {"avx2", "avx512f"})
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")


@pytest.fixture
def cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo=precision.CPUINFO: {"avx512f", "avx512_bf16"})


def test_explicit_choices_pass_through():
    assert precision.resolve_precision("fp32", "cpu") == "fp32"
    assert precision.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="--precision must be one of fp32, bf16, auto; got 'fp16'"):
        precision.resolve_precision("fp16", "cpu")


def test_auto_falls_back_to_fp32_without_native_bf16(cpu_without_bf16, capsys):
    assert precision.resolve_precision("auto", "cpu", report=True) == "fp32"
    assert capsys.readouterr().out == "precision auto -> fp32 (cpu has no native bf16)\n"


def test_auto_picks_bf16_with_avx512_bf16(cpu_with_bf16, capsys):
    assert precision.resolve_precision("auto", "cpu", report=True) == "bf16"
    assert "precision auto -> bf16 (cpu has native bf16)" in capsys.readouterr().out


def test_amx_capability_counts_as_native(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo=precision.CPUINFO: set())
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512_AMX")
    assert precision.cpu_has_native_bf16()


def test_cuda_without_bf16_and_other_devices_fall_back(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (7, 5))  # Turing: no bf16
    assert precision.resolve_precision("auto", "cuda:0") == "fp32"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (9, 0))
    assert precision.resolve_precision("auto", "cuda:0") == "bf16"
    assert precision.resolve_precision("auto", "meta") == "fp32"


def test_cpu_flags_read_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert precision.cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16"}
    assert precision.cpu_flags(tmp_path / "missing") == set()


def test_bf16_output_is_float32_and_close_to_float64():
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(8, 64, generator=generator)
    reference = torch.nn.functional.linear(x.double(), layer.weight.double(), layer.bias.double())
    run = precision.with_precision(layer, "bf16", "cpu")
    with torch.no_grad():
        out = run(x)
    assert out.dtype == torch.float32
    # bf16 keeps 8 significant bits: inputs and weights rounded to 2^-9 relative, 64 products summed.
    bound = 2**-8 * (x.double().abs() @ layer.weight.double().abs().T) + 1e-6
    assert ((out.double() - reference).abs() <= bound).all()
    assert not torch.equal(out, layer(x))  # it did run in bf16
    assert precision.with_precision(layer, "fp32") is layer


def test_autocast_needs_a_resolved_precision():
    with pytest.raises(ValueError, match="resolve precision 'auto' first"):
        precision.autocast("auto", "cpu")
    with precision.precision_context("bf16", "cpu") as chosen:
        assert chosen == "bf16" and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")
