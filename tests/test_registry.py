"""The registry's public query: which keyword arguments each builder takes."""

from __future__ import annotations

import pytest

from terratim import registry


def test_sized_builders_take_their_build_function_parameters():
    takes = registry.parameters("terramind_v1_tiny")
    assert {"modalities", "bands", "img_size", "pretrained", "ckpt_path"} <= takes
    assert "size" not in takes and "unknown" not in takes
    assert registry.accepts("terramind_v1_tiny_tim", "tim_modalities")
    assert not registry.accepts("terramind_v1_tiny", "tim_modalities")


def test_a_builder_forwarding_kwargs_takes_any_keyword():
    assert registry.parameters("terramind_v1_tokenizer_lulc") is None
    assert registry.accepts("terramind_v1_tokenizer_lulc", "anything")
    assert registry.unknown_arguments("terramind_v1_tokenizer_lulc", ["anything"]) == []


def test_build_refuses_unknown_arguments_and_names_the_accepted_ones():
    with pytest.raises(TypeError, match=r"unknown arguments \['backbone_bands'\]; it takes .*'modalities'"):
        registry.build("terramind_v1_tiny", modalities=["S2L2A"], backbone_bands=["RED"])


def test_unknown_name_lists_the_available_models():
    with pytest.raises(KeyError, match="available: .*terramind_v1_tiny"):
        registry.parameters("terramind_v9_tiny")


def test_a_name_builds_without_arguments_in_a_fresh_interpreter():
    """build() loads the builder modules itself, also when it is given no keyword arguments."""
    import subprocess
    import sys

    code = "import terratim; print(type(terratim.build('terramind_v1_tokenizer_lulc', decoder=False)).__name__)"
    code_bare = "import terratim; print(type(terratim.build('terramind_v1_tiny')).__name__)"
    for source, expected in ((code, "ClassTokenizer"), (code_bare, "TerraMindBackbone")):
        out = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expected
