"""``terratim merge-peft --ckpt in.ckpt --out out.ckpt``: fold a PEFT fine-tune's adapters into plain weights.

The input is a ``terratim fit`` checkpoint of a task whose ``model_args`` has a ``peft_config``. The output is the
same checkpoint with the adapters merged into the backbone's weights (split qkv projections fused again), so its
``state_dict`` has the plain backbone's names, and ``model_args`` without ``peft_config``: it loads as a plain task
model (``terratim test|predict -c config-without-peft_config.yaml --ckpt_path out.ckpt``, ``terratim infer --ckpt
out.ckpt``). Optimizer and scheduler states (of the adapters) are left out, so training cannot resume from it.
The output file must not exist.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DROPPED = ("optimizer_states", "lr_schedulers")  # states of the adapter parameters: meaningless once merged


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", type=Path, required=True, help="fine-tune checkpoint (model_args.peft_config)")
    parser.add_argument("--out", type=Path, required=True, help="merged checkpoint to write (must not exist)")


def merged_checkpoint(checkpoint: dict[str, Any], source: Path) -> dict[str, Any]:
    """A task checkpoint with its PEFT adapters merged: plain ``state_dict`` and ``model_args``.

    Args:
        checkpoint: a Lightning checkpoint of a terratim task (``hyper_parameters`` with ``model_args``).
        source: its path, for error messages.
    """
    from terratim.inference.adapters import _task_class
    from terratim.tasks.peft import merge_peft

    hparams = dict(checkpoint.get("hyper_parameters") or {})
    model_args = dict(hparams.get("model_args") or {})
    if model_args.get("peft_config") is None:
        raise ValueError(f"{source} has no model_args.peft_config: it is not a PEFT fine-tune, nothing to merge")
    record = checkpoint.get("terratim") or {}
    class_path = hparams.get("_class_path") or record.get("task_class")
    if not class_path:
        raise ValueError(f"{source} does not name its task class (hyper_parameters._class_path)")
    init_args = {k: v for k, v in hparams.items() if not k.startswith("_")}
    build_args = {**model_args, "backbone_pretrained": False}  # the weights come from the checkpoint
    build_args.pop("backbone_ckpt_path", None)
    task = _task_class(class_path)(**{**init_args, "model_args": build_args})
    task.load_state_dict(checkpoint["state_dict"], strict=True)
    task.model.backbone = merge_peft(task.model.backbone)
    plain_args = {k: v for k, v in model_args.items() if k != "peft_config"}
    merged = {k: v for k, v in checkpoint.items() if k not in DROPPED}
    merged["hyper_parameters"] = {**hparams, "model_args": plain_args}
    merged["state_dict"] = {k: v.detach().clone() for k, v in task.state_dict().items()}
    return merged


def run(args: argparse.Namespace) -> int:
    import torch

    from terratim.data.geotiff import check_writable
    from terratim.inference.adapters import _load_checkpoint

    out = Path(args.out)
    if out.exists() or out.is_symlink():
        raise FileExistsError(f"{out} exists; merge-peft never replaces a file, give a new --out")
    check_writable(out, overwrite=False)
    checkpoint = _load_checkpoint(args.ckpt)
    merged = merged_checkpoint(checkpoint, args.ckpt)
    torch.save(merged, out)
    print(f"wrote {out}: adapters merged into the backbone weights; load it as a plain task (no peft_config)")
    return 0
