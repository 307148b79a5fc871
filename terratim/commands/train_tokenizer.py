"""``terratim train-tokenizer -c config.yaml``: train an FSQ-VAE tokenizer (see docs/pretraining.md).

Config sections: ``tokenizer`` (``TokenizerConfig`` fields; ``modality`` required, the rest default to the
released architecture), ``data``, ``optim``, ``trainer``, ``seed``, ``output``, ``export_dtype`` (``float16``
halves the file) (see
:mod:`terratim.pretraining.config`). The result is ``output`` (``.safetensors``) with its ``.json`` config, which
``terratim.build("terramind_v1_tokenizer_<mod>", ckpt_path=output)`` loads.
"""

from __future__ import annotations

import argparse

TOP_KEYS = {"tokenizer", "data", "optim", "trainer", "seed", "output", "export_dtype"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="YAML config (e.g. configs/pretrain/*.yaml)")
    parser.add_argument("--output", help="override the config's output file (.safetensors)")
    parser.add_argument("--max-steps", type=int, help="override trainer.max_steps")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def train_tokenizer(config: dict, output: str | None = None, max_steps: int | None = None,
                    overwrite: bool = False, progress_bar: bool = True):  # fmt: skip
    """Train and export a tokenizer as a config dict describes; returns (module, output path)."""
    import lightning.pytorch as pl

    from terratim.commands.pretrain import check_output
    from terratim.pretraining.config import check_keys, fit_and_export
    from terratim.pretraining.tokenizer_training import TokenizerTraining
    from terratim.tokenizers.model import TokenizerConfig

    check_keys(config, TOP_KEYS, "top level")
    spec = dict(config.get("tokenizer") or {})
    if "modality" not in spec:
        raise ValueError("the 'tokenizer' section needs 'modality' (e.g. LULC, S1GRD, DEM, NDVI)")
    tok_config = TokenizerConfig.for_modality(spec.pop("modality"), **spec)
    out_path = check_output(output or config.get("output") or "tokenizer.safetensors", overwrite,
                            config.get("export_dtype", "float32"))  # fmt: skip
    seed = int(config.get("seed", 0))
    pl.seed_everything(seed, workers=True, verbose=False)
    trainer_cfg = dict(config.get("trainer") or {})
    if max_steps is not None:
        trainer_cfg["max_steps"] = max_steps
    trainer_cfg.setdefault("max_steps", 1000)
    module = TokenizerTraining(tok_config, max_steps=trainer_cfg["max_steps"], seed=seed, **(config.get("optim") or {}))
    fit_and_export(module, config, [tok_config.modality], trainer_cfg, seed, progress_bar, out_path)
    return module, out_path


def run(args: argparse.Namespace) -> int:
    from terratim.pretraining.config import load_yaml

    _, path = train_tokenizer(load_yaml(args.config), args.output, args.max_steps, args.overwrite)
    print(f"tokenizer written to {path} (+ {path.with_suffix('.json').name})")
    return 0


def run_argv(argv: list[str]) -> int:
    """``terratim train-tokenizer ARGS``: the command line after the command name."""
    parser = argparse.ArgumentParser(prog="terratim train-tokenizer")
    add_arguments(parser)
    return run(parser.parse_args(argv))
