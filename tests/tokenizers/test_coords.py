"""Coordinates tokenizer on a small vocabulary written in the official tokenizers-JSON format."""

from __future__ import annotations

import json

import pytest
import torch

from terratim.tokenizers.coords import CoordsTokenizer, snap, write_coords_vocab


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    path = tmp_path_factory.mktemp("coords") / "config.json"
    lats = [i * 0.25 for i in range(-8, 9)] + [47.25, 37.75]
    lons = [i * 0.25 for i in range(-8, 9)] + [8.5, -122.5]
    return write_coords_vocab(path, lats=lats, lons=lons)


def test_file_is_a_wordpiece_tokenizers_json(vocab):
    data = json.loads(vocab.read_text())
    assert data["model"]["type"] == "WordPiece"
    added = {t["content"]: t["id"] for t in data["added_tokens"]}
    assert added["[PAD]"] == 0 and added["[EOS]"] == 3 and added["[S_1]"] == 5
    assert "lat=47.25" in added and "lon=-122.50" in added


def test_encode_snaps_and_decodes_back(vocab):
    tok = CoordsTokenizer.from_file(vocab)
    coords = torch.tensor([[8.55, 47.37], [-122.4, 37.77], [0.1, -0.1], [-1.9, 1.13]])
    assert tok.texts(coords)[0] == "lat=47.25 lon=8.50 [EOS]"
    assert tok.texts(coords)[2] == "lat=0.00 lon=0.00 [EOS]"  # -0.0 is written as 0.00
    ids = tok.encode(coords)
    assert ids.shape == (4, 3) and ids.dtype == torch.int64 and bool((ids[:, 2] == 3).all())
    assert bool((ids[:, :2] > 6).all())  # one added token per lat= / lon= string
    torch.testing.assert_close(tok.decode(ids), snap(coords.double()) + 0.0)


def test_decode_failure_gives_nan(vocab):
    tok = CoordsTokenizer.from_file(vocab)
    good = tok.encode(torch.tensor([[0.5, 1.0]]))
    swapped = good[:, [1, 0, 2]]  # "lon=... lat=..." does not parse
    specials = torch.tensor([[3, 0, 0]])
    with pytest.warns(UserWarning, match="do not parse"):
        out = tok.decode(torch.cat([good, swapped, specials]))
    assert out[0].tolist() == [0.5, 1.0]
    assert bool(out[1:].isnan().all())


def test_bad_input_raises(vocab, tmp_path):
    tok = CoordsTokenizer.from_file(vocab)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        tok.encode(torch.zeros(3))
    with pytest.raises(ValueError, match="out of range"):
        tok.encode(torch.tensor([[0.0, 95.0]]))
    with pytest.raises(ValueError, match="finite"):
        tok.encode(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="lat=/lon= tokens"):
        tok.encode(torch.tensor([[0.0, 0.0], [100.0, 60.0]]))  # 60.00 / 100.00 are not in this vocabulary
    with pytest.raises(FileNotFoundError):
        CoordsTokenizer.from_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a tokenizers JSON"):
        CoordsTokenizer.from_file(bad)


def test_is_a_parameter_free_module(vocab):
    tok = CoordsTokenizer.from_file(vocab)
    modules = torch.nn.ModuleDict({"COORDS": tok}).eval().requires_grad_(False)
    assert modules["COORDS"] is tok and not list(tok.parameters())
