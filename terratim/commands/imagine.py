"""``terratim imagine``: watch a TiM model think - decode the modalities it imagines for an input.

    terratim imagine --input S1GRD=a.tif --tim LULC --model terramind_v1_tiny_tim --pretrained --out DIR

Sampling flags as for ``terratim generate`` (``--temperature`` defaults to 0 here: argmax);
``--independent-outputs`` imagines every ``--tim`` modality from the inputs alone. ``--tim`` (or its alias
``--output``) gives the modalities in imagination order. An input file lacking pretrained bands needs ``--bands``
and ``--fill-missing-bands``, as for ``terratim generate``.

Writes ``DIR/imagined_<MOD>.tif`` (input's georeferencing; LULC as a class map) and ``DIR/imagined.png``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from terratim.commands import add_modality_paths, modality_paths
from terratim.commands.generate import add_band_arguments
from terratim.generation.settings import add_cli_arguments, from_cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_modality_paths(
        parser, "--input", "-i", required=True, help="input GeoTIFF per modality (square, side a multiple of 16)"
    )
    parser.add_argument(
        "--tim",
        "--output",
        dest="tim",
        default="LULC",
        help="modalities to imagine, comma separated, in this order (default LULC)",
    )
    parser.add_argument("--model", default="terramind_v1_tiny_tim", help="a *_tim registry model")
    parser.add_argument("--ckpt", help="TerraMind weights (.pt official layout or .safetensors)")
    parser.add_argument("--pretrained", action="store_true", help="official weights from the Hugging Face hub")
    add_modality_paths(parser, "--tokenizer", help="tokenizer weights for decoding an imagined modality")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    add_band_arguments(parser)
    add_cli_arguments(parser, temperature=0.0)
    parser.add_argument("--steps", type=int, default=10, help="diffusion steps for continuous modalities")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "auto"),
        default="fp32",
        help="fp32 (default), bf16 (autocast), auto (bf16 where the CPU has it natively)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def tokenizer_name(model: str, modality: str) -> str:
    """The registry name of ``model``'s own tokenizer for ``modality`` (``<family>_tokenizer_<mod>``, e.g. the
    bundled ``terramind_sim_micro_tokenizer_lulc``), or the official one when the family has none."""
    import re

    from terratim.registry import list_models

    family = re.sub(r"_(tim|generate)$", "", model)
    own = f"{family}_tokenizer_{modality.lower()}"
    return own if own in list_models() else f"terramind_v1_tokenizer_{modality.lower()}"


def run(args: argparse.Namespace) -> int:
    from terratim.commands.generate import output_names, outputs_or_nothing

    files = modality_paths(args.input)
    tim = output_names(args.tim, "--tim")
    targets = {name: args.out / f"imagined_{name}.tif" for name in tim}
    panel = args.out / "imagined.png"
    with outputs_or_nothing([*targets.values(), panel], args.overwrite):
        imagine(args, files, targets, panel)
    for path in [*targets.values(), panel]:
        print(f"wrote {path}")
    return 0


def build_tokenizers(args: argparse.Namespace, names: list[str]) -> dict:
    """Tokenizers to decode ``names``: ``--tokenizer`` files, then (``--pretrained``) the model's own."""
    import terratim

    tokenizers = {
        name: terratim.build(f"terramind_v1_tokenizer_{name.lower()}", ckpt_path=path)
        for name, path in modality_paths(args.tokenizer, "--tokenizer").items()
    }
    missing = [n for n in names if n not in tokenizers]
    if missing and not args.pretrained:
        raise SystemExit(f"no tokenizer for {missing}: pass --pretrained or --tokenizer {missing[0]}=PATH")
    for name in missing:
        tokenizers[name] = terratim.build(tokenizer_name(args.model, name), pretrained=True)
    return tokenizers


def read_inputs(files: Mapping[str, Path], layout: Mapping[str, Sequence[str]]) -> dict:
    """``{name: Raster}``: each file checked for its band count (``layout``'s for files lacking bands), a valid
    pixel, and one common grid."""
    from terratim.commands.generate import band_counts
    from terratim.data.geotiff import check_same_grid, read_geotiff, require_valid_pixels

    counts = band_counts(files, layout)
    rasters = {}
    for name, path in files.items():
        rasters[name] = read_geotiff(path, expected_bands=counts[name], what=name)
        require_valid_pixels(rasters[name], name)
    check_same_grid(rasters)
    return rasters


def input_tensors(rasters: Mapping[str, Any], layout: Mapping[str, Sequence[str]]) -> dict:
    """``{name: (1, C, H, W)}``: images standardized with the statistics of the bands the file holds."""
    import torch

    from terratim.modalities import resolve

    tensors = {}
    for name, raster in rasters.items():
        modality = resolve(name)
        x = torch.from_numpy(raster.data)[None]  # (1, C, H, W)
        bands = tuple(layout[name]) if name in layout else None
        tensors[name] = modality.standardize(x, bands) if modality.kind == "image" else x
    return tensors


def imagine(args: argparse.Namespace, files: dict[str, Path], targets: dict[str, Path], panel: Path) -> None:
    """Read and check the inputs, imagine the ``--tim`` modalities, decode and write them with a panel."""
    import numpy as np
    import torch

    import terratim
    from terratim.commands.generate import band_layout, band_options
    from terratim.data.geotiff import color_table, write_geotiff
    from terratim.generation.generate import decode_tokens
    from terratim.modalities import resolve
    from terratim.precision import precision_context
    from terratim.viz import save_panel

    layout = band_layout(args, list(files))
    rasters = read_inputs(files, layout)
    model: Any = terratim.build(
        args.model,
        modalities=list(files),
        tim_modalities=list(targets),
        tim_settings=from_cli(args, timesteps=args.steps),
        pretrained=args.pretrained,
        ckpt_path=args.ckpt,
        **band_options(args, layout),
    ).eval()
    tokenizers = build_tokenizers(args, list(targets))
    generator = torch.Generator().manual_seed(args.seed)
    with torch.no_grad(), precision_context(args.precision, "cpu"):
        ids = model.imagine(input_tensors(rasters, layout), generator, outputs=list(targets))
        images = decode_tokens(ids, tokenizers, timesteps=args.steps, generator=generator)
    profile = next(iter(rasters.values())).profile
    panels = [
        (f"input {n}", n, resolve(n).fill_bands(r.data, layout[n], standardized=False) if n in layout else r.data)
        for n, r in rasters.items()
    ]
    for name, path in targets.items():
        image = images[name][0].float().numpy()
        modality = resolve(name)
        if modality.is_categorical:
            image = image.argmax(0).astype(np.uint8)
            write_geotiff(path, image, like=profile, overwrite=args.overwrite, colormap=color_table(modality.colors))
        else:
            write_geotiff(path, image.astype(np.float32), like=profile, overwrite=args.overwrite)
        panels.append((f"imagined {name}", name, image))
    save_panel(panel, panels, title=f"{args.model}: what the model imagines")
