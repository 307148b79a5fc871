"""``terratim pretrain -c config.yaml``: masked multimodal pretraining of TerraMind (see docs/pretraining.md).

A LightningCLI like ``terratim fit``: ``seed_everything``, ``trainer``, ``model`` (the arguments of
:class:`~terratim.pretraining.module.MaskedPretraining`: ``inputs``, ``targets``, ``tokenizers``, ``size`` or
``architecture``, ``masking``, ``lr``, ...), ``data`` (:class:`~terratim.pretraining.data.PretrainingDataModule`),
``output``, ``export_dtype`` (``float16`` halves the file) and ``overwrite``. Overrides such as
``--trainer.max_steps 10`` and ``--print_config`` work as for ``fit``; configs in the earlier flat format are
converted on reading (:mod:`terratim.pretraining.cli`). The output is the encoder-decoder in the official layout
(``.safetensors`` + ``.json``), which ``terratim.build_from_file(output, mode=...)`` loads as a backbone,
generator or TiM model.
"""

from __future__ import annotations

DEFAULT_OUTPUT = "terramind_pretrained.safetensors"


def run_argv(argv: list[str]) -> int:
    """``terratim pretrain ARGS``: the command line after the command name."""
    from terratim.pretraining.cli import run_training
    from terratim.pretraining.module import MaskedPretraining

    _, path = run_training("pretrain", MaskedPretraining, argv, DEFAULT_OUTPUT)
    print(f"TerraMind checkpoint written to {path} (+ {path.with_suffix('.json').name})")
    return 0
