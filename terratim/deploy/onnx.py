"""ONNX export of fine-tuned task models, and an onnxruntime predictor for the tiled scene engine.

The exported graph takes raw-unit inputs, one ``(B, C, tile, tile)`` float32 tensor per input modality (named
after the modality, batch axis dynamic, tile fixed at export), standardizes them with the statistics the model
was trained with, runs the task model and returns its output ``output``: segmentation logits (B, K, tile, tile),
regression values (B, 1, tile, tile) or classification logits (B, K). A TiM backbone imagines its TiM
modalities inside the graph by a single argmax decoding pass (deterministic; see :func:`imagine_argmax`).

The file's ``metadata_props`` hold everything a runtime needs (:data:`METADATA_KEYS`): input modalities with
their bands, statistics and nodata fill, class names and colours, tile and patch size, opset, the TiM settings
and the terratim version. Exported with PyTorch's TorchScript-based exporter (``torch.onnx.export(...,
dynamo=False)``): the dynamo exporter cannot trace the backbone's input checks.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from terratim import modalities as mods

OPSET = 18
FORMAT = "1"  # of the metadata layout below
METADATA_KEYS = (
    "terratim_format",
    "terratim_version",
    "task",
    "inputs",
    "class_names",
    "class_colors",
    "tile_size",
    "patch_size",
    "opset",
    "standardization",
    "tim",
    "quantization",
    "output",
)
TASKS = ("segmentation", "regression", "classification")
IMAGINATION = "argmax, one decoding pass (deterministic)"


@dataclass
class InputSpec:
    """One input modality of an exported model: band names, training statistics and nodata fill (raw units)."""

    name: str
    bands: list[str]
    mean: list[float]
    std: list[float]
    fill: list[float]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "bands": self.bands, "mean": self.mean, "std": self.std, "fill": self.fill}


@dataclass
class ModelCard:
    """The metadata an exported file carries (see :data:`METADATA_KEYS`)."""

    task: str
    inputs: list[InputSpec]
    tile_size: int
    patch_size: int = 16
    class_names: list[str] = field(default_factory=list)
    class_colors: list[str] = field(default_factory=list)
    opset: int = OPSET
    tim: dict[str, Any] = field(default_factory=dict)
    quantization: str = "none"

    def to_props(self) -> dict[str, str]:
        """ONNX ``metadata_props``: strings, JSON for structured values."""
        import terratim

        return {
            "terratim_format": FORMAT,
            "terratim_version": terratim.__version__,
            "task": self.task,
            "inputs": json.dumps([s.to_json() for s in self.inputs]),
            "class_names": json.dumps(self.class_names),
            "class_colors": json.dumps(self.class_colors),
            "tile_size": str(self.tile_size),
            "patch_size": str(self.patch_size),
            "opset": str(self.opset),
            "standardization": "in the graph: inputs are raw units, (x - mean) / std per band",
            "tim": json.dumps(self.tim),
            "quantization": self.quantization,
            "output": _output_text(self.task),
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], path: Path) -> ModelCard:
        if props.get("terratim_format") != FORMAT:
            raise ValueError(
                f"{path} has no terratim metadata (metadata_props terratim_format={FORMAT!r} missing); "
                "export the model with `terratim export`"
            )
        missing = [k for k in METADATA_KEYS if k not in props]
        if missing:
            raise ValueError(f"{path}: terratim metadata is incomplete, missing {missing}; export it again")
        inputs = [InputSpec(**spec) for spec in json.loads(props["inputs"])]
        return cls(
            props["task"],
            inputs,
            int(props["tile_size"]),
            int(props["patch_size"]),
            json.loads(props["class_names"]),
            json.loads(props["class_colors"]),
            int(props["opset"]),
            json.loads(props["tim"]),
            props["quantization"],
        )

    @property
    def bands(self) -> dict[str, int]:
        return {s.name: len(s.bands) for s in self.inputs}


def _output_text(task: str) -> str:
    return {
        "segmentation": "output: logits (B, classes, tile, tile)",
        "regression": "output: values (B, 1, tile, tile)",
        "classification": "output: logits (B, classes)",
    }[task]


# ------------------------------------------------------------------------------------------------ the graph
def keyed_images(net: Any, named: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Image inputs ``{name: (B, C, H, W)}`` keyed by the network's internal keys, in the given order.

    The backbone's own input checks compare grids and batch sizes through Python sets and bools, which the
    tracer cannot follow; in the exported model :class:`OnnxModel` (and the engine) check inputs against the
    metadata instead, and this function refuses non-image inputs at export.
    """
    from terratim.model.embeddings import PatchEmbedding

    keyed = {}
    for name, value in net.as_input_dict(named).items():
        key = net.inputs[name][0]
        if not isinstance(net.encoder_embeddings[key], PatchEmbedding):
            raise ValueError(f"input {name} is a token modality; export supports image inputs (patch embeddings) only")
        keyed[key] = value
    return keyed


def embed_tokens(
    net: Any, images: Mapping[str, torch.Tensor], token_ids: Mapping[str, torch.Tensor], grid: int
) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
    """``net.embed`` of image inputs followed by token ids ``{key: (B, N)}`` on a ``grid`` x ``grid`` grid:
    (tokens (B, M, D), position + modality terms (B, M, D), spans). Every input holds ``grid * grid`` tokens;
    span bounds are Python ints counted here (under the tracer ``net.embed``'s own bounds are shape tensors,
    updated in place) and the token part is embedded with ``grid`` an int."""
    from terratim.model.terramind import Span

    tokens, emb, _ = net.embed(images)  # (B, M, D) each
    size = grid * grid
    spans = [Span(key, i * size, (i + 1) * size, True) for i, key in enumerate(images)]
    start = len(images) * size
    parts, embs = [tokens], [emb]
    for key, ids in token_ids.items():
        table = net.encoder_embeddings[key]
        x = table.token_emb(ids)  # (B, N, D)
        parts.append(x)
        embs.append((table.positions(grid, grid) + table.mod_emb).expand_as(x))
        spans.append(Span(key, start, start + grid * grid, True))
        start += grid * grid
    return torch.cat(parts, dim=1), torch.cat(embs, dim=1), spans


def token_grid(net: Any, images: Mapping[str, torch.Tensor]) -> int:
    """Tokens per side of the (square) images given to ``net``."""
    return int(next(iter(images.values())).shape[-1]) // net.config.patch_size


@torch.no_grad()
def imagine_argmax(backbone: Any, named: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A TiM backbone's imagined token ids ``{name: (B, N)}`` by one argmax decoding pass per modality.

    Equals the backbone's own imagination with ``temperature=0`` and ``decoding_steps=1`` (any scheme): every
    position is queried at once and takes its most likely token; with ``chain`` each modality is conditioned on
    those imagined before it. Written without the sampler's data-dependent steps so that it traces.
    """
    gen = backbone.generator
    net = gen.network
    keyed = keyed_images(net, {n: v for n, v in named.items() if n in gen.user_inputs})
    grid = token_grid(net, keyed)
    batch = next(iter(keyed.values())).shape[0]
    positions = torch.arange(grid * grid, device=next(iter(keyed.values())).device).expand(batch, -1)  # (B, N)
    imagined: dict[str, torch.Tensor] = {}
    finished: dict[str, torch.Tensor] = {}
    for name, key in gen.outputs.items():
        tokens, emb, _ = embed_tokens(net, keyed, finished if gen.chain else {}, grid)
        context = net.decoder_context(net.run_encoder(tokens + emb, None, all_layers=False)[0], emb)
        queries = net.image_queries(key, positions, grid)  # (B, N, D)
        ids = net.logits(key, net.run_decoder(queries, context)).argmax(dim=-1)  # (B, N)
        finished[key] = imagined[name] = ids
    return imagined


class TracingBackbone(nn.Module):
    """A TerraMind backbone's forward in traceable form: inputs (plus, for TiM, tokens imagined by
    :func:`imagine_argmax`) embedded, encoded and merged per layer, as ``TerraMindBackbone.forward`` does in eval
    mode (and ``TerraMindTiM.forward`` with ``temperature=0``, ``decoding_steps=1``)."""

    backbone: Any

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, named: Mapping[str, torch.Tensor]) -> list[Any]:
        net = self.backbone
        imagined = imagine_argmax(net, named) if getattr(net, "generator", None) is not None else {}
        images = keyed_images(net, {n: v for n, v in named.items() if n not in imagined})
        token_ids = {net.inputs[n][0]: ids for n, ids in imagined.items()}
        tokens, emb, spans = embed_tokens(net, images, token_ids, token_grid(net, images))
        return [net.merge(layer, spans) for layer in net.run_encoder(tokens + emb)]


def without_adapters(task: Any) -> Any:
    """``task`` itself, or for a PEFT fine-tune a copy with the adapters merged into plain backbone weights (the
    graph then has no adapter branches and its backbone traces like any other)."""
    import copy

    from terratim.tasks.peft import is_peft, merge_peft

    backbone = getattr(getattr(task, "model", None), "backbone", None)
    if backbone is None or not is_peft(backbone):
        return task
    merged = copy.deepcopy(task)
    merged.model.backbone = merge_peft(merged.model.backbone)
    return merged


def graph_model(model: Any) -> nn.Module:
    """The task model to trace: its parts around a :class:`TracingBackbone` (another backbone as it is)."""
    from terratim.model.backbone import TerraMindBackbone
    from terratim.tasks.factory import EncoderDecoderModel

    if not isinstance(model.backbone, TerraMindBackbone):
        return model
    return EncoderDecoderModel(
        TracingBackbone(model.backbone), model.necks, model.decoder, model.head, model.pixel_wise, model.padding
    )


def check_tim_exportable(backbone: Any) -> dict[str, Any]:
    """The TiM record of the metadata; refuses what one argmax pass cannot reproduce."""
    gen = getattr(backbone, "generator", None)
    if gen is None:
        return {}
    sequences = [n for n in gen.outputs if mods.resolve(n).kind == "sequence"]
    if sequences:
        raise ValueError(f"TiM modalities {sequences} are sequences; only image TiM modalities can be exported")
    if gen.settings.cfg_scale != 1.0:
        raise ValueError(
            f"the TiM backbone uses classifier-free guidance (tim_cfg_scale={gen.settings.cfg_scale}); "
            "export supports tim_cfg_scale=1 only"
        )
    settings = gen.settings
    return {
        "modalities": list(backbone.tim_modalities),
        "imagined": list(gen.outputs),
        "imagination": IMAGINATION,
        "chain": bool(settings.chain),
        "checkpoint_temperature": settings.temperature,
        "checkpoint_decoding_steps": settings.decoding_steps,
    }


class ExportableTask(nn.Module):
    """Raw inputs (positional, one per modality) -> standardized -> [TiM imagination] -> task model output."""

    def __init__(self, model: nn.Module, inputs: Sequence[InputSpec]) -> None:
        super().__init__()
        self.model = graph_model(model)
        self.names = [s.name for s in inputs]
        for i, spec in enumerate(inputs):
            self.register_buffer(f"mean_{i}", torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer(f"std_{i}", torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1))

    def standardized(self, raw: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{name: (B, C, H, W)}`` with ``(x - mean) / std`` per band."""
        return {
            n: (x - getattr(self, f"mean_{i}")) / getattr(self, f"std_{i}")
            for i, (n, x) in enumerate(zip(self.names, raw))
        }

    def forward(self, *raw: torch.Tensor) -> torch.Tensor:
        out = self.model(self.standardized(raw))
        return getattr(out, "output", out)


# ------------------------------------------------------------------------------------------------ the card
def model_card(task: Any, data_args: Mapping[str, Any], tile_size: int) -> ModelCard:
    """Inputs, statistics, classes and TiM record of a loaded task (see ``adapters.load_task_model``)."""
    from terratim.datamodules.multimodal import modality_stats
    from terratim.viz import class_scheme

    kind = getattr(task, "task", None)
    if kind not in TASKS:
        raise ValueError(f"{type(task).__name__} is not a segmentation, regression or classification task")
    names = list(data_args.get("modalities") or [])
    if not names:
        raise ValueError("the checkpoint and config name no input modalities (data.init_args.modalities)")
    band_names = data_args.get("bands") or {}
    replace = data_args.get("no_data_replace")
    inputs = []
    for name in names:
        mean, std = modality_stats(name, band_names.get(name), data_args.get("means"), data_args.get("stds"))
        bands = list(band_names.get(name) or mods.resolve(name).bands)
        fill = np.full_like(mean, replace) if replace is not None else mean
        inputs.append(InputSpec(name, bands, mean.tolist(), std.tolist(), fill.tolist()))
    card = ModelCard(kind, inputs, tile_size, tim=check_tim_exportable(task.model.backbone))
    if kind != "regression":
        n = task.num_classes
        card.class_names = list(task.class_names or [str(i) for i in range(n)])
        card.class_colors = list(class_scheme(n, card.class_names).colors)  # the task's palette
    return card


def sample_inputs(card: ModelCard, batch: int = 1, seed: int = 0) -> list[torch.Tensor]:
    """Raw-unit inputs around each band's training mean: ``[(batch, C, tile, tile)]`` per modality."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for spec in card.inputs:
        mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
        std = torch.tensor(spec.std).view(1, -1, 1, 1)
        shape = (batch, len(spec.bands), card.tile_size, card.tile_size)
        out.append(mean + std * torch.randn(shape, generator=generator))
    return out


# ------------------------------------------------------------------------------------------------ export
def export_task(
    task: Any,
    data_args: Mapping[str, Any],
    out: Path,
    tile_size: int = 224,
    opset: int = OPSET,
    quantize: str | None = None,
) -> dict[str, Any]:
    """Write ``task`` (a loaded fine-tuned task) to ``out`` as ONNX with its metadata; returns a check report.

    The report compares onnxruntime with PyTorch on random raw inputs (batch 2): ``max_abs_diff`` of the
    outputs and, with ``quantize="int8"`` (onnxruntime dynamic quantization of the weights), also the fp32
    export against the int8 one (``int8_max_abs_diff``, ``int8_class_agreement`` for class outputs).
    """
    if tile_size % 16:
        raise ValueError(f"--tile must be a multiple of 16 (the patch size), got {tile_size}")
    if quantize not in (None, "int8"):
        raise ValueError(f"--quantize must be int8, got {quantize!r}")
    task = without_adapters(task)
    card = model_card(task, data_args, tile_size)
    wrapper = ExportableTask(task.model, card.inputs).eval()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        _trace_to_onnx(wrapper, card, fp32, opset)
        check = sample_inputs(card, batch=2, seed=1)
        with torch.no_grad():
            expected = wrapper(*check).float().numpy()
        fp32_out = run_session(_session(fp32), card, check)
        report: dict[str, Any] = {"max_abs_diff": float(np.abs(fp32_out - expected).max())}
        source = fp32
        if quantize == "int8":
            source = Path(tmp) / "int8.onnx"
            _quantize_int8(fp32, source)
            card.quantization = "int8 dynamic (onnxruntime quantize_dynamic, QInt8 weights)"
            int8_out = run_session(_session(source), card, check)
            report.update(_compare(int8_out, fp32_out, card.task, prefix="int8_"))
        write_with_metadata(source, out, card)
    report.update(opset=opset, tile_size=tile_size, task=card.task, tim=bool(card.tim))
    return report


def _trace_to_onnx(wrapper: ExportableTask, card: ModelCard, path: Path, opset: int) -> None:
    names = [s.name for s in card.inputs]
    dynamic = {n: {0: "batch"} for n in [*names, "output"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the model's input checks (constant here)
        torch.onnx.export(
            wrapper,
            tuple(sample_inputs(card)),
            str(path),
            input_names=names,
            output_names=["output"],
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )


def _quantize_int8(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # its advice to pre-process the model (a root-logger warning per call)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)


def _compare(got: np.ndarray, reference: np.ndarray, task: str, prefix: str = "") -> dict[str, float]:
    report = {f"{prefix}max_abs_diff": float(np.abs(got - reference).max())}
    if task != "regression":
        report[f"{prefix}class_agreement"] = float((got.argmax(axis=1) == reference.argmax(axis=1)).mean())
    return report


def write_with_metadata(source: Path, out: Path, card: ModelCard) -> None:
    """Copy ``source`` to ``out`` with the card in ``metadata_props`` (replacing any terratim entries)."""
    import onnx

    model = onnx.load(str(source))
    props = card.to_props()
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "terratim"
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))


# ------------------------------------------------------------------------------------------------ runtime
def _session(path: Path, device: str | torch.device = "cpu", threads: int | None = None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError("ONNX inference needs onnxruntime: pip install onnxruntime") from err
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), options, providers=providers)


def read_card(path: str | Path) -> ModelCard:
    """The terratim metadata of an exported file (ValueError when it has none)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises its own DecodeError
        raise ValueError(f"{path} is not an ONNX model ({err})") from err
    return ModelCard.from_props({p.key: p.value for p in model.metadata_props}, path)


def run_session(session: Any, card: ModelCard, inputs: Sequence[torch.Tensor | np.ndarray]) -> np.ndarray:
    """One forward pass: raw inputs in the card's modality order -> the output array."""
    feeds = {s.name: np.ascontiguousarray(np.asarray(x, dtype=np.float32)) for s, x in zip(card.inputs, inputs)}
    return session.run(["output"], feeds)[0]


class OnnxModel:
    """An exported file with its card: ``model({modality: (B, C, tile, tile)})`` -> output as a torch tensor."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", threads: int | None = None) -> None:
        self.path = Path(path)
        self.card = read_card(self.path)
        self.session = _session(self.path, device, threads)

    def check_inputs(self, given: Mapping[str, Any]) -> None:
        """Modalities and band counts against the card; one-line ValueError naming what was expected."""
        wanted = self.card.bands
        names = {_canonical(n): n for n in given}
        if set(names) != set(wanted):
            raise ValueError(
                f"{self.path.name} takes {sorted(wanted)} (its metadata says), but got {sorted(given)}; "
                "pass one --input MODALITY=PATH per modality"
            )
        for name, original in names.items():
            shape = getattr(given[original], "shape", None)
            if shape is not None and (len(shape) != 4 or shape[1] != wanted[name]):
                bands = ", ".join(self.card.inputs[list(wanted).index(name)].bands)
                raise ValueError(
                    f"{name}: {self.path.name} expects (B, {wanted[name]}, H, W) with bands {bands}; "
                    f"got shape {tuple(shape)}"
                )

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        self.check_inputs(batch)
        named = {_canonical(n): x for n, x in batch.items()}
        tile = self.card.tile_size
        first = next(iter(named.values()))
        if tuple(first.shape[-2:]) != (tile, tile):
            raise ValueError(
                f"{self.path.name} was exported for {tile} x {tile} tiles; got "
                f"{tuple(first.shape[-2:])} (use --chip {tile})"
            )
        arrays = [named[s.name].detach().to("cpu", torch.float32).numpy() for s in self.card.inputs]
        return torch.from_numpy(run_session(self.session, self.card, arrays))


def _canonical(name: str) -> str:
    """The registry name of a modality (aliases resolved); an unknown name as given."""
    try:
        return mods.resolve(name).name
    except KeyError:
        return name


def onnx_predictor(
    path: str | Path,
    out: Path,
    device: str | torch.device = "cpu",
    confidence: bool = False,
    cog: bool = False,
    threads: int | None = None,
) -> Any:
    """A :class:`~terratim.inference.adapters.Predictor` running an exported segmentation or regression model."""
    from terratim.inference.adapters import Predictor
    from terratim.inference.fingerprint import file_record
    from terratim.inference.heads import Head

    model = OnnxModel(path, device, threads)
    card = model.card
    if card.task == "segmentation":
        head = Head(
            out, len(card.class_names), "classes", tuple(card.class_names), tuple(card.class_colors), confidence, cog
        )
    elif card.task == "regression":
        head = Head(out, 1, names=("value",), cog=cog)
    else:
        raise ValueError(
            f"{model.path.name} is a {card.task} model: it does not predict pixels; tiled inference "
            "needs a segmentation or regression model"
        )
    fill = {s.name: np.asarray(s.fill, np.float32) for s in card.inputs}
    fingerprint = {"onnx": file_record(model.path, whole=True), "task": card.task}
    return Predictor(model, [head], card.bands, fill, fingerprint)
