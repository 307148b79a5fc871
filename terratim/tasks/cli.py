"""``terratim fit|validate|test|predict -c config.yaml``: LightningCLI over the typed task and data classes.

Configs name classes by ``class_path``/``init_args`` (``terratim.tasks.SemanticSegmentationTask``,
``terratim.datamodules.GenericMultiModalDataModule``, ``RichProgressBar``, ``ReduceLROnPlateau``, ...), and
any value can be overridden on the command line (``--trainer.max_epochs 5``, ``--ckpt_path last.ckpt``,
``--model.init_args.model_args.backbone terramind_v1_tiny``). ``predict`` writes one GeoTIFF per sample to
``--predict_output_dir`` (default ``<default_root_dir>/predictions``), with ``--predict_png true`` for panels.

As TerraTorch's CLI does, a run with checkpointing on and no ``ModelCheckpoint`` configured keeps the best
``val/loss`` epoch as ``<log_dir>/checkpoints/epoch=<n>.ckpt`` (the latest epoch when there is no validation data).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.model_helpers import is_overridden

from terratim.tasks.writer import GeoTiffPredictionWriter


class ConfigError(ValueError):
    """Building the configured model, data or trainer failed; ``__cause__`` is the error the class raised."""


def _raised_in_jsonargparse(err: BaseException) -> bool:
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}jsonargparse{os.sep}" in tb.tb_frame.f_code.co_filename


def original_error(err: BaseException) -> BaseException:
    """The error a configured class raised, below jsonargparse's ``ValueError`` wrappers (a Union dump)."""
    while err.__cause__ is not None and _raised_in_jsonargparse(err):
        err = err.__cause__
    return err


def _class_paths(value: Any) -> list[str]:
    """The ``class_path`` of a config entry or of each entry of a list of them."""
    items = value if isinstance(value, list) else [value]
    return [str(item.get("class_path")) for item in items if hasattr(item, "get") and item.get("class_path")]


def check_logger_packages(logger: Any) -> None:
    """Fail with the install line when the config's TensorBoardLogger has no tensorboard to write with."""
    wants_tensorboard = any(path.rsplit(".", 1)[-1] == "TensorBoardLogger" for path in _class_paths(logger))
    available = any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))
    if wants_tensorboard and not available:
        raise ImportError("the config's TensorBoardLogger needs the tensorboard package: pip install tensorboard")


def _validates(datamodule: Any) -> bool:
    """Whether fitting with ``datamodule`` runs a validation loop (so that ``val/loss`` exists)."""
    roots = getattr(datamodule, "roots", None)
    if isinstance(roots, dict) and "val" in roots:
        return bool(roots["val"])
    return datamodule is not None and is_overridden("val_dataloader", datamodule, LightningDataModule)


class ConfigErrorCLI(LightningCLI):
    """A LightningCLI whose errors while building the configured classes are one-line :class:`ConfigError` s."""

    def instantiate_classes(self) -> None:
        """Build the configured classes; an error raised there is reported as a :class:`ConfigError`."""
        try:
            super().instantiate_classes()
        except ValueError as err:
            cause = original_error(err)
            raise ConfigError(f"config: {cause}") from cause


class TerratimCLI(ConfigErrorCLI):
    """LightningCLI with prediction output options and TerraTorch's default checkpointing."""

    def before_instantiate_classes(self) -> None:
        check_logger_packages(self.config[self.subcommand].get("trainer", {}).get("logger"))

    def instantiate_classes(self) -> None:
        """Build the configured classes (errors as :class:`ConfigError`), then TerraTorch's default checkpoint."""
        super().instantiate_classes()
        self._default_checkpointing()

    def _default_checkpointing(self) -> None:
        """Replace Lightning's default checkpoint callback by TerraTorch's (``{epoch}``, best ``val/loss``)."""
        trainer_config = self.config[self.subcommand].get("trainer", {})
        configured = any("Checkpoint" in path for path in _class_paths(trainer_config.get("callbacks") or []))
        callbacks: list[Any] = self.trainer.callbacks  # type: ignore[attr-defined]  # a Trainer property
        defaults = [cb for cb in callbacks if type(cb) is ModelCheckpoint]
        if configured or len(defaults) != 1:
            return
        monitor = "val/loss" if _validates(self.datamodule) and self.trainer.limit_val_batches != 0 else None
        callbacks[callbacks.index(defaults[0])] = ModelCheckpoint(filename="{epoch}", monitor=monitor)

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - jsonargparse parser
        parser.add_argument(
            "--predict_output_dir",
            type=str | None,
            default=None,
            help="folder for predicted GeoTIFFs (default <default_root_dir>/predictions)",
        )
        parser.add_argument("--predict_png", type=bool, default=False, help="also write PNG panels")
        parser.add_argument("--predict_overwrite", type=bool, default=False, help="replace existing outputs")

    def before_predict(self) -> None:
        callbacks: list[Any] = self.trainer.callbacks  # type: ignore[attr-defined]  # a Trainer property
        if any(isinstance(cb, GeoTiffPredictionWriter) for cb in callbacks):
            return
        config = self.config[self.subcommand]
        output = config.get("predict_output_dir") or os.path.join(self.trainer.default_root_dir, "predictions")
        writer = GeoTiffPredictionWriter(
            output, png=config.get("predict_png", False), overwrite=config.get("predict_overwrite", False)
        )
        callbacks.append(writer)


def run_lightning_cli(argv: list[str]) -> int:
    """Run a LightningCLI subcommand (``argv[0]`` is ``fit``, ``validate``, ``test`` or ``predict``)."""
    build_cli(precision_to_trainer(argv))
    return 0


# terratim's --precision choices -> Lightning's trainer precision
TRAINER_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed"}


def precision_to_trainer(argv: list[str]) -> list[str]:
    """``--precision fp32|bf16|auto`` (as on ``infer``) of ``validate``/``test``/``predict`` -> ``--trainer.precision``;
    ``auto`` takes bf16 where the device computes it natively and says so. Other arguments pass unchanged."""
    out: list[str] = []
    rest = iter(argv)
    for arg in rest:
        if arg == "--precision" or arg.startswith("--precision="):
            value = arg.split("=", 1)[1] if "=" in arg else next(rest, "")
            if argv[:1] == ["fit"]:
                raise ValueError(
                    "fit takes --trainer.precision (e.g. bf16-mixed); --precision fp32|bf16|auto is "
                    "for validate, test and predict"
                )
            import torch

            from terratim.precision import resolve_precision

            device = "cuda" if torch.cuda.is_available() else "cpu"
            out.append(f"--trainer.precision={TRAINER_PRECISION[resolve_precision(value, device, report=True)]}")
        else:
            out.append(arg)
    return out


def build_cli(argv: list[str]) -> TerratimCLI:
    """Parse ``argv``, build the model, data and trainer, run the subcommand and return the CLI object."""
    import terratim.datamodules  # noqa: F401 - makes short class names of our data modules resolvable
    import terratim.tasks  # noqa: F401

    with warnings.catch_warnings():  # argv is the command line itself, not a second source of arguments
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return _cli(argv)


def _cli(argv: list[str]) -> TerratimCLI:
    return TerratimCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=list(argv),
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "terratim", "default_env": False},
        auto_configure_optimizers=True,
    )


def main() -> int:
    """Entry point for ``python -m terratim.tasks.cli``."""
    import sys

    return run_lightning_cli(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["ConfigError", "TerratimCLI", "run_lightning_cli"]
