"""``terratim convert SRC.pt DST.safetensors``: official checkpoint -> safetensors + JSON config (a
:class:`~terratim.model.config.CheckpointConfig`, so ``terratim.registry.build_from_file(DST)`` needs no size)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="official-layout .pt (e.g. TerraMind_v1_base.pt)")
    parser.add_argument("dst", help="output .safetensors (a .json config is written next to it)")
    parser.add_argument(
        "--size", choices=["tiny", "small", "base", "large"], help="model size (default: inferred from the file)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def infer_size(state: dict) -> str:
    """TerraMind size from the checkpoint's shapes."""
    from terratim.model.config import SIZES

    width = state["encoder_norm.weight"].shape[0]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("encoder."))
    for size, config in SIZES.items():
        if config.dim == width and config.encoder_depth == depth:
            return size
    raise SystemExit(f"no TerraMind size has width {width} and depth {depth}; pass --size")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from terratim.data.geotiff import check_writable
    from terratim.model.config import SIZES, CheckpointConfig
    from terratim.weights import read_state_dict, save_safetensors

    dst = Path(args.dst)
    if dst.suffix != ".safetensors":
        raise SystemExit(f"destination must end in .safetensors, got {dst}")
    check_writable(dst, args.overwrite)
    check_writable(dst.with_suffix(".json"), args.overwrite)
    state = read_state_dict(args.src)
    size = args.size or infer_size(state)
    keys = sorted({k.split(".")[1] for k in state if k.startswith(("encoder_embeddings.", "decoder_embeddings."))})
    config = CheckpointConfig(SIZES[size], size, tuple(keys), {"source": str(args.src)})
    save_safetensors(state, dst, config)
    print(f"wrote {dst} ({len(state)} tensors, TerraMind {size}) and {dst.with_suffix('.json')}")
    return 0
