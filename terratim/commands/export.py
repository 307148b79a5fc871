"""``terratim export``: a fine-tuned task model as a self-describing ONNX file.

    terratim export --ckpt model.ckpt --out model.onnx                   # checkpoint from `terratim fit`
    terratim export -c config.yaml --ckpt model.ckpt --out model.onnx    # older checkpoint: its fit config
    terratim export --ckpt model.ckpt --out model.int8.onnx --quantize int8

The file takes raw-unit inputs (one per modality, batch axis dynamic, tile fixed) and carries its modalities,
bands, statistics, classes, tile size and opset in its metadata; ``terratim infer --onnx model.onnx`` runs it
over scenes. See docs/deploy.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", type=Path, help="the `terratim fit` config; for a checkpoint without its inference record"
    )
    parser.add_argument("--ckpt", type=Path, required=True, help="the task model's Lightning checkpoint")
    parser.add_argument("--out", "-o", type=Path, required=True, help="output .onnx file")
    parser.add_argument("--tile", type=int, default=224, help="tile side in pixels the model takes (default 224)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument(
        "--quantize",
        choices=("int8",),
        help="int8 dynamic quantization of the weights (onnxruntime); reports the change",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from terratim.deploy.onnx import export_task
    from terratim.inference import adapters

    if args.out.suffix != ".onnx":
        raise ValueError(f"--out {args.out}: expected a .onnx file name")
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
    if not args.ckpt.is_file():
        raise FileNotFoundError(f"--ckpt {args.ckpt}: no such file")
    task, data_args = adapters.load_task_model(args.config, args.ckpt, "cpu")
    report = export_task(task, data_args, args.out, args.tile, args.opset, args.quantize)
    inputs = ", ".join(data_args["modalities"])
    print(
        f"wrote {args.out}: {report['task']} model{' (TiM)' if report['tim'] else ''}, inputs {inputs}, "
        f"tile {report['tile_size']}, opset {report['opset']}, dynamic batch axis"
    )
    print(f"check on random inputs: max |onnxruntime - PyTorch| = {report['max_abs_diff']:.2e}")
    if args.quantize:
        agreement = report.get("int8_class_agreement")
        print(
            f"int8 against the fp32 export: max |diff| = {report['int8_max_abs_diff']:.3g}"
            + (f", class agreement {agreement:.2%}" if agreement is not None else "")
        )
    _note_tim_sampling(task)
    return 0


def _note_tim_sampling(task) -> None:
    """TiM checkpoints that sample their imagination: say that the export imagines by argmax."""
    generator = getattr(task.model.backbone, "generator", None)
    if generator is None:
        return
    settings = generator.settings
    if settings.temperature > 0 or settings.decoding_steps != 1:
        print(
            f"note: the checkpoint's TiM samples its imagination (tim_temperature={settings.temperature}, "
            f"tim_decoding_steps={settings.decoding_steps}); the ONNX model imagines by one argmax pass "
            "(deterministic), as tim_temperature=0, tim_decoding_steps=1"
        )
