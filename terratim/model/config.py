"""Architecture configs: one dataclass, a table of named sizes (the TerraMind v1 sizes as TerraTorch registers them
in terratorch/models/backbones/terramind/model/terramind_register.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


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


SIZES: dict[str, TerraMindConfig] = {
    "tiny": TerraMindConfig(dim=192, encoder_depth=12, decoder_depth=4, num_heads=3, mlp_hidden=768,
                            gated_mlp=False, bias=True),
    "small": TerraMindConfig(dim=384, encoder_depth=12, decoder_depth=6, num_heads=6, mlp_hidden=1536,
                             gated_mlp=False, bias=True),
    "base": TerraMindConfig(dim=768, encoder_depth=12, decoder_depth=12, num_heads=12, mlp_hidden=2048,
                            gated_mlp=True, bias=False),
    "large": TerraMindConfig(dim=1024, encoder_depth=24, decoder_depth=24, num_heads=16, mlp_hidden=2730,
                             gated_mlp=True, bias=False),
}  # fmt: skip


def register_size(size: str, config: TerraMindConfig) -> None:
    """Add a named architecture (e.g. the bundled ``sim_micro``) so that every builder accepts ``size``.
    Registering the same config again is a no-op; a different config under a taken name is an error."""
    if SIZES.get(size, config) != config:
        raise ValueError(f"TerraMind size {size!r} is already registered with another architecture")
    SIZES[size] = config


def size_config(size: str) -> TerraMindConfig:
    if size not in SIZES:
        raise KeyError(f"unknown TerraMind size {size!r}; sizes: {list(SIZES)}")
    return SIZES[size]
