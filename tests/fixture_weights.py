"""Regenerate the parity fixtures' weights from their JSON recipes (see tests/fixtures/README.md).

The reference fixtures store random weights as a recipe (seeded splitmix64 uniform values) so the repository
stays small. ``materialize(set_name)`` rebuilds the exact float32 tensors, checks every one against its sha256
and writes them as an official-layout ``.pt`` (a plain ``torch.save`` of the state dict) that the tests then feed
to terratim's real checkpoint loader.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
CHUNK = 1 << 22


def cache_dir() -> Path:
    """Where materialized weights live between test runs."""
    # an empty value means unset: Path("") is the working directory, where 1.1 GB of weights do not belong
    root = Path(os.environ.get("TERRATIM_FIXTURE_CACHE") or Path.home() / ".cache" / "terratim-fixtures")
    root.mkdir(parents=True, exist_ok=True)
    return root


def key_seed(base_seed: int, key: str) -> np.uint64:
    digest = hashlib.sha256(f"{base_seed}:{key}".encode()).digest()
    return np.uint64(int.from_bytes(digest[:8], "little"))


def uniform01(seed: np.uint64, n: int) -> np.ndarray:
    """u_i for i = 1..n as float64, splitmix64 finaliser over seed + i * golden (mod 2^64)."""
    out = np.empty(n, dtype=np.float64)
    with np.errstate(over="ignore"):
        for start in range(0, n, CHUNK):
            i = np.arange(start + 1, min(n, start + CHUNK) + 1, dtype=np.uint64)
            z = seed + i * GOLDEN
            z = (z ^ (z >> np.uint64(30))) * MIX1
            z = (z ^ (z >> np.uint64(27))) * MIX2
            z = z ^ (z >> np.uint64(31))
            out[start : start + len(i)] = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return out


def _tensor(entry: dict, base_seed: int, explicit: dict[str, np.ndarray]) -> np.ndarray:
    shape = tuple(entry["shape"])
    init = entry["init"]
    if init == "explicit":
        return explicit[entry.get("explicit_key", entry["key"])].astype(np.float32).reshape(shape)
    if init == "zeros":
        return np.zeros(shape, np.float32)
    if init == "ones":
        return np.ones(shape, np.float32)
    if init == "uniform":
        n = int(np.prod(shape))
        u = uniform01(key_seed(base_seed, entry["key"]), n)
        return (entry["low"] + (entry["high"] - entry["low"]) * u).astype(np.float32).reshape(shape)
    raise ValueError(f"unknown init {init!r} for {entry['key']}")


def regenerate(set_name: str) -> dict[str, torch.Tensor]:
    """Rebuild a weights set as an ordered state dict with tied tensors shared, every sha256 checked."""
    spec = json.loads((FIXTURES / "weights" / f"{set_name}.spec.json").read_text())
    explicit = load_file(str(FIXTURES / "weights" / spec["explicit_file"]))
    state: dict[str, torch.Tensor] = {}
    aliases = []
    for entry in spec["tensors"]:
        if "alias_of" in entry:
            aliases.append(entry)
            state[entry["key"]] = None  # keep file order
            continue
        array = _tensor(entry, spec["base_seed"], explicit)
        digest = hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest()
        if digest != entry["sha256"]:
            raise AssertionError(f"recipe mismatch for {entry['key']}: sha256 {digest} != {entry['sha256']}")
        state[entry["key"]] = torch.from_numpy(array)
    for entry in aliases:
        state[entry["key"]] = state[entry["alias_of"]]
    return state


def materialize(set_name: str) -> Path:
    """Official-layout ``.pt`` for a weights set, regenerated once and cached."""
    path = cache_dir() / f"{set_name}.pt"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        torch.save(regenerate(set_name), tmp)
        tmp.rename(path)
    return path


def load_case(case: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """A parity case's manifest entry and its tensors (input.*, output.*, aux.*)."""
    from safetensors.torch import load_file as load_torch

    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    entry = manifest["cases"][case]
    return entry, load_torch(str(FIXTURES / entry["io_file"]))


def assert_close(ours: torch.Tensor, ref: torch.Tensor, tolerance: dict, what: str) -> None:
    """The manifest's rule: |ours - ref| <= atol + rtol * |ref| elementwise."""
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    ours = ours.detach().to(torch.float64).cpu()
    ref = ref.to(torch.float64)
    excess = (ours - ref).abs() - (tolerance["atol"] + tolerance["rtol"] * ref.abs())
    worst = float(excess.max())
    max_diff = float((ours - ref).abs().max())
    assert worst <= 0, f"{what}: exceeds tolerance {tolerance} by {worst:.3g} (max abs diff {max_diff:.3g})"
