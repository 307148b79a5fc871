"""``terratim infer``: streaming tiled inference over whole scenes.

Fine-tuned task model::

    terratim infer -c config.yaml --ckpt model.ckpt --input S1GRD=scene.tif --out pred.tif

Generation (one file per output; LULC as a class map) and embeddings::

    terratim infer --model terramind_v1_base_generate --pretrained --outputs LULC --input S1GRD=s1.tif --out lulc.tif
    terratim infer --model terramind_v1_base --pretrained --embeddings chip --input S2L2A=s2.tif --out emb.parquet

Memory does not grow with the scene; ``--resume`` continues an interrupted run (see docs/large_scenes.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from terratim.commands import add_modality_paths, modality_paths
from terratim.commands.generate import add_band_arguments, band_layout, band_options, read_given_bands
from terratim.generation.settings import GenerationSettings, add_cli_arguments, from_cli

if TYPE_CHECKING:
    from terratim.generation.generate import TerraMindGenerate
    from terratim.model.backbone import TerraMindBackbone

DEFAULT_CHIP = 224


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_modality_paths(
        parser,
        "--input",
        "-i",
        required=True,
        help="a co-registered input GeoTIFF/COG per modality (repeat for several)",
    )
    parser.add_argument(
        "--out",
        "-o",
        required=True,
        type=Path,
        help="output GeoTIFF (.parquet for --embeddings chip); several outputs get _<NAME>",
    )
    source = parser.add_argument_group("model (a fine-tuned task, or a registry model)")
    config_help = (
        "optional: the `terratim fit` config of the task model; every value it gives must match --ckpt. "
        "Needed only for checkpoints from a terratim that did not store the task and its data "
        "statistics in the checkpoint"
    )
    ckpt_help = (
        "the task model's Lightning checkpoint; it wins for the model (model_args, modalities, class "
        "names): a config that disagrees with it or has an unknown key is refused"
    )
    source.add_argument("-c", "--config", type=Path, help=config_help)
    source.add_argument("--ckpt", type=Path, help=ckpt_help)
    source.add_argument("--model", help="a registry model: *_generate for generation, a backbone for embeddings")
    source.add_argument(
        "--onnx", type=Path, help="a model from `terratim export`, run with onnxruntime (no -c/--ckpt/--model)"
    )
    source.add_argument("--outputs", nargs="+", help="modalities to generate (with a *_generate model)")
    source.add_argument("--pretrained", action="store_true", help="load the official weights of --model")
    source.add_argument("--model-ckpt", type=Path, help="local weights for --model (.pt or .safetensors)")
    source.add_argument(
        "--embeddings",
        choices=("pixel", "chip"),
        help="export backbone embeddings per pixel (GeoTIFF) or per chip (GeoParquet)",
    )
    source.add_argument("--timesteps", type=int, help="diffusion steps for continuous generated outputs")
    source.add_argument("--seed", type=int, default=0, help="seed of the generation randomness")
    add_band_arguments(source)
    add_cli_arguments(parser.add_argument_group("generation (with a *_generate --model)"))
    tiles = parser.add_argument_group("tiling")
    tiles.add_argument(
        "--chip", type=int, default=DEFAULT_CHIP, help="chip side in pixels (default 224; an --onnx model's tile size)"
    )
    tiles.add_argument("--overlap", type=int, default=32, help="pixels shared by neighbouring chips (default 32)")
    tiles.add_argument("--delta", type=int, default=8, help="margin cropped off each chip output (default 8)")
    tiles.add_argument("--batch-size", type=int, default=16, help="chips per forward pass (default 16)")
    tiles.add_argument(
        "--blend",
        choices=("cosine", "average"),
        default="cosine",
        help="raised-cosine weights (reference, default) or plain averaging",
    )
    tiles.add_argument(
        "--panel",
        type=int,
        default=2048,
        help="columns done at a time; memory grows with it, not with the scene (0 = all)",
    )
    source.add_argument(
        "--tim-sampling",
        action="store_true",
        help="a TiM task imagines with its trained sampling settings (random), not the most "
        "likely tokens in one pass (default: the same map every run, as --onnx)",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--confidence", action="store_true", help="add a confidence band (percent) to class maps")
    output.add_argument("--cog", action="store_true", help="write Cloud-Optimized GeoTIFFs")
    output.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    output.add_argument("--resume", action="store_true", help="continue an interrupted run with the same settings")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default cpu)")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "auto"),
        default="fp32",
        help="fp32 (default), bf16 (autocast), auto (bf16 where the device has it natively)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def _generation_model(model: Any, name: str) -> TerraMindGenerate:
    from terratim.generation.generate import TerraMindGenerate

    if not isinstance(model, TerraMindGenerate):
        raise ValueError(f"--model {name} is not a generation model (*_generate); it built a {type(model).__name__}")
    return model


def _backbone(model: Any, name: str) -> TerraMindBackbone:
    from terratim.model.backbone import TerraMindBackbone

    if not isinstance(model, TerraMindBackbone):
        raise ValueError(f"--model {name} is not a TerraMind backbone; it built a {type(model).__name__}")
    return model


class ProgressReport:
    """Chips done / total with elapsed time and ETA: a rich bar on a terminal, a line per 10% otherwise."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet, self.start, self.next_line = quiet, time.monotonic(), 0.0
        self.bar: Any = None  # a rich Progress on a terminal
        self.task: Any = None  # its task id
        if not quiet and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(
                "chips",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                "ETA",
                TimeRemainingColumn(),
                transient=False,
            )
            self.bar.start()

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            if self.task is None:
                self.task = self.bar.add_task("chips", total=total)
            self.bar.update(self.task, completed=done)
            return
        fraction = done / max(total, 1)
        if fraction >= self.next_line or done == total:
            elapsed = time.monotonic() - self.start
            eta = elapsed / fraction * (1 - fraction) if fraction else float("nan")
            print(f"chips {done}/{total} ({fraction:.0%}), elapsed {elapsed:.0f}s, ETA {eta:.0f}s", file=sys.stderr)
            self.next_line = fraction + 0.1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def run(args: argparse.Namespace) -> int:
    """Errors propagate to :mod:`terratim.cli`, which prints user errors as one line (exit 2) and Ctrl-C as
    exit 130; on Ctrl-C this first says what is kept and the command that continues the run."""
    outputs: list[Path] = []  # filled in once the model says which files it writes
    try:
        return _run(args, outputs)
    except KeyboardInterrupt:
        print(_interrupt_note(args, outputs), file=sys.stderr)
        raise


def _interrupt_note(args: argparse.Namespace, outputs: list[Path]) -> str:
    """What an interrupted run kept, and the command that continues it."""
    import json

    from terratim.inference.scene import partial_path, progress_path

    kept = [p for p in outputs if progress_path(p).exists() and partial_path(p).exists()]
    if not kept:
        return "No output rows were kept, so there is nothing to resume."
    lines = ["Written rows are kept:"]
    for path in kept:
        state = json.loads(progress_path(path).read_text())
        panels = len(state["fingerprint"]["panels"])
        lines.append(
            f"  {partial_path(path)}: panel {state['panel'] + 1} of {panels}, rows up to {state['rows_done']} done"
        )
    lines += ["Continue (same inputs, model and settings) with:", "  " + resume_command(args)]
    return "\n".join(lines)


def resume_command(args: argparse.Namespace) -> str:
    """The ``terratim infer`` command line of ``args`` with ``--resume``, options in their long form."""
    import shlex

    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    words = ["terratim", "infer"]
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.dest == "resume" or value is None or value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            words.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                words += [flag, str(item)]
        elif isinstance(value, list):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return shlex.join([*words, "--resume"])


def _run(args: argparse.Namespace, outputs: list[Path]) -> int:
    import torch

    from terratim.inference.engine import TilingConfig, infer_scene, steady_heap

    steady_heap()
    inputs = modality_paths(args.input)
    tiling = TilingConfig(_chip(args), args.overlap, args.delta, args.batch_size, args.blend, args.panel)
    if args.embeddings == "chip":
        return _chip_embeddings(args, inputs, tiling)
    if args.out.exists() and not args.overwrite:  # fail before loading a model
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
    predictor = _predictor(args, inputs)
    predict = _with_precision(args, predictor)
    outputs += [head.path for head in predictor.heads]
    progress = ProgressReport(args.quiet)
    try:
        paths = infer_scene(
            predict,
            inputs,
            predictor.heads,
            tiling,
            bands=predictor.bands,
            device=torch.device(args.device),
            fill=predictor.fill,
            overwrite=args.overwrite,
            resume=args.resume,
            progress=progress,
            fingerprint=predictor.fingerprint,
        )
    finally:
        progress.close()
    for path in paths:
        print(f"wrote {path}")
    return 0


def _model_kwargs(args: argparse.Namespace, inputs: dict[str, Path]) -> dict:
    kwargs = {"modalities": list(inputs), "pretrained": args.pretrained}
    if args.model_ckpt is not None:
        kwargs["ckpt_path"] = str(args.model_ckpt)
    return kwargs


def _predictor(args: argparse.Namespace, inputs: dict[str, Path]):
    import torch

    import terratim
    from terratim.inference import adapters
    from terratim.inference.fingerprint import file_record

    device = torch.device(args.device)
    settings = from_cli(args, timesteps=args.timesteps)
    if args.onnx is not None:
        return _onnx_predictor(args, inputs)
    if settings != GenerationSettings() and not (args.model or "").endswith("_generate"):
        raise ValueError(
            "the generation options (--timesteps, --scheme, --temperature, --top-k, ...) apply only to "
            "a *_generate --model"
        )
    if (args.bands or args.fill_missing_bands) and not (args.model or "").endswith("_generate"):
        raise ValueError("--bands and --fill-missing-bands apply only to a *_generate --model")
    if args.config is not None or args.ckpt is not None:
        if args.ckpt is None or args.model is not None:
            raise ValueError(
                "a task model needs --ckpt (and no --model); -c/--config is optional, needed only for "
                "a checkpoint from an older terratim"
            )
        task, data_args = adapters.load_task_model(args.config, args.ckpt, device)
        predictor = adapters.task_predictor(
            task, data_args, args.out, device, args.confidence, args.cog, tim_sampling=args.tim_sampling
        )
        predictor.fingerprint["weights"] = file_record(args.ckpt, whole=True)
        _check_modalities(inputs, predictor.bands)
        return predictor
    if args.model is None:
        raise ValueError("name a model: -c config.yaml --ckpt model.ckpt, or --model NAME")
    if args.model.endswith("_generate"):
        if not args.outputs:
            raise ValueError(f"--model {args.model} generates: name what with --outputs (e.g. --outputs LULC)")
        layout = band_layout(args, list(inputs))
        model = terratim.build(
            args.model,
            output_modalities=args.outputs,
            standardize=True,
            settings=settings,
            **_model_kwargs(args, inputs),
            **band_options(args, layout),
        ).to(device)
        generator = torch.Generator(device=device).manual_seed(args.seed)
        model = _generation_model(model, args.model).eval()
        predictor = adapters.generation_predictor(model, args.out, generator, args.confidence, args.cog, args.timesteps)
        read_given_bands(predictor, layout)
        predictor.fingerprint["generation"] = dataclasses.asdict(settings)
    elif args.embeddings == "pixel":
        backbone = terratim.build(args.model, **_model_kwargs(args, inputs)).to(device).eval()
        predictor = adapters.embedding_predictor(_backbone(backbone, args.model), args.out, args.cog)
    else:
        raise ValueError(
            f"--model {args.model}: use a *_generate model with --outputs, or a backbone with "
            "--embeddings pixel|chip; fine-tuned models take -c/--config and --ckpt"
        )
    predictor.fingerprint.update(model=args.model, seed=args.seed, pretrained=args.pretrained, timesteps=args.timesteps)
    if args.model_ckpt is not None:
        predictor.fingerprint["weights"] = file_record(args.model_ckpt, whole=True)
    return predictor


def _chip(args: argparse.Namespace) -> int:
    """``--chip``; with ``--onnx`` the tile size the model was exported for (``--chip`` left out or equal)."""
    if args.onnx is None:
        return args.chip
    from terratim.deploy.onnx import read_card

    tile = read_card(args.onnx).tile_size
    if args.chip not in (tile, DEFAULT_CHIP):
        raise ValueError(
            f"--chip {args.chip}: {args.onnx} was exported for {tile} px tiles; leave --chip out or pass --chip {tile}"
        )
    return tile


def _onnx_predictor(args: argparse.Namespace, inputs: dict[str, Path]):
    from terratim.deploy.onnx import onnx_predictor

    if args.config is not None or args.ckpt is not None or args.model is not None or args.embeddings:
        raise ValueError("--onnx runs an exported model: leave out -c/--config, --ckpt, --model and --embeddings")
    predictor = onnx_predictor(args.onnx, args.out, args.device, args.confidence, args.cog)
    predictor.predict.check_inputs(inputs)  # modalities against the file's metadata
    return predictor


def _with_precision(args: argparse.Namespace, predictor):
    """The predictor's callable under ``--precision`` (said when ``auto`` chose); recorded for --resume."""
    from terratim.precision import resolve_precision, with_precision

    if args.onnx is not None:
        if args.precision == "bf16":
            raise ValueError("--precision bf16 applies to PyTorch models; an ONNX model runs as exported")
        if args.precision == "auto" and not args.quiet:
            print("precision auto -> as exported (an ONNX model runs in the precision it was written in)")
        return predictor.predict
    precision = resolve_precision(args.precision, args.device, report=not args.quiet)
    if precision != "fp32":
        predictor.fingerprint["precision"] = precision
    return with_precision(predictor.predict, precision, args.device)


def _check_modalities(inputs: dict[str, Path], wanted: dict[str, int]) -> None:
    if set(inputs) != set(wanted):
        raise ValueError(
            f"the model takes {sorted(wanted)} (as its checkpoint says), but --input gave "
            f"{sorted(inputs)}; pass one --input MODALITY=PATH per modality"
        )


def _chip_embeddings(args: argparse.Namespace, inputs: dict[str, Path], tiling) -> int:
    import numpy as np
    import torch

    import terratim
    from terratim import modalities as mods
    from terratim.inference.embeddings import export_chip_embeddings, mean_token_embedder

    if args.model is None:
        raise ValueError("--embeddings chip needs --model (a backbone, e.g. terramind_v1_base)")
    backbone = terratim.build(args.model, **_model_kwargs(args, inputs)).to(args.device).eval()
    progress = ProgressReport(args.quiet)
    try:
        path = export_chip_embeddings(
            mean_token_embedder(_backbone(backbone, args.model)),
            dict(inputs),
            args.out,
            tiling,
            bands={n: mods.resolve(n).num_bands for n in inputs},
            device=torch.device(args.device),
            overwrite=args.overwrite,
            fill={n: np.asarray(mods.resolve(n).mean, np.float32) for n in inputs},
            progress=progress,
        )
    finally:
        progress.close()
    print(f"wrote {path}")
    return 0
