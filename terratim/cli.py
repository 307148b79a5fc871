"""The ``terratim`` command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``. Modules
are imported only when their command runs, so ``terratim info`` does not import Lightning. Commands whose
parsing belongs to LightningCLI (``fit``, ``validate``, ``test``, ``predict``) hand over ``argv`` whole.

Errors are sorted once, here. A user error (a missing, corrupt or existing file, a bad value, an unknown name,
weights the hub cannot deliver, a missing optional package) prints ``terratim <command>: error: <message>`` on
stderr and exits with status 2; Ctrl-C exits with 130. Anything else is a bug and keeps its traceback (status 1).
``terratim --debug <command>`` or ``TERRATIM_DEBUG=1`` re-raises user errors too, with their traceback.
``main(argv)`` called from Python raises every error unless asked to report it (``report_errors=True``).
"""

from __future__ import annotations

import argparse
import importlib
import os
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
    "export": ("terratim.commands.export", "export a fine-tuned task model to ONNX (with its metadata)"),
    "train-tokenizer": ("terratim.commands.train_tokenizer", "train an FSQ-VAE tokenizer from a config"),
    "pretrain": ("terratim.commands.pretrain", "masked multimodal pretraining from a config"),
    "build-kernels": ("terratim.commands.build_kernels", "compile the tokenizer decoder's fast CPU kernels (opt-in)"),
    "quickstart": ("terratim.commands.quickstart", "offline demo: plain vs TiM fine-tuning on simulated data"),
    "compute-statistics": ("terratim.commands.compute_statistics", "per-band means and stds of a dataset, as YAML"),
    "merge-peft": ("terratim.commands.merge_peft", "merge a PEFT (LoRA) fine-tune's adapters into plain weights"),
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# Commands whose module parses its whole argv (LightningCLI): ``module.run_argv(argv[1:])``.
ARGV_COMMANDS = ("pretrain", "train-tokenizer")

# command -> what the weights are (HubDownloadError.weights) -> the option that takes a local file instead.
_BACKBONE_CKPT = "--model.init_args.model_args.backbone_ckpt_path PATH"
LOCAL_WEIGHT_OPTIONS: dict[str, dict[str, str]] = {
    "embed": {"model": "--ckpt PATH"},
    "generate": {"model": "--ckpt PATH", "tokenizer": "--tokenizer {modality}=PATH"},
    "imagine": {"model": "--ckpt PATH", "tokenizer": "--tokenizer {modality}=PATH"},
    "reconstruct": {"tokenizer": "--ckpt PATH"},
    "infer": {"model": "--model-ckpt PATH"},
    **{name: {"model": _BACKBONE_CKPT} for name in LIGHTNING_COMMANDS},
}
DEBUG_ENV = "TERRATIM_DEBUG"


def main(argv: list[str] | None = None, report_errors: bool | None = None) -> int:
    """Run ``terratim [--debug] COMMAND ...``; returns the exit status (user errors: 2, Ctrl-C: 130).

    Args:
        argv: the arguments after ``terratim``; default ``sys.argv[1:]``.
        report_errors: print user errors as one line and return 2 (Ctrl-C: 130) instead of raising them.
            Default: only when run as the program (``argv`` not given), so that Python callers and tests
            that pass ``argv`` get the exception itself.
    """
    report = argv is None if report_errors is None else report_errors
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = not report or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    if argv[:1] == ["--debug"]:
        debug, argv = True, argv[1:]
    command = argv[0] if argv and not argv[0].startswith("-") else None
    prefix = f"terratim {command}" if command else "terratim"
    try:
        return dispatch(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as err:  # a command's `raise SystemExit("message")`; argparse's integer codes pass
        if debug or err.code is None or isinstance(err.code, int):
            raise
        print(f"{prefix}: error: {_strip_prefix(str(err.code), prefix)}", file=sys.stderr)
        return 2
    except Exception as err:
        message = user_error_message(err, command)
        if message is None or debug:
            raise
        print(f"{prefix}: error: {_strip_prefix(message, prefix)}", file=sys.stderr)
        return 2


def dispatch(argv: list[str]) -> int:
    """Parse ``argv`` (without ``--debug``) and run its command; errors propagate."""
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from terratim.tasks.cli import run_lightning_cli

        return run_lightning_cli(argv)
    if argv and argv[0] in ARGV_COMMANDS:
        return int(importlib.import_module(COMMANDS[argv[0]][0]).run_argv(argv[1:]) or 0)
    parser = argparse.ArgumentParser(prog="terratim", description="TerraMind and Thinking-in-Modalities.")
    parser.add_argument(
        "--debug", action="store_true", help=f"show the traceback of every error (also: {DEBUG_ENV}=1); must come first"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in LIGHTNING_COMMANDS:
        subparsers.add_parser(name, help=f"Lightning {name} from a YAML config (-c config.yaml)", add_help=False)
    available = {}
    for name, (module_name, help_text) in COMMANDS.items():
        if name in ARGV_COMMANDS:
            subparsers.add_parser(name, help=f"{help_text} (-c config.yaml)", add_help=False)
            continue
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


def user_error_message(err: Exception, command: str | None) -> str | None:
    """The message to print for a user error, or None when ``err`` is a bug (its traceback is kept).

    User errors: files (``OSError``: missing, existing, unreadable, a folder, disk full), bad values
    (``ValueError``), unknown names (a ``KeyError`` whose argument is a sentence; a bare ``KeyError('x')``
    from a dict lookup is a bug), checkpoints that do not fit or cannot be downloaded, and a missing
    optional package (an ``ImportError`` giving the ``pip install`` line). For the Lightning commands a
    ``ValueError`` or ``KeyError`` counts only when a configured class raised it while being built (a
    ``ConfigError``): raised during training, it may well be a bug.
    """
    if command in LIGHTNING_COMMANDS:
        from terratim.tasks.cli import ConfigError

        if isinstance(err, ConfigError) and isinstance(err.__cause__, Exception):
            message = _user_error(err.__cause__, command, values=True)
            return None if message is None else f"config: {message}"
        return _user_error(err, command, values=False)
    return _user_error(err, command, values=True)


def _user_error(err: Exception, command: str | None, values: bool) -> str | None:
    """See :func:`user_error_message`; ``values``: whether ``ValueError`` / name ``KeyError`` are user errors."""
    from terratim.weights import CheckpointError, HubDownloadError

    if isinstance(err, HubDownloadError):
        return hub_error_message(err, command)
    if isinstance(err, OSError | CheckpointError):
        return str(err)
    if isinstance(err, ImportError):
        return str(err) if "pip install" in str(err) else None
    if not values:
        return None
    if isinstance(err, KeyError):
        names_a_thing = len(err.args) == 1 and isinstance(err.args[0], str) and " " in err.args[0]
        return err.args[0] if names_a_thing else None
    return str(err) if isinstance(err, ValueError) else None


def hub_error_message(err: Exception, command: str | None) -> str:
    """The library's message (with the Python hint) plus the option of ``command`` that takes a local file."""
    option = LOCAL_WEIGHT_OPTIONS.get(command or "", {}).get(getattr(err, "weights", ""))
    if option is None:
        return str(err)
    option = option.format(modality=getattr(err, "modality", None) or "MODALITY")
    return f"{err} On the command line: terratim {command} {option}."


def _strip_prefix(message: str, prefix: str) -> str:
    """Messages that already start with ``terratim <command>:`` are not prefixed twice."""
    return message[len(prefix) + 1 :].lstrip() if message.startswith(f"{prefix}:") else message


if __name__ == "__main__":
    sys.exit(main())
