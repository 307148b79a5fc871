"""Tiny fine-tuned task checkpoints saved as `terratim fit` saves them (for export and inference tests)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from terratim.datamodules.multimodal import modality_stats

CLASS_NAMES = ["land", "water", "cloud"]
TASK_CLASSES = {"segmentation": "SemanticSegmentationTask", "regression": "PixelwiseRegressionTask",
                "classification": "ClassificationTask"}


def model_args(kind: str, backbone: str) -> dict:
    """S1GRD in, a small decoder; TiM imagines LULC by argmax (tim_temperature 0, deterministic)."""
    args: dict = {"backbone": backbone, "backbone_pretrained": False, "backbone_modalities": ["S1GRD"]}
    if kind == "classification":
        args.update(decoder="IdentityDecoder", num_classes=3)
    else:
        args.update(necks=[{"name": "SelectIndices", "indices": [11]}, {"name": "ReshapeTokensToImage"}],
                    decoder="FCNDecoder", decoder_channels=16)
        if kind == "segmentation":
            args["num_classes"] = 3
    if backbone.endswith("_tim"):
        args.update(backbone_tim_modalities=["LULC"], backbone_tim_temperature=0.0)
    return args


def build_task(kind: str, backbone: str = "terramind_v1_tiny", seed: int = 0):
    """A task model in eval mode with seeded random weights."""
    import terratim.tasks

    task_class = getattr(terratim.tasks, TASK_CLASSES[kind])
    torch.manual_seed(seed)
    names = {} if kind == "regression" else {"class_names": CLASS_NAMES}
    return task_class(model_args(kind, backbone), **names).eval()


def inference_record(task) -> dict:
    """``checkpoint["terratim"]`` as `terratim fit` writes it (registry S1GRD statistics, nodata -> 0)."""
    mean, std = modality_stats("S1GRD")
    return {"version": 1, "task_class": f"{type(task).__module__}.{type(task).__qualname__}",
            "modalities": ["S1GRD"], "bands": {}, "means": {"S1GRD": mean.tolist()},
            "stds": {"S1GRD": std.tolist()}, "no_data_replace": 0}


def save_task(folder: Path, kind: str = "segmentation", backbone: str = "terramind_v1_tiny",
              record: bool = True) -> tuple[Path, Path]:
    """(config.yaml, model.ckpt) of a tiny task; ``record=False`` leaves out the checkpoint's inference record."""
    task = build_task(kind, backbone)
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    if record:
        checkpoint["terratim"] = inference_record(task)
    ckpt = folder / "model.ckpt"
    torch.save(checkpoint, ckpt)
    init_args = {"model_args": model_args(kind, backbone)}
    if kind != "regression":
        init_args["class_names"] = CLASS_NAMES
    config = {"model": {"class_path": f"terratim.tasks.{TASK_CLASSES[kind]}", "init_args": init_args},
              "data": {"class_path": "terratim.datamodules.GenericMultiModalDataModule",
                       "init_args": {"modalities": ["S1GRD"], "no_data_replace": 0}}}
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return config_path, ckpt
