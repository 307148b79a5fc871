"""``terratim pretrain -c config.yaml``: masked multimodal pretraining of TerraMind (see docs/pretraining.md).

Config sections: ``model`` (``size`` of a released architecture or ``architecture`` with ``TerraMindConfig``
fields; ``inputs``; ``targets``; optional ``init_from``, a checkpoint to continue from), ``tokenizers``
(``{modality: tokenizer file}`` for every target and token input), ``masking`` (``input_tokens``,
``target_tokens``, ``alpha``), ``loss_weighting``, ``data``, ``optim``, ``trainer``, ``seed``, ``output``,
``export_dtype`` (``float16`` halves the file). The output is the encoder-decoder in the official layout
(``.safetensors`` + ``.json``), loadable with ``terratim.build(..., ckpt_path=output)`` as backbone, generator
or TiM model.
"""

from __future__ import annotations

import argparse

TOP_KEYS = {"model", "tokenizers", "masking", "loss_weighting", "data", "optim", "trainer", "seed", "output",
            "export_dtype"}  # fmt: skip
MODEL_KEYS = {"size", "architecture", "inputs", "targets", "init_from"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="YAML config (e.g. configs/pretrain/*.yaml)")
    parser.add_argument("--output", help="override the config's output file (.safetensors)")
    parser.add_argument("--max-steps", type=int, help="override trainer.max_steps")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def architecture(model: dict):
    """The ``TerraMindConfig`` a ``model`` section names (``size``) or spells out (``architecture``)."""
    from terratim.model.config import TerraMindConfig, size_config

    if ("size" in model) == ("architecture" in model):
        raise ValueError("the 'model' section needs exactly one of 'size' (tiny/small/base/large) or 'architecture'")
    if "size" in model:
        return size_config(model["size"])
    return TerraMindConfig(**model["architecture"])


def check_output(path: str, overwrite: bool, export_dtype: str = "float32"):
    """Before any training: the weights file and its ``.json`` can be written, and ``export_dtype`` is known."""
    from terratim.data.geotiff import check_writable

    if export_dtype not in ("float16", "bfloat16", "float32"):
        raise ValueError(f"export_dtype must be float16, bfloat16 or float32, got {export_dtype!r}")
    out_path = check_writable(path, overwrite)
    if out_path.suffix == ".json":
        raise ValueError(f"output {out_path} must not end in .json: the config is written next to it as .json")
    check_writable(out_path.with_suffix(".json"), overwrite)
    return out_path


def pretrain(config: dict, output: str | None = None, max_steps: int | None = None, overwrite: bool = False,
             progress_bar: bool = True):  # fmt: skip
    """Pretrain and export as a config dict describes; returns (module, output path)."""
    import lightning.pytorch as pl

    from terratim.pretraining.config import check_keys, fit_and_export
    from terratim.pretraining.masking import MaskingConfig
    from terratim.pretraining.module import MaskedPretraining
    from terratim.tokenizers.build import build_tokenizer

    check_keys(config, TOP_KEYS, "top level")
    model = dict(config.get("model") or {})
    check_keys(model, MODEL_KEYS, "model")
    if not model.get("inputs") or not model.get("targets"):
        raise ValueError("the 'model' section needs 'inputs' and 'targets' (lists of modality names)")
    out_path = check_output(output or config.get("output") or "terramind_pretrained.safetensors", overwrite,
                            config.get("export_dtype", "float32"))  # fmt: skip
    seed = int(config.get("seed", 0))
    pl.seed_everything(seed, workers=True, verbose=False)
    tokenizer_files = config.get("tokenizers") or {}  # targets and token inputs are only encoded
    tokenizers = {name: build_tokenizer(name, ckpt_path=path, decoder=False) for name, path in tokenizer_files.items()}
    trainer_cfg = dict(config.get("trainer") or {})
    if max_steps is not None:
        trainer_cfg["max_steps"] = max_steps
    trainer_cfg.setdefault("max_steps", 1000)
    module = MaskedPretraining(
        architecture(model), model["inputs"], model["targets"], tokenizers,
        MaskingConfig(**(config.get("masking") or {})), max_steps=trainer_cfg["max_steps"],
        weighting=config.get("loss_weighting", "mod"), seed=seed, **(config.get("optim") or {}),
    )  # fmt: skip
    if model.get("init_from"):
        module.load_network(model["init_from"])
    modalities = list(dict.fromkeys([*module.inputs, *module.targets]))
    fit_and_export(module, config, modalities, trainer_cfg, seed, progress_bar, out_path)
    return module, out_path


def run(args: argparse.Namespace) -> int:
    from terratim.pretraining.config import load_yaml

    _, path = pretrain(load_yaml(args.config), args.output, args.max_steps, args.overwrite)
    print(f"TerraMind checkpoint written to {path} (+ {path.with_suffix('.json').name})")
    return 0


def run_argv(argv: list[str]) -> int:
    """``terratim pretrain ARGS``: the command line after the command name."""
    parser = argparse.ArgumentParser(prog="terratim pretrain")
    add_arguments(parser)
    return run(parser.parse_args(argv))
