"""``terratim embed``: per-layer TerraMind embeddings of GeoTIFF inputs (default: the bundled real sample)."""

from __future__ import annotations

import argparse
import time

from terratim.commands import add_modality_paths, modality_paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="terramind_v1_tiny", help="backbone name (default terramind_v1_tiny)")
    add_modality_paths(
        parser, "--input", help="GeoTIFF per modality (repeatable); default: bundled TerraMesh S2L2A + S1RTC"
    )
    parser.add_argument("--ckpt", help="official-layout .pt or .safetensors checkpoint")
    parser.add_argument("--pretrained", action="store_true", help="download official weights from the hub")
    parser.add_argument("--merge", default="mean", choices=["mean", "max", "concat"], help="modality merge")
    parser.add_argument("--out", help="write the last layer's embedding as .npy")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--repeat", type=int, default=3, help="timed forward passes")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "auto"),
        default="fp32",
        help="fp32 (default), bf16 (autocast), auto (bf16 where the CPU has it natively)",
    )


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import terratim
    from terratim.data.geotiff import check_writable, raster_tensors, read_modality_rasters
    from terratim.precision import autocast, resolve_precision
    from terratim.samples import terramesh_file

    files = modality_paths(args.input) or {m: terramesh_file(m) for m in ("S2L2A", "S1RTC")}
    out = check_writable(args.out, args.overwrite) if args.out else None
    inputs = raster_tensors(read_modality_rasters(files))  # {name: (1, C, H, W)}, standardized
    model = terratim.build(
        args.model, modalities=list(inputs), merge_method=args.merge, pretrained=args.pretrained, ckpt_path=args.ckpt
    ).eval()
    weights = args.ckpt or ("official (hub)" if args.pretrained else "random initialisation")
    print(f"model {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {weights})")
    for name, path in files.items():
        print(f"  {name:<6} {tuple(inputs[name].shape)} from {path}")
    precision = resolve_precision(args.precision, "cpu", report=True)
    with torch.no_grad(), autocast(precision, "cpu"):
        layers = model(inputs)
        start = time.perf_counter()
        for _ in range(args.repeat):
            layers = model(inputs)
        elapsed = (time.perf_counter() - start) / max(args.repeat, 1)
    print(f"{len(layers)} layer outputs, each {tuple(layers[-1].shape)} (batch, tokens, width)")
    print(f"forward: {elapsed * 1000:.1f} ms per sample ({torch.get_num_threads()} threads, {precision})")
    if out is not None:
        np.save(out, layers[-1].float().numpy())
        print(f"wrote {out}")
    return 0
