"""The coordinates tokenizer: (lon, lat) as text on a 0.25 degree grid, through a WordPiece vocabulary.

TerraTorch counterpart: ``terratorch/models/backbones/terramind/tokenizer/text/text_tokenizer.py``.

A location becomes the text ``"lat={lat:.2f} lon={lon:.2f} [EOS]"`` after snapping both values to multiples of
0.25 degrees; the official vocabulary (``TerraMind-1.0-Tokenizer-Coords/config.json``, a Hugging Face
``tokenizers`` JSON file) holds every ``lat=...`` and ``lon=...`` string as one added token, so a location is
three ids. Decoding reads the first two ids back; anything that does not parse gives NaN.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn as nn

GRID = 0.25
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[SOS]", "[EOS]", "[S_0]", "[S_1]", "[S_2]")  # ids 0..6
EOS = "[EOS]"


def _tokenizers():
    try:
        import tokenizers
    except ImportError as err:
        raise ImportError("the coordinates tokenizer needs Hugging Face tokenizers: pip install tokenizers") from err
    return tokenizers


def snap(values: torch.Tensor) -> torch.Tensor:
    """Round to the nearest multiple of 0.25 degrees (ties to even, as ``torch.round``)."""
    return (values * 4).round() / 4


def coords_text(lon: float, lat: float) -> str:
    """The text of one snapped location; -0.0 is written as 0.00."""
    return f"lat={lat + 0.0:.2f} lon={lon + 0.0:.2f} {EOS}"


def build_wordpiece(added: Iterable[str] = ()):
    """A WordPiece tokenizer in the official layout: BERT normalizer and pre-tokenizer, WordPiece decoder, the
    special tokens [PAD]=0 ... [S_2]=6, then ``added`` as unnormalized added tokens (one id each)."""
    tk = _tokenizers()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    tokenizer = tk.Tokenizer(tk.models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = tk.normalizers.BertNormalizer()
    tokenizer.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = tk.decoders.WordPiece()
    tokenizer.add_special_tokens([tk.AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([tk.AddedToken(t, normalized=False) for t in added])
    return tokenizer


def write_coords_vocab(
    path: str | os.PathLike,
    lats: Iterable[float] | None = None,
    lons: Iterable[float] | None = None,
) -> Path:
    """Write a coordinates vocabulary file in the official format (default: the full 0.25 degree grid)."""
    lats = [i * GRID for i in range(-360, 361)] if lats is None else list(lats)
    lons = [i * GRID for i in range(-720, 721)] if lons is None else list(lons)
    added = [f"lat={v + 0.0:.2f}" for v in lats] + [f"lon={v + 0.0:.2f}" for v in lons]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    build_wordpiece(added).save(str(path))
    return path


class CoordsTokenizer(nn.Module):
    """Encode (lon, lat) pairs to token ids and back. A parameter-free module, so it sits in a ``ModuleDict``
    next to the image tokenizers.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` (see :meth:`from_file` / :meth:`pretrained`).
    """

    def __init__(self, tokenizer) -> None:
        super().__init__()
        self.tokenizer = tokenizer

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> CoordsTokenizer:
        """Load a ``tokenizers`` JSON file such as the official ``config.json``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"coordinates vocabulary not found: {path}")
        try:
            return cls(_tokenizers().Tokenizer.from_file(str(path)))
        except Exception as err:  # the Rust side raises plain Exceptions for malformed files
            raise ValueError(f"{path} is not a tokenizers JSON file ({err})") from err

    @classmethod
    def pretrained(cls) -> CoordsTokenizer:
        """The official vocabulary from the Hugging Face hub (or its cache)."""
        from terratim.modalities import MODALITIES
        from terratim.weights import hub_file

        coords = MODALITIES["COORDS"]
        if coords.tokenizer_repo is None or coords.tokenizer_file is None:
            raise ValueError("the COORDS modality record names no hub file for its vocabulary")
        return cls.from_file(hub_file(coords.tokenizer_repo, coords.tokenizer_file))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def texts(self, coords: torch.Tensor) -> list[str]:
        """(B, 2) [lon, lat] degrees -> the snapped texts."""
        if not isinstance(coords, torch.Tensor) or coords.dim() != 2 or coords.shape[1] != 2:
            shape = tuple(coords.shape) if isinstance(coords, torch.Tensor) else type(coords).__name__
            raise ValueError(f"coordinates must be a (B, 2) tensor of [lon, lat] degrees, got {shape}")
        lonlat = snap(coords.detach().double().cpu())
        lon, lat = lonlat[:, 0], lonlat[:, 1]
        if not bool(torch.isfinite(lonlat).all()):
            raise ValueError("coordinates must be finite")
        if bool((lat.abs() > 90).any()) or bool((lon.abs() > 180).any()):
            raise ValueError("coordinates out of range: need -180 <= lon <= 180 and -90 <= lat <= 90 ([lon, lat])")
        return [coords_text(float(o), float(a)) for o, a in zip(lon, lat, strict=True)]

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(B, 2) [lon, lat] -> token ids (B, L) int64 (L = 3 with the official vocabulary)."""
        encodings = self.tokenizer.encode_batch(self.texts(coords), add_special_tokens=True)
        lengths = {len(e.ids) for e in encodings}
        if len(lengths) != 1:
            raise ValueError(
                f"coordinate texts encoded to different lengths {sorted(lengths)}: the vocabulary "
                "lacks some lat=/lon= tokens"
            )
        return torch.tensor([e.ids for e in encodings], dtype=torch.int64, device=coords.device)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L >= 2) -> (B, 2) float [lon, lat]; NaN (with a warning) where the text does not parse."""
        if ids.dim() != 2 or ids.shape[1] < 2:
            raise ValueError(f"coordinate ids must have shape (B, L >= 2), got {tuple(ids.shape)}")
        out = torch.full((ids.shape[0], 2), math.nan, dtype=torch.float64)
        for i, row in enumerate(ids[:, :2].tolist()):
            text = self.tokenizer.decode(row, skip_special_tokens=False)
            parsed = _parse(text)
            if parsed is None:
                warnings.warn(f"generated coordinates do not parse: {text!r}; returning NaN", stacklevel=2)
            else:
                out[i] = torch.tensor(parsed, dtype=torch.float64)
        return out


def _parse(text: str) -> tuple[float, float] | None:
    parts = text.split()
    if len(parts) != 2 or not parts[0].startswith("lat=") or not parts[1].startswith("lon="):
        return None
    try:
        lat, lon = float(parts[0][4:]), float(parts[1][4:])
    except ValueError:
        return None
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return None
    return lon, lat
