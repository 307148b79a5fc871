"""Named architectures: the reference sizes and registered extra ones."""

from __future__ import annotations

import pytest

from terratim.model.config import SIZES, register_size, size_config


def test_reference_sizes_and_unknown_size_error():
    assert [size_config(s).dim for s in ("tiny", "small", "base", "large")] == [192, 384, 768, 1024]
    with pytest.raises(KeyError, match="unknown TerraMind size 'huge'"):
        size_config("huge")


def test_register_size_is_idempotent_and_refuses_a_different_architecture():
    import terratim.sim_models as sim  # registers "sim_micro" at import

    assert size_config("sim_micro") is sim.SIM_MICRO
    register_size("sim_micro", sim.SIM_MICRO)  # same config again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_size("tiny", sim.SIM_MICRO)
    assert SIZES["tiny"].dim == 192
