"""Thin adapters from terratim models to the engine's ``predict`` callable plus output heads.

Each adapter returns a :class:`Predictor`: the callable (raw-unit inputs in, (B, K, h, w) out), the heads that
say how the K channels are written, the band count expected per input modality and the nodata fill values.

* fine-tuned task models (``terratim fit`` checkpoint + its config): segmentation -> class map, regression ->
  float32; a TiM backbone inside the task model needs nothing special;
* generation models (``terramind_v1_*_generate``): LULC logits blended then argmaxed; continuous modalities in
  physical units;
* backbones: per-pixel embeddings (patch features repeated over their 16 x 16 pixels) as a float32 GeoTIFF.
  Per-chip embeddings go to GeoParquet, see :mod:`terratim.inference.embeddings`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from terratim import modalities as mods
from terratim.inference.heads import Head

LULC_HEAD = {"kind": "classes", "names": mods.LULC_CLASSES, "colors": mods.LULC_COLORS}
DEFAULT_COLORS = ("#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                  "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip


@dataclass
class Predictor:
    """A model made ready for the engine."""

    predict: Any  # Callable[[dict[str, Tensor]], Tensor]
    heads: list[Head]
    bands: dict[str, int]
    fill: dict[str, np.ndarray] = field(default_factory=dict)
    fingerprint: dict = field(default_factory=dict)


def output_paths(out: Path, names: Sequence[str]) -> dict[str, Path]:
    """One output -> ``out``; several -> ``out`` with ``_<NAME>`` before the suffix."""
    out = Path(out)
    if len(names) == 1:
        return {names[0]: out}
    return {n: out.with_name(f"{out.stem}_{n}{out.suffix or '.tif'}") for n in names}


def _standardizer(stats: Mapping[str, tuple[np.ndarray, np.ndarray]], device: torch.device):
    tables = {m: (torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1),
                  torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1))
              for m, (mean, std) in stats.items()}  # fmt: skip

    def standardize(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: (x - tables[m][0]) / tables[m][1] if m in tables else x for m, x in batch.items()}

    return standardize


# ------------------------------------------------------------------------------------------------ generation
def generation_predictor(model: torch.nn.Module, out: Path, generator: torch.Generator | None = None,
                         confidence: bool = False, cog: bool = False,
                         timesteps: int | None = None) -> Predictor:  # fmt: skip
    """Adapter for a ``terramind_v1_*_generate`` model (raw-unit inputs; standardized inside).

    Args:
        model: a generation model (``terratim.build("terramind_v1_tiny_generate", ...)``).
        out: output path (one file per generated modality when several).
        generator: randomness for token sampling and diffusion, drawn from chip to chip.
        confidence: add a confidence band to the LULC map.
        cog: write Cloud-Optimized GeoTIFFs.
        timesteps: diffusion steps for continuous outputs.
    """
    outputs = list(model.outputs)
    sequences = [n for n in outputs if mods.resolve(n).kind == "sequence"]
    if sequences:
        raise ValueError(f"{sequences} are sequences, not images; they cannot be generated over a scene")
    paths = output_paths(out, outputs)
    heads = []
    for name in outputs:
        modality = mods.resolve(name)
        if name == "LULC":
            heads.append(Head(paths[name], len(mods.LULC_CLASSES), confidence=confidence, cog=cog, **LULC_HEAD))
        else:
            heads.append(Head(paths[name], modality.num_bands, names=modality.bands, cog=cog))

    def predict(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        result = model(batch, standardize=True, timesteps=timesteps, generator=generator)
        return torch.cat([result[n].float() for n in outputs], dim=1)  # (B, K, h, w)

    inputs = list(model.user_inputs)
    bands = {n: mods.resolve(n).num_bands for n in inputs if n in mods.MODALITIES}
    fill = {n: np.asarray(mods.resolve(n).mean, np.float32) for n in inputs if n in mods.MODALITIES}
    return Predictor(predict, heads, bands, fill, {"model": type(model).__name__, "outputs": outputs})


# ------------------------------------------------------------------------------------------------ task models
def _task_class(class_path: str) -> type:
    import terratim.tasks

    short = class_path.rsplit(".", 1)[-1]
    if hasattr(terratim.tasks, short):  # also maps terratorch.tasks.X configs to ours
        return getattr(terratim.tasks, short)
    module, _, name = class_path.rpartition(".")
    if not module:
        raise ValueError(f"model class_path {class_path!r} is not a terratim task")
    return getattr(importlib.import_module(module), name)


def _load_config(path: Path) -> dict:
    import yaml

    if not Path(path).is_file():
        raise FileNotFoundError(f"config not found: {path}")
    config = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(config.get("model"), dict) or "class_path" not in config["model"]:
        raise ValueError(f"{path} has no model.class_path; pass the config used for `terratim fit`")
    return config


def load_task_model(config_path: Path, ckpt_path: Path, device: str | torch.device = "cpu") -> tuple[Any, dict]:
    """The Lightning task from a fine-tuning config and checkpoint, without downloading backbone weights.

    Returns:
        (task in eval mode on ``device``, the config's ``data.init_args``).
    """
    config = _load_config(config_path)
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors vary by torch version
        raise ValueError(f"{ckpt_path} is not a Lightning checkpoint that loads without running pickled code: "
                         f"{err}") from err  # fmt: skip
    if "state_dict" not in checkpoint:
        raise ValueError(f"{ckpt_path} has no 'state_dict'; pass the checkpoint written by `terratim fit`")
    hparams = dict(checkpoint.get("hyper_parameters") or config["model"].get("init_args") or {})
    hparams = {k: v for k, v in hparams.items() if not k.startswith("_")}  # LightningCLI's _class_path etc.
    model_args = dict(hparams.get("model_args", {}))
    model_args["backbone_pretrained"] = False  # the fine-tuned weights come from the checkpoint
    model_args.pop("backbone_ckpt_path", None)
    hparams["model_args"] = model_args
    task = _task_class(config["model"]["class_path"])(**hparams)
    task.load_state_dict(checkpoint["state_dict"], strict=True)
    data = dict((config.get("data") or {}).get("init_args") or {})
    return task.eval().to(device), data


def task_predictor(task: Any, data_args: Mapping[str, Any], out: Path, device: str | torch.device = "cpu",
                   confidence: bool = False, cog: bool = False) -> Predictor:  # fmt: skip
    """Adapter for a fine-tuned segmentation or regression task (inputs standardized as in training).

    Args:
        task: a :class:`terratim.tasks.SemanticSegmentationTask` or ``PixelwiseRegressionTask``.
        data_args: the data module's ``init_args`` from the config (modalities, bands, means, stds, ...).
        out: output path.
        device: where the model runs.
        confidence: add a confidence band to class maps.
        cog: write a Cloud-Optimized GeoTIFF.
    """
    from terratim.data.datamodules import modality_stats

    kind = getattr(task, "task", None)
    if kind not in ("segmentation", "regression"):
        raise ValueError(f"{type(task).__name__} ({kind}) does not predict pixels; tiled inference needs a "
                         "segmentation or regression task")  # fmt: skip
    modalities = list(data_args.get("modalities") or [])
    if not modalities:
        raise ValueError("the config's data.init_args has no modalities")
    band_names = data_args.get("bands") or {}
    stats = {m: modality_stats(m, band_names.get(m), data_args.get("means"), data_args.get("stds"))
             for m in modalities}  # fmt: skip
    replace = data_args.get("no_data_replace")
    fill = {m: np.full_like(s[0], replace) if replace is not None else s[0] for m, s in stats.items()}
    standardize = _standardizer(stats, torch.device(device))
    if kind == "segmentation":
        n = task.num_classes
        names = tuple(task.class_names or [str(i) for i in range(n)])
        colors = mods.LULC_COLORS if n == len(mods.LULC_COLORS) else DEFAULT_COLORS[:n] if n <= 11 else ()
        head = Head(out, n, "classes", names, tuple(colors), confidence, cog)
    else:
        head = Head(out, 1, names=("value",), cog=cog)

    def predict(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        output = task(standardize(batch))
        output = getattr(output, "output", output)
        return output if output.ndim == 4 else output[:, None]  # regression may return (B, h, w)

    bands = {m: len(s[0]) for m, s in stats.items()}
    standardization = {m: [s[0].tolist(), s[1].tolist()] for m, s in stats.items()}  # mean, std per band
    return Predictor(predict, [head], bands, fill, {"task": type(task).__name__, "standardize": standardization})


# ------------------------------------------------------------------------------------------------ backbones
def embedding_predictor(backbone: torch.nn.Module, out: Path, cog: bool = False) -> Predictor:
    """Per-pixel embeddings from a TerraMind backbone (last layer; each patch's vector over its pixels).

    The model sees raw-unit inputs standardized with the registry statistics. Output: a float32 GeoTIFF with
    one band per embedding dimension (mind the size: D bands at full resolution).
    """
    inputs = [n for n in backbone.inputs]
    stats = {n: (np.asarray(mods.resolve(n).mean), np.asarray(mods.resolve(n).std)) for n in inputs}
    patch = backbone.config.patch_size
    dim = backbone.config.dim * (len(inputs) if backbone.merge_method == "concat" else 1)
    standardize = _standardizer(stats, next(backbone.parameters()).device)

    def predict(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        size = next(iter(batch.values())).shape[-1]
        tokens = backbone(standardize(batch))[-1]  # (B, N, D)
        grid = size // patch
        maps = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, grid, grid)  # (B, D, h/p, w/p)
        return F.interpolate(maps, scale_factor=patch, mode="nearest")  # (B, D, h, w)

    head = Head(out, dim, names=tuple(f"emb_{i}" for i in range(dim)), cog=cog)
    bands = {n: mods.resolve(n).num_bands for n in inputs}
    return Predictor(predict, [head], bands, {n: s[0].astype(np.float32) for n, s in stats.items()},
                     {"backbone": type(backbone).__name__})  # fmt: skip


def generate_scene(model: torch.nn.Module, inputs: Mapping[str, str | Path], out: Path, tiling: Any = None, *,
                   generator: torch.Generator | None = None, confidence: bool = False, cog: bool = False,
                   timesteps: int | None = None, device: str | torch.device = "cpu", overwrite: bool = False,
                   resume: bool = False, progress: Any = None) -> list[Path]:  # fmt: skip
    """Generate over GeoTIFF scenes of any size with the streaming engine (the path ``terratim generate`` takes
    for inputs larger than one chip). Arguments as :func:`generation_predictor` and
    :func:`terratim.inference.engine.infer_scene`; returns the written files (one per output modality).
    """
    from terratim.inference.engine import TilingConfig, infer_scene

    predictor = generation_predictor(model, out, generator, confidence, cog, timesteps)
    return infer_scene(predictor.predict, dict(inputs), predictor.heads, tiling or TilingConfig(),
                       bands=predictor.bands, device=device, fill=predictor.fill, overwrite=overwrite,
                       resume=resume, progress=progress, fingerprint=predictor.fingerprint)  # fmt: skip
