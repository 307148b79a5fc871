"""Thin adapters from terratim models to the engine's ``predict`` callable plus output heads.

Each adapter returns a :class:`Predictor`: the callable (raw-unit inputs in, (B, K, h, w) out), the heads that
say how the K channels are written, the band count expected per input modality and the nodata fill values.

* fine-tuned task models (a ``terratim fit`` checkpoint, which carries its modalities and statistics; a
  config is optional): segmentation -> class map, regression ->
  float32; a TiM backbone inside the task model needs nothing special;
* generation models (``terramind_v1_*_generate``): LULC logits blended then argmaxed; continuous modalities in
  physical units;
* backbones: per-pixel embeddings (patch features repeated over their 16 x 16 pixels) as a float32 GeoTIFF.
  Per-chip embeddings go to GeoParquet, see :mod:`terratim.inference.embeddings`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from terratim import modalities as mods
from terratim.inference.heads import Head

if TYPE_CHECKING:
    from terratim.generation.generate import TerraMindGenerate
    from terratim.model.backbone import TerraMindBackbone


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
    tables = {
        m: (
            torch.as_tensor(mean, dtype=torch.float32, device=device),
            torch.as_tensor(std, dtype=torch.float32, device=device),
        )
        for m, (mean, std) in stats.items()
    }

    def standardize(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: mods.normalize(x, *tables[m], m) if m in tables else x for m, x in batch.items()}

    return standardize


# ------------------------------------------------------------------------------------------------ generation
def generation_predictor(
    model: TerraMindGenerate,
    out: Path,
    generator: torch.Generator | None = None,
    confidence: bool = False,
    cog: bool = False,
    timesteps: int | None = None,
) -> Predictor:
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
        if modality.is_categorical:
            heads.append(
                Head(
                    paths[name],
                    len(modality.classes),
                    confidence=confidence,
                    cog=cog,
                    kind="classes",
                    names=modality.classes,
                    colors=modality.colors,
                )
            )
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
def _as_arrays(pair: tuple[tuple[float, ...], tuple[float, ...]]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(pair[0]), np.asarray(pair[1])


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


def _load_checkpoint(path: Path) -> dict:
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors vary by torch version
        raise ValueError(
            f"{path} is not a Lightning checkpoint that loads without running pickled code: {err}"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} has no 'state_dict'; pass the checkpoint written by `terratim fit`")
    return checkpoint


# Task arguments that shape training only: not compared with the checkpoint (their names are still checked).
TRAINING_ONLY = {
    "loss",
    "ignore_index",
    "class_weights",
    "freeze_backbone",
    "freeze_decoder",
    "freeze_head",
    "lr",
    "optimizer",
    "optimizer_hparams",
    "scheduler",
    "scheduler_hparams",
    "plot_on_val",
}
# model_args naming where the backbone's starting weights came from: the checkpoint's weights replace them.
WEIGHT_SOURCES = {"backbone_pretrained", "backbone_ckpt_path"}


def _accepted(cls: type) -> set[str] | None:
    """Keyword arguments ``cls`` takes (following ``**kwargs`` to the base classes); None if it takes any."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters
        names |= {n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return names
    return None


def _unknown_keys(given: Mapping[str, Any], known: set[str], where: str, what: str) -> list[str]:
    problems = []
    for key in sorted(set(given) - known):
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"{where}.{key} is not {what}{hint}")
    return problems


def _same(a: Any, b: Any) -> bool:
    """Config and checkpoint values agree (lists vs tuples, and YAML's ``1e-4`` string vs a float)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (str, int, float)) and isinstance(b, (str, int, float)) and not isinstance(a, bool):
        try:
            return a == b or float(a) == float(b)
        except (TypeError, ValueError):
            return False
    return a == b


def _show(value: Any) -> str:
    return json.dumps(value, default=str)


def _model_mismatches(config_args: Mapping[str, Any], saved: Mapping[str, Any], task_class: type) -> list[str]:
    """How the config's ``model.init_args`` disagrees with the checkpoint's saved hyper-parameters."""
    where = "model.init_args"
    problems = _unknown_keys(
        config_args, _accepted(task_class) or set(config_args), where, f"an argument of {task_class.__name__}"
    )
    for key in sorted(set(config_args) & set(saved) - TRAINING_ONLY - {"model_args"}):
        if not _same(config_args[key], saved[key]):
            problems.append(
                f"{where}.{key} is {_show(config_args[key])} in the config, {_show(saved[key])} in the checkpoint"
            )
    given, trained = dict(config_args.get("model_args") or {}), dict(saved.get("model_args") or {})
    problems += _unknown_keys(
        {k: v for k, v in given.items() if k not in WEIGHT_SOURCES},
        set(trained),
        f"{where}.model_args",
        "in the checkpoint's model_args",
    )
    for key in sorted(set(given) & set(trained) - WEIGHT_SOURCES):
        if not _same(given[key], trained[key]):
            problems.append(
                f"{where}.model_args.{key} is {_show(given[key])} in the config, "
                f"{_show(trained[key])} in the checkpoint"
            )
    return problems


def _model_modalities(task: Any) -> list[str] | None:
    """The modalities the built task model takes as input (a TiM backbone's imagined ones left out)."""
    backbone = getattr(getattr(task, "model", None), "backbone", None)
    inputs = getattr(backbone, "inputs", None)
    if not isinstance(inputs, Mapping):
        return None
    imagined = set(getattr(backbone, "tim_modalities", ()))
    return [name for name in inputs if name not in imagined]


def _data_args(
    config: Mapping[str, Any], checkpoint: Mapping[str, Any], task: Any, model_args: Mapping[str, Any]
) -> tuple[dict, list[str]]:
    """The data arguments inference uses (modalities from the model, statistics from the checkpoint when it
    saved its data module's hyper-parameters, else from the config) and how the config disagrees with them."""
    section = config.get("data") or {}
    given = dict(section.get("init_args") or {})
    problems = []
    if "class_path" in section:
        try:
            data_class = _data_class(section["class_path"])
        except (ImportError, AttributeError, ValueError):
            data_class = None
        if data_class is not None and (known := _accepted(data_class)) is not None:
            problems += _unknown_keys(given, known, "data.init_args", f"an argument of {data_class.__name__}")
    data = dict(given)
    saved = {k: v for k, v in dict(checkpoint.get("datamodule_hyper_parameters") or {}).items() if k[:1] != "_"}
    for key in sorted(set(saved) & {"means", "stds", "bands", "no_data_replace", "modalities"}):
        if key in given and not _same(given[key], saved[key]):
            problems.append(
                f"data.init_args.{key} is {_show(given[key])} in the config, {_show(saved[key])} in the checkpoint"
            )
        data[key] = saved[key]
    modalities = _model_modalities(task)
    if modalities is not None:
        if "modalities" in data and not _same(
            sorted(mods.resolve(m).name for m in data["modalities"]), sorted(modalities)
        ):
            problems.append(
                f"data.init_args.modalities is {_show(list(data['modalities']))} in the config, but "
                f"the checkpoint's model takes {_show(modalities)}"
            )
        data["modalities"] = modalities
    trained_bands = model_args.get("backbone_bands") or {}
    for name, bands in (data.get("bands") or {}).items():
        if name in trained_bands and not _same(list(bands), list(trained_bands[name])):
            trained = _show(list(trained_bands[name]))
            problems.append(
                f"data.init_args.bands.{name} is {_show(list(bands))} in the config, {trained} in the "
                "checkpoint (model_args.backbone_bands)"
            )
    return data, problems


def _data_class(class_path: str) -> type:
    import terratim.datamodules

    short = class_path.rsplit(".", 1)[-1]
    if hasattr(terratim.datamodules, short):
        return getattr(terratim.datamodules, short)
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


STAT_KEYS = ("bands", "means", "stds", "no_data_replace")


def _inference_record(checkpoint: Mapping[str, Any], ckpt_path: Path, needed: bool) -> dict:
    """``checkpoint["terratim"]`` (task class, modalities, statistics; written by ``terratim fit``); with
    ``needed`` an older checkpoint without one is an error that says to pass the config."""
    record = checkpoint.get("terratim")
    if isinstance(record, Mapping) and record.get("modalities"):
        return dict(record)
    if needed:
        raise ValueError(
            f"{ckpt_path} does not carry its modalities and normalization statistics (written by an "
            "older terratim, or trained without a data module); pass the `terratim fit` config with "
            "-c/--config"
        )
    return {}


def _config_from_record(record: Mapping[str, Any]) -> dict:
    """The parts of a fit config that a checkpoint's inference record replaces."""
    data = {key: record[key] for key in ("modalities", *STAT_KEYS) if record.get(key) is not None}
    return {"model": {"class_path": record["task_class"]}, "data": {"init_args": data}}


def _statistics_mismatches(data: dict, record: Mapping[str, Any]) -> list[str]:
    """Fill what the config leaves out from the checkpoint's record; list where the resolved statistics (config
    values or registry defaults) differ from those the model was trained with."""
    from terratim.datamodules.multimodal import modality_stats

    for key in STAT_KEYS:
        if data.get(key) is None and record.get(key) is not None:
            data[key] = record[key]
    problems = []
    if data.get("no_data_replace") != record.get("no_data_replace"):
        problems.append(
            f"data.init_args.no_data_replace is {_show(data.get('no_data_replace'))} in the config, "
            f"{_show(record.get('no_data_replace'))} in the checkpoint"
        )
    for m in record["modalities"]:
        try:
            mean, std = modality_stats(m, (data.get("bands") or {}).get(m), data.get("means"), data.get("stds"))
        except (KeyError, ValueError) as err:
            problems.append(f"data.init_args statistics of {m}: {err}")
            continue
        trained = np.asarray(record["means"][m], np.float32), np.asarray(record["stds"][m], np.float32)
        same = mean.shape == trained[0].shape and np.allclose(mean, trained[0], rtol=1e-6, atol=0)
        if not (same and np.allclose(std, trained[1], rtol=1e-6, atol=0)):
            problems.append(
                f"the config standardizes {m} with means {_show(mean.tolist())} and stds "
                f"{_show(std.tolist())}, the checkpoint was trained with {_show(record['means'][m])} "
                f"and {_show(record['stds'][m])}"
            )
    return problems


def load_task_model(config_path: Path | None, ckpt_path: Path, device: str | torch.device = "cpu") -> tuple[Any, dict]:
    """The Lightning task from a fine-tuning checkpoint (and optionally its config), without downloading
    backbone weights.

    The checkpoint is the source of truth for the model: its saved hyper-parameters (``model_args``: backbone,
    modalities, bands, decoder...; class names) build the task, and the modalities it takes are the model's.
    A checkpoint written by ``terratim fit`` also carries its task class, input modalities and the statistics its
    inputs were standardized with (``checkpoint["terratim"]``): then ``config_path`` may be None. A config,
    when given, supplies the task class and data statistics a checkpoint does not hold; every value it gives must
    agree with the checkpoint (saved hyper-parameters, and the statistics it was trained with), and an unknown key
    is an error: otherwise one ``ValueError`` lists each disagreement with both values. Training-only arguments
    (``lr``, ``loss``, ``freeze_*``...) are not compared. A checkpoint without hyper-parameters is built from the
    config's ``model.init_args``.

    Returns:
        (task in eval mode on ``device``, the data arguments for :func:`task_predictor`).
    """
    checkpoint = _load_checkpoint(ckpt_path)
    record = _inference_record(checkpoint, ckpt_path, needed=config_path is None)
    config = _load_config(config_path) if config_path is not None else _config_from_record(record)
    task_class = _task_class(config["model"]["class_path"])
    config_args = dict(config["model"].get("init_args") or {})
    saved = dict(checkpoint.get("hyper_parameters") or {})
    problems = []
    saved_class = saved.get("_class_path")
    if saved_class and saved_class.rsplit(".", 1)[-1] != task_class.__name__:
        problems.append(
            f"model.class_path is {config['model']['class_path']} in the config, {saved_class} in the checkpoint"
        )
    saved = {k: v for k, v in saved.items() if not k.startswith("_")}  # LightningCLI's _class_path etc.
    problems += _model_mismatches(config_args, saved, task_class) if saved else []
    hparams = saved or config_args
    model_args = dict(hparams.get("model_args", {}))
    model_args["backbone_pretrained"] = False  # the fine-tuned weights come from the checkpoint
    model_args.pop("backbone_ckpt_path", None)
    if not problems:
        task = task_class(**{**hparams, "model_args": model_args})
        data, problems = _data_args(
            config, checkpoint if config_path is not None else {}, task, hparams.get("model_args", {})
        )
        if record and config_path is not None:
            problems += _statistics_mismatches(data, record)
    if problems:
        raise ValueError(
            f"{config_path} does not match {ckpt_path} (the checkpoint wins for the model; fix the "
            f"config or use the one it was trained with): {'; '.join(problems)}"
        )
    task.load_state_dict(checkpoint["state_dict"], strict=True)
    return task.eval().to(device), data


def task_predictor(
    task: Any,
    data_args: Mapping[str, Any],
    out: Path,
    device: str | torch.device = "cpu",
    confidence: bool = False,
    cog: bool = False,
    tim_sampling: bool = False,
) -> Predictor:
    """Adapter for a fine-tuned segmentation or regression task (inputs standardized as in training).

    Args:
        task: a :class:`terratim.tasks.SemanticSegmentationTask` or ``PixelwiseRegressionTask``.
        data_args: the data module's ``init_args`` from the config (modalities, bands, means, stds, ...).
        out: output path.
        device: where the model runs.
        confidence: add a confidence band to class maps.
        cog: write a Cloud-Optimized GeoTIFF.
        tim_sampling: a TiM model imagines with the sampling settings it was trained with; by default it takes
            the most likely tokens in one pass (temperature 0, one decoding step), so that a scene gives the same
            map on every run and the same as its ONNX export.
    """
    from terratim.datamodules.multimodal import modality_stats
    from terratim.viz import class_scheme

    kind = getattr(task, "task", None)
    if kind not in ("segmentation", "regression"):
        raise ValueError(
            f"{type(task).__name__} ({kind}) does not predict pixels; tiled inference needs a "
            "segmentation or regression task"
        )
    modalities = list(data_args.get("modalities") or [])
    if not modalities:
        raise ValueError("the config's data.init_args has no modalities")
    band_names = data_args.get("bands") or {}
    stats = {m: modality_stats(m, band_names.get(m), data_args.get("means"), data_args.get("stds")) for m in modalities}
    replace = data_args.get("no_data_replace")
    fill = {m: np.full_like(s[0], replace) if replace is not None else s[0] for m, s in stats.items()}
    standardize = _standardizer(stats, torch.device(device))
    tims = count_tim_backbones(task) if tim_sampling else imagine_most_likely(task)
    if kind == "segmentation":
        n = task.num_classes
        names = tuple(task.class_names or [str(i) for i in range(n)])
        colors = class_scheme(n, names).colors  # the task's palette, as in its PNG panels
        head = Head(out, n, "classes", names, colors, confidence, cog)
    else:
        head = Head(out, 1, names=("value",), cog=cog)

    def predict(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        output = task(standardize(batch))
        output = getattr(output, "output", output)
        return output if output.ndim == 4 else output[:, None]  # regression may return (B, h, w)

    bands = {m: len(s[0]) for m, s in stats.items()}
    standardization = {m: [s[0].tolist(), s[1].tolist()] for m, s in stats.items()}  # mean, std per band
    record = {"task": type(task).__name__, "standardize": standardization}
    if tims:
        record["tim_imagination"] = "sampled" if tim_sampling else "most likely, one pass"
    return Predictor(predict, [head], bands, fill, record)


def _tim_backbones(model: torch.nn.Module) -> list:
    from terratim.tim import TerraMindTiM

    return [m for m in model.modules() if isinstance(m, TerraMindTiM)]


def count_tim_backbones(model: torch.nn.Module) -> int:
    """How many TiM backbones ``model`` holds."""
    return len(_tim_backbones(model))


def imagine_most_likely(model: torch.nn.Module) -> int:
    """Set every TiM backbone inside ``model`` to imagine by one argmax pass (deterministic); returns how many."""
    tims = _tim_backbones(model)
    for tim in tims:
        tim.generator.settings = tim.generator.settings.replace(temperature=0.0, decoding_steps=1)
    return len(tims)


# ------------------------------------------------------------------------------------------------ backbones
def embedding_predictor(backbone: TerraMindBackbone, out: Path, cog: bool = False) -> Predictor:
    """Per-pixel embeddings from a TerraMind backbone (last layer; each patch's vector over its pixels).

    The model sees raw-unit inputs standardized with the registry statistics. Output: a float32 GeoTIFF with
    one band per embedding dimension (mind the size: D bands at full resolution).
    """
    inputs = [n for n in backbone.inputs]
    stats = {n: _as_arrays(mods.resolve(n).statistics()) for n in inputs}
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
    return Predictor(
        predict,
        [head],
        bands,
        {n: s[0].astype(np.float32) for n, s in stats.items()},
        {"backbone": type(backbone).__name__},
    )
