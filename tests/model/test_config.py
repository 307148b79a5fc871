"""Named architectures and the versioned checkpoint config (current and older JSON shapes)."""

from __future__ import annotations

import pytest

from terratim.model.config import CHECKPOINT_VERSION, SIZES, CheckpointConfig, TerraMindConfig, size_config


def test_reference_sizes_and_unknown_size_error():
    assert [size_config(s).dim for s in ("tiny", "small", "base", "large")] == [192, 384, 768, 1024]
    with pytest.raises(KeyError, match="unknown TerraMind size 'huge'"):
        size_config("huge")
    assert size_config(SIZES["base"]) is SIZES["base"]  # an architecture read from a file passes through


def test_checkpoint_config_round_trips():
    saved = CheckpointConfig(SIZES["small"].with_(img_size=64), None, ("untok_sen1grd@224",), {"inputs": ["S1GRD"]})
    data = saved.to_dict()
    assert data["format"] == "terratim-terramind" and data["version"] == CHECKPOINT_VERSION
    assert CheckpointConfig.from_dict(data) == saved


def test_older_shapes_are_read():
    arch = SIZES["tiny"].to_dict()
    converted = {"format": "terratim-terramind/1", "size": "tiny", "architecture": arch,
                 "modality_keys": ["untok_sen2l2a@224"], "source": "TerraMind_v1_tiny.pt"}
    read = CheckpointConfig.from_dict(converted)
    assert (read.architecture, read.size, read.metadata["source"]) == (SIZES["tiny"], "tiny", "TerraMind_v1_tiny.pt")
    exported = {"terramind": {**arch, "img_size": 64}, "inputs": ["S1GRD"], "targets": ["LULC"], "masking": {}}
    read = CheckpointConfig.from_dict(exported)
    assert read.architecture == SIZES["tiny"].with_(img_size=64) and read.metadata["targets"] == ["LULC"]


def test_unknown_shapes_and_fields_are_errors():
    with pytest.raises(ValueError, match="x.json is not a terratim TerraMind config.*terratim convert"):
        CheckpointConfig.from_dict({"size": "tiny"}, source="x.json")
    newer = {**CheckpointConfig(SIZES["tiny"]).to_dict(), "version": CHECKPOINT_VERSION + 1}
    with pytest.raises(ValueError, match="version .* upgrade terratim"):
        CheckpointConfig.from_dict(newer)
    with pytest.raises(ValueError, match=r"unknown fields \['depth'\]"):
        TerraMindConfig.from_dict({**SIZES["tiny"].to_dict(), "depth": 3})


def test_same_network_ignores_only_the_image_size():
    assert SIZES["tiny"].same_network(SIZES["tiny"].with_(img_size=64))
    assert not SIZES["tiny"].same_network(SIZES["tiny"].with_(num_heads=6))


def test_no_size_is_added_at_import():
    import terratim
    import terratim.sim_models

    terratim.list_models()  # imports every builder module
    assert set(SIZES) == {"tiny", "small", "base", "large"}
    assert terratim.sim_models.SIM_MICRO.dim == 64  # read from the bundled JSON
