"""Architecture configs: one dataclass, a fixed table of named sizes (the TerraMind v1 sizes as TerraTorch
registers them in terratorch/models/backbones/terramind/model/terramind_register.py), and the versioned
:class:`CheckpointConfig` written as JSON next to every TerraMind weights file this project writes and read back
by every builder (so a file with its JSON needs no size name)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class TerraMindConfig:
    """Everything that fixes the shapes of a TerraMind network.

    Attributes:
        dim: token width D.
        encoder_depth: number of encoder blocks.
        decoder_depth: number of decoder blocks (0 builds an encoder-only network).
        num_heads: attention heads (head width D / heads).
        mlp_hidden: hidden width of the MLP.
        gated_mlp: SwiGLU without biases (base/large) instead of a GELU MLP with biases (tiny/small).
        bias: biases in qkv, attention projections and the MLP.
        patch_size: pixels per patch side.
        img_size: image side the position tables are built for.
        max_sequence_length: rows of the sequence (coordinates) position tables.
    """

    dim: int
    encoder_depth: int
    decoder_depth: int
    num_heads: int
    mlp_hidden: int
    gated_mlp: bool
    bias: bool
    patch_size: int = 16
    img_size: int = 224
    max_sequence_length: int = 512

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    def with_(self, **changes) -> TerraMindConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "the config") -> TerraMindConfig:
        """The config a :meth:`to_dict` mapping describes; unknown or missing fields are an error naming them."""
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        unknown, missing = sorted(set(data) - names), sorted(required - set(data))
        if unknown or missing:
            raise ValueError(f"{source}: not a TerraMind architecture (unknown fields {unknown}, missing {missing})")
        return cls(**dict(data))

    def same_network(self, other: TerraMindConfig) -> bool:
        """Same weight shapes; ``img_size`` may differ (position tables are rebuilt for another size)."""
        return self.with_(img_size=0) == other.with_(img_size=0)

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.to_dict().items() if k != "img_size")


SIZES: dict[str, TerraMindConfig] = {
    "tiny": TerraMindConfig(
        dim=192, encoder_depth=12, decoder_depth=4, num_heads=3, mlp_hidden=768, gated_mlp=False, bias=True
    ),
    "small": TerraMindConfig(
        dim=384, encoder_depth=12, decoder_depth=6, num_heads=6, mlp_hidden=1536, gated_mlp=False, bias=True
    ),
    "base": TerraMindConfig(
        dim=768, encoder_depth=12, decoder_depth=12, num_heads=12, mlp_hidden=2048, gated_mlp=True, bias=False
    ),
    "large": TerraMindConfig(
        dim=1024, encoder_depth=24, decoder_depth=24, num_heads=16, mlp_hidden=2730, gated_mlp=True, bias=False
    ),
}


def size_config(size: str | TerraMindConfig) -> TerraMindConfig:
    """The architecture of a named size; a ``TerraMindConfig`` (read from a checkpoint's JSON) is returned as is."""
    if isinstance(size, TerraMindConfig):
        return size
    if size not in SIZES:
        raise KeyError(f"unknown TerraMind size {size!r}; sizes: {list(SIZES)}")
    return SIZES[size]


CHECKPOINT_FORMAT = "terratim-terramind"
CHECKPOINT_VERSION = 2
_CONVERT_V1 = "terratim-terramind/1"  # written by `terratim convert` before the version field


@dataclass(frozen=True)
class CheckpointConfig:
    """What a TerraMind weights file holds, saved as ``X.json`` next to ``X.safetensors``.

    Attributes:
        architecture: the network's shapes (``img_size``: the size it was trained at).
        size: the official size name it has (``"tiny"``...), or None for another architecture.
        modality_keys: the embedding keys in the file (``untok_sen2l2a@224``, ``tok_lulc@224``...).
        metadata: how it was made: ``source`` (converted file), ``inputs`` / ``targets`` / ``masking``
            (pretraining).
        version: the schema version (:data:`CHECKPOINT_VERSION`).
    """

    architecture: TerraMindConfig
    size: str | None = None
    modality_keys: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict)
    version: int = CHECKPOINT_VERSION

    def to_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": self.version,
            "size": self.size,
            "architecture": self.architecture.to_dict(),
            "modality_keys": list(self.modality_keys),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "the config") -> CheckpointConfig:
        """Read the current schema and the two older shapes (``terratim convert`` format 1, and the pretraining
        export's ``{"terramind": ..., "inputs", "targets", "masking"}``)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") == CHECKPOINT_FORMAT:
            version = data.get("version")
            if not isinstance(version, int) or version > CHECKPOINT_VERSION:
                raise ValueError(
                    f"{source}: config version {version!r} is not one this terratim reads "
                    f"(up to {CHECKPOINT_VERSION}); upgrade terratim"
                )
            return cls(
                TerraMindConfig.from_dict(data["architecture"], source),
                data.get("size"),
                tuple(data.get("modality_keys") or ()),
                dict(data.get("metadata") or {}),
            )
        if data.get("format") == _CONVERT_V1:
            return cls(
                TerraMindConfig.from_dict(data["architecture"], source),
                data.get("size"),
                tuple(data.get("modality_keys") or ()),
                {"source": data.get("source")},
            )
        if "terramind" in data and "format" not in data:
            metadata = {k: data[k] for k in ("inputs", "targets", "masking") if k in data}
            return cls(TerraMindConfig.from_dict(data["terramind"], source), None, (), metadata)
        raise ValueError(
            f"{source} is not a terratim TerraMind config (no 'format': {CHECKPOINT_FORMAT!r}); "
            "re-run `terratim convert` on the original .pt to write one"
        )
