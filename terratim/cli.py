"""The ``terratim`` command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``. Modules
are imported only when their command runs, so ``terratim info`` does not import Lightning. Commands whose
parsing belongs to LightningCLI (``fit``, ``validate``, ``test``, ``predict``) hand over ``argv`` whole.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("terratim.commands.info", "list models and modalities (bands, statistics)"),
    "embed": ("terratim.commands.embed", "embed a GeoTIFF sample with a TerraMind backbone"),
    "convert": ("terratim.commands.convert", "convert an official .pt checkpoint to .safetensors + JSON"),
    "reconstruct": ("terratim.commands.reconstruct", "encode and decode an image with a modality tokenizer"),
    "generate": ("terratim.commands.generate", "generate modalities from GeoTIFF inputs"),
    "imagine": ("terratim.commands.imagine", "show the modalities a TiM model imagines for an input"),
    "infer": ("terratim.commands.infer", "streaming tiled inference over large scenes"),
    "train-tokenizer": ("terratim.commands.train_tokenizer", "train an FSQ-VAE tokenizer from a config"),
    "pretrain": ("terratim.commands.pretrain", "masked multimodal pretraining from a config"),
    "quickstart": ("terratim.commands.quickstart", "offline demo: plain vs TiM fine-tuning on simulated data"),
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from terratim.tasks.cli import run_lightning_cli

        return run_lightning_cli(argv)
    parser = argparse.ArgumentParser(prog="terratim", description="TerraMind and Thinking-in-Modalities.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in LIGHTNING_COMMANDS:
        subparsers.add_parser(name, help=f"Lightning {name} from a YAML config (-c config.yaml)", add_help=False)
    available = {}
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue  # command not available in this build
            raise
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        available[name] = module
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    return int(available[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
