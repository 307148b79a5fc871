"""``terratim generate``: any-to-any generation from GeoTIFF inputs to georeferenced GeoTIFF outputs.

    terratim generate --input S2L2A=a.tif --output LULC,DEM --model terramind_v1_tiny_generate --pretrained \
        --out DIR [--steps 10] [--decoding-steps 1] [--temperature 1] [--seed 0]

Sampling flags (``--scheme``, ``--decoding-steps``, ``--temperature``, ``--top-k``, ``--top-p``, ``--token-schedule``,
``--temperature-schedule``, ``--cfg-scale``) become one :class:`~terratim.generation.settings.GenerationSettings`.

Writes ``DIR/<OUTPUT>.tif`` per output (the input's CRS and transform; LULC as a uint8 class map with a colour
table) and ``DIR/panel.png`` with inputs and outputs. Inputs larger than the model's image size run tiled with
overlap and raised-cosine blending through the streaming scene engine. Each output is conditioned on the outputs
generated before it (TerraTorch 1.2.13's behaviour); ``--independent-outputs`` generates each from the inputs alone.

Inputs are checked before the model is built: they must share one grid (CRS, transform, size), each must have
a valid pixel and every pretrained band of its modality. An input lacking bands needs ``--bands S2L2A=BLUE,...``
(the bands the file holds, in order) and ``--fill-missing-bands``, which fills the absent ones with their
pretraining mean and warns that the result degrades. A run that fails removes the outputs, partial files and
folders it created.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from terratim.commands import add_modality_paths, modality_paths
from terratim.generation.settings import add_cli_arguments, from_cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_modality_paths(
        parser, "--input", "-i", required=True, help="input GeoTIFF per modality (repeat for several; co-registered)"
    )
    parser.add_argument(
        "--output", required=True, help="modalities to generate, comma separated, in this order (e.g. LULC,DEM)"
    )
    parser.add_argument("--model", default="terramind_v1_tiny_generate", help="a *_generate registry model")
    parser.add_argument("--ckpt", help="TerraMind weights (.pt official layout or .safetensors)")
    parser.add_argument("--pretrained", action="store_true", help="official weights from the Hugging Face hub")
    add_modality_paths(
        parser, "--tokenizer", help="tokenizer weights per output (default: official, with --pretrained)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--steps", type=int, default=10, help="diffusion (DDIM) steps for continuous outputs")
    add_band_arguments(parser)
    add_cli_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of all sampling randomness")
    parser.add_argument("--chip", type=int, default=224, help="tile size for inputs larger than this")
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels")
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "auto"),
        default="fp32",
        help="fp32 (default), bf16 (autocast), auto (bf16 where the device has it natively)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def add_band_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """``--bands MODALITY=B1,B2,...`` (repeatable) and ``--fill-missing-bands``, read by :func:`band_layout`."""
    parser.add_argument(
        "--bands",
        action="append",
        default=[],
        metavar="MODALITY=BAND,BAND,...",
        help="the bands an input file holds, in order, when it lacks pretrained bands (e.g. "
        "S2L2A=BLUE,GREEN,RED,NIR_NARROW,SWIR_1,SWIR_2); needs --fill-missing-bands",
    )
    parser.add_argument(
        "--fill-missing-bands",
        action="store_true",
        help="fill the pretrained bands missing from --bands with their pretraining mean (0 after "
        "standardization); warns, since results degrade",
    )


def band_layout(args: argparse.Namespace, inputs: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``{input modality: bands its file holds}`` from ``--bands`` (checked; warns about filled bands)."""
    from terratim.generation.generate import input_band_fill
    from terratim.modalities import resolve

    bands: dict[str, list[str]] = {}
    for item in args.bands:
        name, sep, listed = item.partition("=")
        names = [b.strip() for b in listed.split(",") if b.strip()]
        if not sep or not name or not names:
            raise ValueError(f"--bands {item!r}: expected MODALITY=BAND,BAND,..., e.g. S2L2A=BLUE,GREEN,RED")
        canonical = resolve(name).name
        if canonical in bands:
            raise ValueError(f"--bands {canonical} is given twice")
        bands[canonical] = names
    if args.fill_missing_bands and not bands:
        raise ValueError("--fill-missing-bands needs --bands MODALITY=BAND,... naming the bands each file holds")
    return input_band_fill(list(inputs), bands, fill_method(args))


def fill_method(args: argparse.Namespace) -> str | None:
    """The ``fill_missing_bands`` value ``--fill-missing-bands`` asks for."""
    return "mean" if args.fill_missing_bands else None


def band_counts(files: Mapping[str, Path], layout: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Bands each input file must hold; a file with another count raises, pointing at ``--bands``."""
    import rasterio

    from terratim.modalities import resolve

    counts = {}
    for name, path in files.items():
        counts[name] = len(layout[name]) if name in layout else resolve(name).num_bands
        if not Path(path).is_file():
            raise FileNotFoundError(f"{name} input {path} does not exist")
        with rasterio.open(path) as dataset:
            if dataset.count != counts[name]:
                raise ValueError(
                    f"{name} input {path} has {dataset.count} bands, expected {counts[name]}; for a "
                    f"file lacking pretrained bands pass --bands {name}=BAND,... (the bands it holds) "
                    "and --fill-missing-bands"
                )
    return counts


def build_model(
    args: argparse.Namespace, inputs: list[str], outputs: list[str], layout: Mapping[str, Sequence[str]] | None = None
):
    import terratim

    tokenizers = {
        name: terratim.build(f"terramind_v1_tokenizer_{name.lower()}", ckpt_path=path)
        for name, path in modality_paths(args.tokenizer, "--tokenizer").items()
    }
    if not args.pretrained:
        missing = [n for n in outputs if n not in tokenizers]
        if missing:
            raise SystemExit(
                f"no tokenizer weights for {missing}: pass --pretrained (official weights) or "
                f"--tokenizer {missing[0]}=PATH"
            )
    model = terratim.build(
        args.model,
        modalities=inputs,
        output_modalities=outputs,
        pretrained=args.pretrained,
        ckpt_path=args.ckpt,
        settings=from_cli(args, timesteps=args.steps),
        standardize=True,
        tokenizers=tokenizers,
        **band_options(args, layout),
    )
    return model.eval().to(args.device)


def band_options(args: argparse.Namespace, layout: Mapping[str, Sequence[str]] | None) -> dict:
    """The builder keywords for inputs lacking bands (none when every input has all its bands)."""
    if not layout:
        return {}
    return {"bands": {n: list(b) for n, b in layout.items()}, "fill_missing_bands": fill_method(args)}


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


def output_names(text: str, flag: str) -> list[str]:
    """``"LULC,DEM"`` -> canonical modality names in that order; an empty list or a repeat raises."""
    from terratim.modalities import resolve

    names = [resolve(n.strip()).name for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"{flag} is empty; name at least one modality, e.g. {flag} LULC")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{flag} names {repeated} more than once; name each modality once")
    return names


def run(args: argparse.Namespace) -> int:
    files = modality_paths(args.input)
    targets = {name: args.out / f"{name}.tif" for name in output_names(args.output, "--output")}
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
    from terratim.precision import resolve_precision

    layout = band_layout(args, list(files))
    reader = SceneReader(dict(files), band_counts(files, layout))  # checks one grid, valid pixels
    try:
        model = build_model(args, list(files), list(targets), layout)
        args.precision = resolve_precision(args.precision, args.device, report=True)
        info = reader.info
        generator = torch.Generator().manual_seed(args.seed)
        small = info.height == info.width and info.height <= args.chip and info.height % 16 == 0
        if small:
            direct(model, reader, targets, generator, args)
    finally:
        reader.close()
    if not small:
        tiled(model, files, targets, generator, args, layout)
    write_panel(files, targets, panel, layout)


def direct(model, reader, targets: dict, generator, args: argparse.Namespace) -> None:
    """One forward pass over the whole (small, square) input."""
    import numpy as np
    import torch

    from terratim.data.geotiff import color_table, write_geotiff
    from terratim.modalities import resolve
    from terratim.precision import autocast

    arrays = reader.read_rows(0, reader.info.height)
    for name, array in arrays.items():
        if np.isnan(array).any():
            raise SystemExit(f"{name}: {reader.paths[name]} has nodata pixels; generation needs complete inputs")
    batch = {n: torch.from_numpy(a)[None].to(args.device) for n, a in arrays.items()}
    with torch.no_grad(), autocast(args.precision, args.device):
        result = model(batch, generator=generator, outputs=list(targets))
    profile = reader.datasets[next(iter(arrays))].profile
    for name, path in targets.items():
        image = result[name][0].float().cpu().numpy()
        modality = resolve(name)
        if modality.is_categorical:
            write_geotiff(
                path,
                image.argmax(0).astype(np.uint8),
                like=profile,
                overwrite=args.overwrite,
                colormap=color_table(modality.colors),
            )
        else:
            write_geotiff(path, image.astype(np.float32), like=profile, overwrite=args.overwrite)


def tiled(
    model,
    files: Mapping[str, Path],
    targets: dict,
    generator,
    args: argparse.Namespace,
    layout: Mapping[str, Sequence[str]],
) -> None:
    """Chip the scene, generate per chip, blend (LULC logits before argmax), stream to disk."""
    from terratim.inference.adapters import generation_predictor
    from terratim.inference.engine import TilingConfig, infer_scene
    from terratim.precision import with_precision

    predictor = generation_predictor(model, args.out / "generated.tif", generator=generator, timesteps=args.steps)
    for head, path in zip(predictor.heads, targets.values()):
        head.path = path
    read_given_bands(predictor, layout)
    tiling = TilingConfig(chip=args.chip, overlap=args.overlap, batch_size=args.batch_size)
    predict = with_precision(predictor.predict, args.precision, args.device)
    infer_scene(
        predict,
        dict(files),
        predictor.heads,
        tiling,
        bands=predictor.bands,
        device=args.device,
        fill=predictor.fill,
        overwrite=args.overwrite,
    )


def read_given_bands(predictor, layout: Mapping[str, Sequence[str]]) -> None:
    """A scene predictor reads, for files lacking bands, the bands they hold (count and nodata fill values)."""
    import numpy as np

    from terratim.modalities import resolve

    for name, given in layout.items():
        predictor.bands[name] = len(given)
        predictor.fill[name] = np.asarray(resolve(name).statistics(tuple(given))[0], np.float32)  # (C',)
    if layout:
        predictor.fingerprint["bands"] = {n: list(b) for n, b in layout.items()}


def write_panel(
    files: Mapping[str, Path],
    targets: dict,
    path: Path,
    layout: Mapping[str, Sequence[str]] | None = None,
    max_side: int = 1024,
) -> None:
    """PNG with every input and output, decimated to at most ``max_side`` pixels (inputs lacking bands are shown
    with the filled bands at their mean)."""
    from terratim.data.geotiff import read_geotiff
    from terratim.modalities import resolve
    from terratim.viz import save_panel

    panels = []
    for kind, entries in (("input", files), ("generated", targets)):
        for name, file in entries.items():
            data = read_geotiff(file).data
            if kind == "input" and layout and name in layout:
                data = resolve(name).fill_bands(data, layout[name], standardized=False)  # (C, H, W)
            step = max(1, max(data.shape[-2:]) // max_side)
            panels.append((f"{kind} {name}", name, data[:, ::step, ::step]))
    save_panel(path, panels, title="terratim generate")
