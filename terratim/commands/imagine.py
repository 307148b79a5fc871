"""``terratim imagine``: watch a TiM model think - decode the modalities it imagines for an input.

    terratim imagine --input S1GRD=a.tif --tim LULC --model terramind_v1_tiny_tim --pretrained --out DIR

Writes ``DIR/imagined_<MOD>.tif`` (input's georeferencing; LULC as a class map) and ``DIR/imagined.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from terratim.commands import add_modality_paths, modality_paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_modality_paths(parser, "--input", "-i", required=True,
                       help="input GeoTIFF per modality (square, side a multiple of 16)")  # fmt: skip
    parser.add_argument("--tim", default="LULC", help="modalities to imagine, comma separated (default LULC)")
    parser.add_argument("--model", default="terramind_v1_tiny_tim", help="a *_tim registry model")
    parser.add_argument("--ckpt", help="TerraMind weights (.pt official layout or .safetensors)")
    parser.add_argument("--pretrained", action="store_true", help="official weights from the Hugging Face hub")
    add_modality_paths(parser, "--tokenizer", help="tokenizer weights for decoding an imagined modality")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--temperature", type=float, default=0.0, help="TiM sampling temperature (0 = argmax)")
    parser.add_argument("--steps", type=int, default=10, help="diffusion steps for continuous modalities")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import terratim
    from terratim.commands.embed import load_inputs
    from terratim.data.geotiff import check_writable, read_geotiff, write_geotiff
    from terratim.generation.generate import build_tokenizers, decode_tokens
    from terratim.inference.heads import hex_colormap
    from terratim.modalities import LULC_COLORS, resolve
    from terratim.viz import save_panel

    files = modality_paths(args.input)
    tim = [resolve(n.strip()).name for n in args.tim.split(",") if n.strip()]
    targets = {name: args.out / f"imagined_{name}.tif" for name in tim}
    panel = args.out / "imagined.png"
    for path in [*targets.values(), panel]:
        check_writable(path, args.overwrite)
    model = terratim.build(args.model, modalities=list(files), tim_modalities=tim, tim_temps=args.temperature,
                           pretrained=args.pretrained, ckpt_path=args.ckpt).eval()  # fmt: skip
    tokenizers = {name: terratim.build(f"terramind_v1_tokenizer_{name.lower()}", ckpt_path=path)
                  for name, path in modality_paths(args.tokenizer, "--tokenizer").items()}  # fmt: skip
    missing = [n for n in tim if n not in tokenizers]
    if missing and not args.pretrained:
        raise SystemExit(f"no tokenizer for {missing}: pass --pretrained or --tokenizer {missing[0]}=PATH")
    tokenizers.update(build_tokenizers(missing, pretrained=True) if missing else {})
    inputs = load_inputs(files)
    generator = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        ids = model.imagine(inputs, generator)
        images = decode_tokens(ids, tokenizers, timesteps=args.steps, generator=generator)
    profile = read_geotiff(next(iter(files.values()))).profile
    panels = [(f"input {n}", n, read_geotiff(p).data) for n, p in files.items()]
    for name, path in targets.items():
        image = images[name][0].float().numpy()
        if name == "LULC":
            image = image.argmax(0).astype(np.uint8)
            write_geotiff(path, image, like=profile, overwrite=args.overwrite, colormap=hex_colormap(LULC_COLORS))
        else:
            write_geotiff(path, image.astype(np.float32), like=profile, overwrite=args.overwrite)
        panels.append((f"imagined {name}", name, image))
        print(f"wrote {path}")
    save_panel(panel, panels, title=f"{args.model}: what the model imagines")
    print(f"wrote {panel}")
    return 0
