"""``terratim train-tokenizer -c config.yaml``: train an FSQ-VAE tokenizer (see docs/pretraining.md).

A LightningCLI like ``terratim fit``: ``seed_everything``, ``trainer``, ``model`` (the arguments of
:class:`~terratim.pretraining.tokenizer_training.TokenizerTraining`: ``modality``, ``architecture`` with the
``TokenizerConfig`` fields that differ from the released tokenizer, ``lr``, ...), ``data``
(:class:`~terratim.pretraining.data.PretrainingDataModule`), ``output``, ``export_dtype`` and ``overwrite``.
Configs in the earlier flat format are converted on reading (:mod:`terratim.pretraining.cli`). The result is
``output`` (``.safetensors``) with its ``.json`` config, which
``terratim.build("terramind_v1_tokenizer_<mod>", ckpt_path=output)`` loads.
"""

from __future__ import annotations

DEFAULT_OUTPUT = "tokenizer.safetensors"


def run_argv(argv: list[str]) -> int:
    """``terratim train-tokenizer ARGS``: the command line after the command name."""
    from terratim.pretraining.cli import run_training
    from terratim.pretraining.tokenizer_training import TokenizerTraining

    _, path = run_training("train-tokenizer", TokenizerTraining, argv, DEFAULT_OUTPUT)
    print(f"tokenizer written to {path} (+ {path.with_suffix('.json').name})")
    return 0
