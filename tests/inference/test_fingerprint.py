"""Resume fingerprints: files identified by content (sampled for large scenes), and what changed said plainly."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from terratim.inference.fingerprint import FORMAT, describe_changes, file_record, sampled_digest, whole_digest

SMALL = {"whole_below": 4096, "samples": 8, "sample": 64, "edge": 128}  # sampled form on a 64 KiB file


@pytest.fixture
def blob(tmp_path):
    path = tmp_path / "scene.bin"
    path.write_bytes(np.random.default_rng(0).bytes(64 * 1024))
    return path


def test_whole_digest_is_sha256_of_the_file(blob):
    assert whole_digest(blob) == "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
    assert sampled_digest(blob) == whole_digest(blob)  # small files are hashed whole


def test_sampled_digest_sees_a_same_size_rewrite(blob):
    before = sampled_digest(blob, **SMALL)
    assert before.startswith("sha256-sampled:")
    blob.write_bytes(np.random.default_rng(1).bytes(64 * 1024))  # other content, same size
    assert sampled_digest(blob, **SMALL) != before


def test_sampled_digest_covers_header_tail_and_spread_blocks(blob):
    """A one-byte change in the header, the tail or a sampled block changes the digest."""
    original = blob.read_bytes()
    before = sampled_digest(blob, **SMALL)
    step = (len(original) - SMALL["sample"]) / (SMALL["samples"] - 1)
    for offset in (10, len(original) - 10, round(3 * step) + 5):
        changed = bytearray(original)
        changed[offset] ^= 0xFF
        blob.write_bytes(bytes(changed))
        assert sampled_digest(blob, **SMALL) != before, offset
    blob.write_bytes(original)
    assert sampled_digest(blob, **SMALL) == before


def test_sampled_digest_reads_a_fixed_amount(blob, monkeypatch):
    """About 2 edges + samples x sample bytes, whatever the size (the cost stays flat on multi-GB scenes)."""
    read = []
    real_open = open

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def seek(self, offset):
            self.fh.seek(offset)

        def read(self, n):
            data = self.fh.read(n)
            read.append(len(data))
            return data

    monkeypatch.setattr("builtins.open", lambda path, mode="r": Counting(real_open(path, mode)))
    sampled_digest(blob, **SMALL)
    assert sum(read) == 2 * SMALL["edge"] + SMALL["samples"] * SMALL["sample"]


def record(**changes):
    fingerprint = {"format": FORMAT, "inputs": {"S1GRD": {"path": "/d/s1.tif", "size": 10, "digest": "sha256:a"}},
                   "tiling": {"chip": 224, "overlap": 32}, "weights": {"path": "/d/m.ckpt", "size": 5,
                   "digest": "sha256:b"}}
    for key, value in changes.items():
        fingerprint[key] = value
    return fingerprint


def test_changes_name_the_input_the_checkpoint_and_the_setting():
    old = record()
    assert describe_changes(old, record()) == []
    s1 = {"S1GRD": {"path": "/d/s1.tif", "size": 10, "digest": "sha256:c"}}
    assert describe_changes(old, record(inputs=s1)) == ["the S1GRD input /d/s1.tif has changed (same size, "
                                                        "other content)"]
    moved = {"S1GRD": {"path": "/e/s1.tif", "size": 10, "digest": "sha256:a"}}
    assert describe_changes(old, record(inputs=moved)) == ["the S1GRD input is now /e/s1.tif (was /d/s1.tif)"]
    weights = {"path": "/d/m.ckpt", "size": 6, "digest": "sha256:d"}
    assert describe_changes(old, record(weights=weights)) == ["the model checkpoint /d/m.ckpt has changed "
                                                              "(5 bytes then, 6 now)"]
    assert describe_changes(old, record(tiling={"chip": 224, "overlap": 16})) == [
        "setting tiling.overlap was 32, now 16"
    ]
    assert "another terratim version" in describe_changes({"inputs": {}}, old)[0]


def test_file_record_resolves_the_path(blob, monkeypatch):
    monkeypatch.chdir(blob.parent)
    rec = file_record("scene.bin", whole=True)
    assert rec == {"path": str(blob.resolve()), "size": 64 * 1024, "digest": whole_digest(blob)}
