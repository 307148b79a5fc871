"""Fixtures: tiny random-weight DEM and LULC tokenizers."""

from __future__ import annotations

import pytest
from tokenizer_helpers import randomize, tiny_config

from terratim.tokenizers import build_tokenizer


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
