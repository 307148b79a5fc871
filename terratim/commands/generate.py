"""``terratim generate``: any-to-any generation from GeoTIFF inputs to georeferenced GeoTIFF outputs.

    terratim generate --input S2L2A=a.tif --output LULC,DEM --model terramind_v1_tiny_generate --pretrained \
        --out DIR [--steps 10] [--decoding-steps 1] [--temperature 1] [--seed 0]

Sampling flags (``--scheme``, ``--decoding-steps``, ``--temperature``, ``--top-k``, ``--top-p``, ``--token-schedule``,
``--temperature-schedule``, ``--cfg-scale``) become one :class:`~terratim.generation.settings.GenerationSettings`.

Writes ``DIR/<OUTPUT>.tif`` per output (the input's CRS and transform; LULC as a uint8 class map with a colour
table) and ``DIR/panel.png`` with inputs and outputs. Inputs larger than the model's image size run tiled with
overlap and raised-cosine blending through the streaming scene engine. Each output is conditioned on the outputs
generated before it (TerraTorch 1.2.13's behaviour); ``--independent-outputs`` generates each from the inputs alone.

Inputs are checked before the model is built: they must share one grid (CRS, transform, size) and each must have
a valid pixel. A run that fails removes the outputs, partial files and folders it created.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from terratim.commands import add_modality_paths, modality_paths
from terratim.generation.settings import add_cli_arguments, from_cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_modality_paths(parser, "--input", "-i", required=True,
                       help="input GeoTIFF per modality (repeat for several; co-registered)")  # fmt: skip
    parser.add_argument("--output", required=True, help="modalities to generate, comma separated (e.g. LULC,DEM)")
    parser.add_argument("--model", default="terramind_v1_tiny_generate", help="a *_generate registry model")
    parser.add_argument("--ckpt", help="TerraMind weights (.pt official layout or .safetensors)")
    parser.add_argument("--pretrained", action="store_true", help="official weights from the Hugging Face hub")
    add_modality_paths(parser, "--tokenizer",
                       help="tokenizer weights per output (default: official, with --pretrained)")  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--steps", type=int, default=10, help="diffusion (DDIM) steps for continuous outputs")
    add_cli_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of all sampling randomness")
    parser.add_argument("--chip", type=int, default=224, help="tile size for inputs larger than this")
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels")
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def build_model(args: argparse.Namespace, inputs: list[str], outputs: list[str]):
    import terratim

    tokenizers = {name: terratim.build(f"terramind_v1_tokenizer_{name.lower()}", ckpt_path=path)
                  for name, path in modality_paths(args.tokenizer, "--tokenizer").items()}  # fmt: skip
    if not args.pretrained:
        missing = [n for n in outputs if n not in tokenizers]
        if missing:
            raise SystemExit(f"no tokenizer weights for {missing}: pass --pretrained (official weights) or "
                             f"--tokenizer {missing[0]}=PATH")  # fmt: skip
    model = terratim.build(args.model, modalities=inputs, output_modalities=outputs, pretrained=args.pretrained,
                           ckpt_path=args.ckpt, settings=from_cli(args, timesteps=args.steps), standardize=True,
                           tokenizers=tokenizers)  # fmt: skip
    return model.eval().to(args.device)


@contextmanager
def outputs_or_nothing(paths: Sequence[Path], overwrite: bool) -> Iterator[None]:
    """Check every output can be written (creating its folder) before the work; if the work fails, remove what
    this run created: outputs, their ``.partial`` and ``.progress.json`` files and the folders it made."""
    from terratim.data.geotiff import check_writable, make_folder
    from terratim.inference.scene import partial_path, progress_path

    leftovers = [q for p in paths for q in (Path(p), partial_path(Path(p)), progress_path(Path(p)))]
    existed = {q for q in leftovers if q.exists()}
    created = [folder for p in paths for folder in make_folder(Path(p).parent, for_file=Path(p))]
    try:
        for path in paths:
            check_writable(path, overwrite)
        yield
    except BaseException:
        for leftover in leftovers:
            if leftover not in existed:
                leftover.unlink(missing_ok=True)
        for folder in reversed(created):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def run(args: argparse.Namespace) -> int:
    from terratim.modalities import resolve

    files = modality_paths(args.input)
    outputs = [resolve(n.strip()).name for n in args.output.split(",") if n.strip()]
    targets = {name: args.out / f"{name}.tif" for name in outputs}
    panel = args.out / "panel.png"
    with outputs_or_nothing([*targets.values(), panel], args.overwrite):
        generate(args, files, targets, panel)
    for path in [*targets.values(), panel]:
        print(f"wrote {path}")
    return 0


def generate(args: argparse.Namespace, files: dict[str, Path], targets: dict[str, Path], panel: Path) -> None:
    """Check the inputs, build the model, generate every target and draw the panel."""
    import torch

    from terratim.inference.scene import SceneReader
    from terratim.modalities import resolve

    reader = SceneReader(files, {n: resolve(n).num_bands for n in files})  # checks one grid, valid pixels
    try:
        model = build_model(args, list(files), list(targets))
        info = reader.info
        generator = torch.Generator().manual_seed(args.seed)
        small = info.height == info.width and info.height <= args.chip and info.height % 16 == 0
        if small:
            direct(model, reader, targets, generator, args)
    finally:
        reader.close()
    if not small:
        tiled(model, files, targets, generator, args)
    write_panel(files, targets, panel)


def direct(model, reader, targets: dict, generator, args: argparse.Namespace) -> None:
    """One forward pass over the whole (small, square) input."""
    import numpy as np
    import torch

    from terratim.data.geotiff import write_geotiff
    from terratim.inference.heads import hex_colormap
    from terratim.modalities import resolve

    arrays = reader.read_rows(0, reader.info.height)
    for name, array in arrays.items():
        if np.isnan(array).any():
            raise SystemExit(f"{name}: {reader.paths[name]} has nodata pixels; generation needs complete inputs")
    batch = {n: torch.from_numpy(a)[None].to(args.device) for n, a in arrays.items()}
    with torch.no_grad():
        result = model(batch, generator=generator)
    profile = reader.datasets[next(iter(arrays))].profile
    for name, path in targets.items():
        image = result[name][0].float().cpu().numpy()
        modality = resolve(name)
        if modality.is_categorical:
            write_geotiff(path, image.argmax(0).astype(np.uint8), like=profile, overwrite=args.overwrite,
                          colormap=hex_colormap(modality.colors))  # fmt: skip
        else:
            write_geotiff(path, image.astype(np.float32), like=profile, overwrite=args.overwrite)


def tiled(model, files: dict[str, str], targets: dict, generator, args: argparse.Namespace) -> None:
    """Chip the scene, generate per chip, blend (LULC logits before argmax), stream to disk."""
    from terratim.inference.adapters import generation_predictor
    from terratim.inference.engine import TilingConfig, infer_scene

    predictor = generation_predictor(model, args.out / "generated.tif", generator=generator, timesteps=args.steps)
    for head, path in zip(predictor.heads, targets.values()):
        head.path = path
    tiling = TilingConfig(chip=args.chip, overlap=args.overlap, batch_size=args.batch_size)
    infer_scene(predictor.predict, files, predictor.heads, tiling, bands=predictor.bands, device=args.device,
                fill=predictor.fill, overwrite=args.overwrite)  # fmt: skip


def write_panel(files: dict[str, str], targets: dict, path: Path, max_side: int = 1024) -> None:
    """PNG with every input and output, decimated to at most ``max_side`` pixels."""
    from terratim.data.geotiff import read_geotiff
    from terratim.viz import save_panel

    panels = []
    for kind, entries in (("input", files), ("generated", targets)):
        for name, file in entries.items():
            data = read_geotiff(file).data
            step = max(1, max(data.shape[-2:]) // max_side)
            panels.append((f"{kind} {name}", name, data[:, ::step, ::step]))
    save_panel(path, panels, title="terratim generate")
