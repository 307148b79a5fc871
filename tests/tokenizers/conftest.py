"""Fixtures: tiny random-weight DEM and LULC tokenizers; compiled Winograd kernels built into a temporary cache."""

from __future__ import annotations

import pytest
from tokenizer_helpers import randomize, tiny_config

from terratim.tokenizers import build_tokenizer


@pytest.fixture(scope="session", autouse=True)
def kernel_cache(tmp_path_factory):
    """Tests that build the compiled Winograd kernels write them here, never into the user's cache; the
    ``TERRATIM_NATIVE_KERNELS`` switch of the environment running the tests does not leak into them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TERRATIM_KERNEL_CACHE", str(tmp_path_factory.mktemp("kernels")))
        patch.delenv("TERRATIM_NATIVE_KERNELS", raising=False)
        yield


@pytest.fixture
def tiny_dem():
    tok = build_tokenizer("DEM", config=tiny_config("DEM"))
    randomize(tok)
    randomize(tok.decoder, seed=1)
    return tok.eval()


@pytest.fixture
def tiny_lulc():
    tok = build_tokenizer("LULC", config=tiny_config("LULC"))
    randomize(tok)
    randomize(tok.decoder, seed=1)
    return tok.eval()
