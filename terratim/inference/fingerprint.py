"""What a resumed run must share with the interrupted one, recorded by content, and how to say what changed.

A progress file records, next to how far the run got, a fingerprint: the inputs, the model weights and the
settings that shape the output. Files are identified by content, not by name or date:

* scene inputs (often several GB): size plus a SHA-256 over the first and last 64 KiB (header, TIFF
  directories) and 256 blocks of 16 KiB spread evenly over the file, about 4 MiB read whatever the size.
  Files up to 16 MiB are hashed whole. A rewritten scene changes almost every sampled block; an edit that
  touches only bytes between the samples (a few pixels changed in place) is not seen.
* checkpoints: hashed whole, streamed. Fine-tuning may change only a small head inside a large file, which
  sampling could miss.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

FORMAT = 2  # fingerprint layout version; 1 recorded inputs by path and size only
WHOLE_BELOW = 16 * 2**20
EDGE = 64 * 2**10
SAMPLES = 256
SAMPLE = 16 * 2**10
CHUNK = 2**20


def sampled_digest(
    path: str | os.PathLike,
    whole_below: int = WHOLE_BELOW,
    samples: int = SAMPLES,
    sample: int = SAMPLE,
    edge: int = EDGE,
) -> str:
    """SHA-256 of ``path``: the whole file when smaller than ``whole_below``, else its edges and spread samples.

    The sampled form hashes the size, the first and last ``edge`` bytes and ``samples`` blocks of ``sample``
    bytes at evenly spaced offsets, so it reads ``2 edge + samples sample`` bytes whatever the file size.
    """
    size = os.path.getsize(path)
    if size < whole_below:
        return "sha256:" + whole_digest(path).split(":", 1)[1]
    digest = hashlib.sha256(f"size={size};edge={edge};samples={samples}x{sample};".encode())
    step = (size - sample) / max(samples - 1, 1)
    offsets = [0] + [round(i * step) for i in range(samples)] + [size - edge]
    lengths = [edge] + [sample] * samples + [edge]
    with open(path, "rb") as fh:
        for offset, length in zip(offsets, lengths):
            fh.seek(offset)
            digest.update(fh.read(length))
    return "sha256-sampled:" + digest.hexdigest()


def whole_digest(path: str | os.PathLike) -> str:
    """SHA-256 of the whole file, streamed in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def file_record(path: str | os.PathLike, whole: bool = False) -> dict:
    """``{"path", "size", "digest"}`` of a file (sampled digest unless ``whole``)."""
    path = Path(path)
    digest = whole_digest(path) if whole else sampled_digest(path)
    return {"path": str(path.resolve()), "size": path.stat().st_size, "digest": digest}


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict) and value:
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _file_change(what: str, old_record: object, new_record: object) -> str | None:
    """One sentence on how a recorded file differs, or None when it does not."""
    old = old_record if isinstance(old_record, dict) else {}
    new = new_record if isinstance(new_record, dict) else {}
    if not old or not new:
        return f"{what} was {'added' if new else 'removed'}" if old != new else None
    if old.get("path") != new.get("path"):
        return f"{what} is now {new.get('path')} (was {old.get('path')})"
    if old.get("size") != new.get("size"):
        return f"{what} {new['path']} has changed ({old.get('size')} bytes then, {new.get('size')} now)"
    if old.get("digest") != new.get("digest"):
        return f"{what} {new['path']} has changed (same size, other content)"
    return None


def describe_changes(old: dict, new: dict) -> list[str]:
    """Sentences naming what differs between a recorded fingerprint ``old`` and the current one ``new``."""
    old, new = json.loads(json.dumps(old)), json.loads(json.dumps(new))
    if old.get("format") != new.get("format"):
        return [
            f"the progress file was written by another terratim version (fingerprint format "
            f"{old.get('format', 1)}, now {new.get('format')}), which did not record input contents"
        ]
    changes = []
    files: dict[tuple[str, ...], str] = {
        ("inputs", n): f"the {n} input" for n in {**old.get("inputs", {}), **new.get("inputs", {})}
    }
    files[("weights",)] = "the model checkpoint"
    for keys, what in sorted(files.items()):
        a: object = old
        b: object = new
        for key in keys:
            a = a.get(key) if isinstance(a, dict) else None
            b = b.get(key) if isinstance(b, dict) else None
        if (change := _file_change(what, a, b)) is not None:
            changes.append(change)
    rest_old = {k: v for k, v in old.items() if k not in ("inputs", "weights")}
    rest_new = {k: v for k, v in new.items() if k not in ("inputs", "weights")}
    flat_old, flat_new = _flatten(rest_old), _flatten(rest_new)
    for key in sorted(set(flat_old) | set(flat_new)):
        a, b = flat_old.get(key, "(not set)"), flat_new.get(key, "(not set)")
        if a != b:
            changes.append(f"setting {key} was {json.dumps(a)}, now {json.dumps(b)}")
    return changes
