"""LightningCLI of ``terratim pretrain`` and ``terratim train-tokenizer``: fit, then export the trained weights.

A config has the sections of ``terratim fit`` (``seed_everything``, ``trainer``, ``model``, ``data``) plus
``output`` (the ``.safetensors`` file; its ``.json`` config goes next to it), ``export_dtype`` and
``overwrite``. The model is :class:`~terratim.pretraining.module.MaskedPretraining` or
:class:`~terratim.pretraining.tokenizer_training.TokenizerTraining`, the data
:class:`~terratim.pretraining.data.PretrainingDataModule`; their arguments are the section's keys. Every value can
be overridden on the command line (``--trainer.max_steps 10``) and ``--print_config`` prints the resolved config.

Configs in the earlier flat format (``tokenizers``, ``masking``, ``loss_weighting``, ``optim``, ``seed`` or
``tokenizer`` at the top level) are converted on reading, with a one-line notice naming the new keys
(:func:`convert_legacy_config`).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from jsonargparse import ActionYesNo

from terratim.pretraining.data import PretrainingDataModule
from terratim.tasks.cli import ConfigErrorCLI

EXPORT_DTYPES = ("float32", "float16", "bfloat16")
# Top-level keys only the earlier flat format has, per command.
LEGACY_KEYS = {
    "pretrain": {"tokenizers", "masking", "loss_weighting", "optim", "seed"},
    "train-tokenizer": {"tokenizer", "optim", "seed"},
}
DESCRIPTIONS = {
    "pretrain": "Masked multimodal pretraining of TerraMind (docs/pretraining.md).",
    "train-tokenizer": "Train an FSQ-VAE tokenizer (docs/pretraining.md).",
}
LEGACY_NOTICE = {
    "pretrain": "tokenizers, masking, loss_weighting and optim.{lr,weight_decay,warmup_steps} are now model.<key>",
    "train-tokenizer": "tokenizer.modality is now model.modality, the other tokenizer.<key> "
    "model.architecture.<key>, optim.{lr,weight_decay,warmup_steps} model.<key>",
}


class PretrainingCLI(ConfigErrorCLI):
    """A LightningCLI without subcommands: parse, build, then :meth:`fit_and_export`. Errors raised while the
    configured classes are built are reported like ``terratim fit``'s (a :class:`~terratim.tasks.cli.ConfigError`).

    Args:
        default_output: the output file when the config names none.
        *args, **kwargs: LightningCLI's arguments.
    """

    def __init__(self, default_output: str, *args: Any, **kwargs: Any) -> None:
        self.default_output = default_output
        self.output_path: Path | None = None
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - jsonargparse parser
        output_help = "the weights file to write (.safetensors; its .json config goes next to it)"
        dtype_help = "float type of the written weights: float32, float16 (half the file) or bfloat16"
        parser.add_argument("--output", type=str, default=self.default_output, help=output_help)
        parser.add_argument("--export_dtype", type=str, default="float32", help=dtype_help)
        parser.add_argument("--overwrite", action=ActionYesNo, default=False, help="replace the output and its .json")

    def before_instantiate_classes(self) -> None:
        """Refuse an output that cannot be written before anything is built or read."""
        self.output_path = check_output(self.config["output"], self.config["overwrite"], self.config["export_dtype"])

    def fit_and_export(self) -> Path:
        """Train, then write the weights (cast to ``export_dtype``) and their ``.json``."""
        assert self.output_path is not None  # set before the classes were built
        self.trainer.fit(self.model, datamodule=self.datamodule)
        if self.trainer.is_global_zero:
            self.model.export(self.output_path)
            if self.config["export_dtype"] != "float32":
                cast_checkpoint(self.output_path, self.config["export_dtype"])
        return self.output_path


def run_training(
    command: str, model_class: type[pl.LightningModule], argv: list[str], default_output: str
) -> tuple[PretrainingCLI, Path]:
    """Parse ``argv`` (the arguments after ``terratim <command>``), train and export; returns the CLI object and
    the weights file written."""
    argv = legacy_arguments(command, argv)
    with warnings.catch_warnings():  # argv is the command line itself, not a second source of arguments
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = PretrainingCLI(
            default_output,
            model_class,
            PretrainingDataModule,
            args=argv,
            run=False,
            seed_everything_default=0,
            trainer_defaults=trainer_defaults(),
            save_config_callback=None,
            parser_kwargs={"prog": f"terratim {command}", "description": DESCRIPTIONS[command], "default_env": False},
            auto_configure_optimizers=False,
        )
    return cli, cli.fit_and_export()


def trainer_defaults() -> dict[str, Any]:
    """A short run without logger or checkpoints; a progress bar on a terminal, else the loss every
    ``log_every_n_steps`` steps (for logs and CI)."""
    interactive = sys.stdout.isatty()
    defaults: dict[str, Any] = {
        "max_steps": 1000,
        "accelerator": "auto",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": interactive,
        "enable_model_summary": False,
        "log_every_n_steps": 50,
    }
    if not interactive:
        defaults["callbacks"] = [PrintLoss()]
    return defaults


def check_output(path: str, overwrite: bool, export_dtype: str = "float32") -> Path:
    """Before any training: the weights file and its ``.json`` can be written, and ``export_dtype`` is known."""
    from terratim.data.geotiff import check_writable

    if export_dtype not in EXPORT_DTYPES:
        raise ValueError(f"export_dtype must be float16, bfloat16 or float32, got {export_dtype!r}")
    out_path = check_writable(path, overwrite)
    if out_path.suffix == ".json":
        raise ValueError(f"output {out_path} must not end in .json: the config is written next to it as .json")
    check_writable(out_path.with_suffix(".json"), overwrite)
    return out_path


def cast_checkpoint(path: str | os.PathLike, dtype: str) -> Path:
    """Rewrite a ``.safetensors`` file with floating-point tensors in ``dtype`` (e.g. ``float16`` to halve a
    bundled file); the loaders cast back to the model's dtype. The ``.json`` beside it is kept."""
    import torch
    from safetensors.torch import load_file, save_file

    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"export_dtype must be float16, bfloat16 or float32, got {dtype!r}")
    path = Path(path)
    target = getattr(torch, dtype)
    state = {k: v.to(target) if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    save_file(state, str(path))
    return path


# --- the earlier flat config format ---------------------------------------------------------------------------


def is_legacy_config(command: str, config: Mapping[str, Any]) -> bool:
    """Whether ``config`` is in the flat format of earlier releases (it has a key only that format has)."""
    return bool(LEGACY_KEYS[command] & set(config))


def convert_legacy_config(command: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The LightningCLI config equivalent to a flat one: same training, same seeds, same output.

    ``seed`` becomes ``seed_everything``, ``model.seed`` (masking / noise generator) and ``data.seed``
    (shuffling); ``data``, ``trainer``, ``output`` and ``export_dtype`` keep their keys.
    """
    rest = dict(config)
    if command == "pretrain":
        model = dict(rest.pop("model", None) or {})
        model.update({key: rest.pop(key) for key in ("tokenizers", "masking", "loss_weighting") if key in rest})
    else:
        architecture = dict(rest.pop("tokenizer", None) or {})
        model = {"modality": architecture.pop("modality", None), "architecture": architecture}
    model.update(rest.pop("optim", None) or {})
    data = dict(rest.pop("data", None) or {})
    seed = rest.pop("seed", 0)
    return {"seed_everything": seed, "model": {**model, "seed": seed}, "data": {**data, "seed": seed}, **rest}


def legacy_arguments(command: str, argv: list[str]) -> list[str]:
    """``argv`` with flat-format config files replaced by their conversion (as YAML text) and ``--max-steps N``
    by ``--trainer.max_steps N``; prints one notice per conversion on stderr."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in ("-c", "--config") or arg.startswith("--config="):
            path = arg.split("=", 1)[1] if "=" in arg else next(args, "")
            out += ["--config", _converted_if_legacy(command, path)]
        elif arg == "--max-steps" or arg.startswith("--max-steps="):
            value = arg.split("=", 1)[1] if "=" in arg else next(args, "")
            print(f"terratim {command}: --max-steps is now --trainer.max_steps", file=sys.stderr)
            out += ["--trainer.max_steps", value]
        else:
            out.append(arg)
    return out


def _converted_if_legacy(command: str, path: str) -> str:
    """``path`` itself, or the YAML text of its conversion when it holds a flat-format config."""
    import yaml

    if not os.path.isfile(path):
        return path  # LightningCLI reports a missing file (or reads a YAML string given inline)
    config = yaml.safe_load(Path(path).read_text())
    if not isinstance(config, dict) or not is_legacy_config(command, config):
        return path
    print(
        f"terratim {command}: {path} is in the old flat format, read as the new one: {LEGACY_NOTICE[command]}, "
        "seed is seed_everything (+ model.seed, data.seed); --print_config prints the converted config",
        file=sys.stderr,
    )
    return yaml.safe_dump(convert_legacy_config(command, config), sort_keys=False)


class PrintLoss(pl.Callback):
    """Print step, loss and elapsed time every ``log_every_n_steps`` steps (for logs without a terminal)."""

    def __init__(self) -> None:
        self.start = 0.0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step, every = trainer.global_step, max(1, int(getattr(trainer, "log_every_n_steps", 50)))
        if step % every == 0 or step == trainer.max_steps:
            loss = trainer.callback_metrics.get("train/loss")
            shown = f"{float(loss):.4f}" if loss is not None else "n/a"
            print(
                f"step {step}/{trainer.max_steps} loss {shown} ({time.perf_counter() - self.start:.0f} s)", flush=True
            )
