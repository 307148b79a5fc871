"""Checkpoint files: Hugging Face hub downloads, local ``.pt`` / ``.safetensors`` files, and one strict loader.

Official TerraMind files (``TerraMind_v1_{size}.pt`` in the ``ibm-esa-geospatial/TerraMind-1.0-{size}`` hub
repositories) are a plain ``torch.save`` of a flat state dict. They are read with ``weights_only=True``. Our module
names equal the official keys, so "conversion" is limited to one place: :func:`convert_state_dict` drops the
constant-zero LayerNorm bias buffers (verifying they are zero), adds a prefix where a model nests the network, and
keeps only the keys the model declares it takes from the file. :func:`terramind_state_dict` and
:func:`load_weights` load such a file into the TerraMind networks (backbone, generation, TiM).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from terratim import modalities as mods

if TYPE_CHECKING:
    from terratim.model.config import CheckpointConfig, TerraMindConfig
    from terratim.model.terramind import TerraMind

# Official Hugging Face hub repositories and file names of the TerraMind v1 weights.
TERRAMIND_FILES = {
    size: (f"ibm-esa-geospatial/TerraMind-1.0-{size}", f"TerraMind_v1_{size}.pt")
    for size in ("tiny", "small", "base", "large")
}


class CheckpointError(RuntimeError):
    """A checkpoint does not fit the model; the message lists what is missing, unexpected or mis-shaped."""


class HubDownloadError(CheckpointError):
    """Official weights could not be fetched from the Hugging Face hub (offline, gated, missing).

    Attributes:
        repo_id: the hub repository.
        filename: the file in it.
        weights: what the file holds: ``"model"`` (TerraMind), ``"tokenizer"`` (a modality tokenizer, see
            ``modality``) or ``"vocabulary"`` (the coordinates text tokenizer); the CLI turns it into the option
            that takes a local file instead.
        modality: the tokenizer's modality, or None.
    """

    def __init__(self, message: str, repo_id: str, filename: str, weights: str, modality: str | None) -> None:
        super().__init__(message)
        self.repo_id, self.filename, self.weights, self.modality = repo_id, filename, weights, modality


def _hub_file_role(repo_id: str, filename: str) -> tuple[str, str | None, str]:
    """What ``filename`` holds (``model`` / ``tokenizer`` / ``vocabulary``), its modality and the Python call
    that takes a local copy of it instead."""
    from terratim.modalities import MODALITIES

    for modality in MODALITIES.values():
        if (modality.tokenizer_repo, modality.tokenizer_file) != (repo_id, filename):
            continue
        if modality.kind == "sequence":
            call = f"terratim.tokenizers.coords.CoordsTokenizer.from_file('/path/to/{filename}')"
            return "vocabulary", modality.name, call
        model = f"terramind_v1_tokenizer_{modality.name.lower()}"
        return "tokenizer", modality.name, f"terratim.build('{model}', ckpt_path='/path/to/{filename}')"
    return "model", None, f"ckpt_path='/path/to/{filename}'"


def _first_line(err: BaseException) -> str:
    """``Type: first line of the message`` (hub errors carry long multi-line explanations)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _load_failure(err: BaseException) -> str:
    """One line on why ``torch.load(weights_only=True)`` failed, without torch's advice to unpickle anyway."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:  # torch's explanation wraps the one line that names the offending object or opcode
        detail = text.split(marker, 1)[1].split("Check the documentation", 1)[0]
        return f"weights_only load: {' '.join(detail.split())}"
    return _first_line(err)


def hub_file(repo_id: str, filename: str) -> Path:
    """Path of ``filename`` from a Hugging Face hub repo, downloaded into (or found in) the hub cache.

    Raises:
        HubDownloadError: when the file is neither cached nor downloadable, saying how to pass a local file.
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("pretrained weights need huggingface_hub: pip install huggingface_hub") from err
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as err:  # the hub raises many types: offline, gated, not found, HTTP
        weights, modality, python_call = _hub_file_role(repo_id, filename)
        raise HubDownloadError(
            f"could not get {filename} from the Hugging Face hub repo {repo_id} ({_first_line(err)}). "
            f"Download it where there is network (https://huggingface.co/{repo_id}) and pass the local file: "
            f"in Python {python_call}; or fill the hub cache and set HF_HUB_OFFLINE=1.",
            repo_id,
            filename,
            weights,
            modality,
        ) from err


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a flat state dict from an official-layout ``.pt`` (``weights_only=True``) or a ``.safetensors`` file.

    A ``.pt`` holding ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped (Lightning / generic
    checkpoints); a Lightning checkpoint's ``model.`` prefix is kept, callers choose the prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own SafetensorError for malformed headers
            raise CheckpointError(f"{path} is not a readable safetensors file ({_first_line(err)})") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({_load_failure(err)})") from err
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat state dict of tensors")
    return dict(state)


def read_config(path: str | os.PathLike) -> dict | None:
    """The JSON config saved next to a converted checkpoint (``X.safetensors`` -> ``X.json``), if any."""
    config_path = Path(path).with_suffix(".json")
    return json.loads(config_path.read_text()) if config_path.is_file() else None


def is_zero_norm_bias(key: str, tensor: torch.Tensor) -> bool:
    """Official files store the bias-free LayerNorms' constant zero ``bias`` buffers."""
    return key.endswith(".bias") and "norm" in key.rsplit(".", 2)[-2] and not bool(tensor.any())


@dataclass
class LoadReport:
    """What a strict load found. Empty lists mean a perfect fit."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 12) -> str:
        parts = []
        for title, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape mismatches", self.mismatched),
        ):
            if keys:
                shown = "\n    ".join(keys[:limit])
                more = f"\n    ... and {len(keys) - limit} more" if len(keys) > limit else ""
                parts.append(f"  {title} ({len(keys)}):\n    {shown}{more}")
        return "\n".join(parts) if parts else "  all keys matched"


def convert_state_dict(
    file_state: dict[str, torch.Tensor],
    model: nn.Module,
    prefix: str = "",
    keep: Callable[[str], bool] | None = None,
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Map an official-layout state dict onto ``model``'s names.

    Args:
        file_state: tensors as stored in the file (official key names).
        model: the module to be loaded.
        prefix: prepended to every file key (e.g. ``"generator."`` for a nested network).
        keep: which file keys this model takes (others are reported as ``ignored``, e.g. the decoder for a
            backbone, or embeddings of modalities the model was not built with). Default: keys the model has.

    Returns:
        The renamed state dict and a report of missing / unexpected / mis-shaped keys.
    """
    model_state = model.state_dict()
    keep = keep or (lambda key: prefix + key in model_state)
    converted: dict[str, torch.Tensor] = {}
    report = LoadReport()
    for key, tensor in file_state.items():
        name = prefix + key
        weight_name = name[: -len("bias")] + "weight"
        if (
            name not in model_state
            and key.endswith(".bias")
            and weight_name in model_state
            and keep(key[: -len("bias")] + "weight")
        ):
            if not is_zero_norm_bias(key, tensor):
                report.unexpected.append(f"{key} (the model's layer has no bias, the file's is non-zero)")
            continue  # bias-free LayerNorm: the zero buffer carries no information
        if not keep(key):
            report.ignored.append(key)
            continue
        if name not in model_state:
            report.unexpected.append(key)
        elif model_state[name].shape != tensor.shape:
            report.mismatched.append(f"{key}: file {tuple(tensor.shape)} vs model {tuple(model_state[name].shape)}")
        else:
            converted[name] = tensor
    return converted, report


def load_into(
    model: nn.Module,
    converted: dict[str, torch.Tensor],
    report: LoadReport,
    source: str,
    expected_missing: Iterable[str] = (),
    strict: bool = True,
) -> LoadReport:
    """Copy converted tensors into ``model``; with ``strict`` raise on anything not accounted for.

    ``expected_missing`` names model keys that legitimately do not come from this file (for instance
    embeddings of new modalities, or position tables rebuilt for another image size); every other model key
    must be supplied.
    """
    allowed = set(expected_missing)
    supplied = set(converted)
    report.missing.extend(k for k in model.state_dict() if k not in supplied and k not in allowed)
    if strict and not report.ok:
        raise CheckpointError(f"checkpoint {source} does not fit {type(model).__name__}:\n{report.describe()}")
    with torch.no_grad():
        model.load_state_dict(converted, strict=False)
    return report


def save_safetensors(
    state: dict[str, torch.Tensor], path: str | os.PathLike, config: CheckpointConfig | dict | None = None
) -> None:
    """Write a state dict as safetensors (tied tensors stored once per name) and an optional JSON config
    (a :class:`~terratim.model.config.CheckpointConfig` for TerraMind files, a plain dict for tokenizers)."""
    from safetensors.torch import save_file

    path = Path(path)
    unique = {k: v.detach().contiguous().clone() for k, v in state.items()}
    save_file(unique, str(path))
    if config is not None:
        as_dict = config if isinstance(config, dict) else config.to_dict()
        path.with_suffix(".json").write_text(json.dumps(as_dict, indent=2))


# ------------------------------------------------------------------------------------- TerraMind files
def checkpoint_config(path: str | os.PathLike) -> CheckpointConfig | None:
    """The :class:`~terratim.model.config.CheckpointConfig` saved next to a TerraMind weights file (any of the
    shapes this project has written), or None when there is no ``.json`` (an official ``.pt``)."""
    from terratim.model.config import CheckpointConfig

    config_path = Path(path).with_suffix(".json")
    if not config_path.is_file():
        return None
    try:
        data = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_path} is not valid JSON ({err})") from err
    return CheckpointConfig.from_dict(data, source=str(config_path))


def terramind_architecture(size: str | TerraMindConfig | None, ckpt_path: str | os.PathLike | None) -> TerraMindConfig:
    """The architecture to build: from the JSON next to ``ckpt_path`` when there is one, else from ``size``.

    When both are given they must describe the same network (``img_size`` aside): otherwise a
    :class:`CheckpointError` names both.
    """
    from terratim.model.config import size_config

    saved = checkpoint_config(ckpt_path) if ckpt_path is not None else None
    if saved is None:
        if size is None:
            raise CheckpointError(
                f"{ckpt_path} has no {Path(str(ckpt_path)).with_suffix('.json').name} next to it, so its architecture "
                "is unknown: build it by size name (terratim.build('terramind_v1_<size>', ckpt_path=...)) or write "
                "the JSON with `terratim convert`"
            )
        return size_config(size)
    if size is not None and not size_config(size).same_network(saved.architecture):
        named = size if isinstance(size, str) else "the requested architecture"
        raise CheckpointError(
            f"{Path(str(ckpt_path)).with_suffix('.json')} describes a TerraMind with "
            f"{saved.architecture.describe()}, but {named!s} is {size_config(size).describe()}; use the builder "
            "of its size, or build it from the file alone (terratim.registry.build_from_file)"
        )
    return saved.architecture


def terramind_state_dict(
    size: str | TerraMindConfig | None, pretrained: bool, ckpt_path: str | None
) -> tuple[dict, str] | None:
    """The official-layout state dict to load, from ``ckpt_path`` or the hub; None for random init.

    A ``ckpt_path`` with a JSON config must agree with ``size`` (see :func:`terramind_architecture`).
    """
    if ckpt_path is not None:
        terramind_architecture(size, ckpt_path)
        return read_state_dict(ckpt_path), str(ckpt_path)
    if pretrained:
        if not isinstance(size, str) or size not in TERRAMIND_FILES:
            raise ValueError(f"no official weights for {size!r}; sizes with weights: {sorted(TERRAMIND_FILES)}")
        repo, filename = TERRAMIND_FILES[size]
        path = hub_file(repo, filename)
        return read_state_dict(path), f"{repo}/{filename}"
    return None


DECODER_PARTS = ("decoder.", "decoder_norm.", "decoder_proj_context.", "mask_token")


def load_weights(
    root: nn.Module, network: TerraMind, state: dict, source: str, prefix: str = "", strict: bool = True
) -> None:
    """Load an official-layout file into ``network`` (found at ``prefix`` inside ``root``), strictly.

    Taken from the file: the encoder (``encoder.*``, ``encoder_norm.*``), the encoder embeddings of the
    network's keys and, for networks with a decoder, the decoder and its target embeddings. The rest of the file
    (other modalities, or the decoder for a backbone) is ignored. Position tables are rebuilt (not loaded) when
    the network was constructed for another image size; embeddings of new modalities start untrained. Every
    other parameter of ``network`` must come from the file; parameters of ``root`` outside ``network`` (heads,
    tokenizers) are not this file's business.
    """
    own = set(network.encoder_embeddings)
    targets = set(network.decoder_embeddings) if network.has_decoder else set()

    def keep(key: str) -> bool:
        if key.startswith("encoder_embeddings."):
            return key.split(".")[1] in own
        if key.startswith("decoder_embeddings."):
            return key.split(".")[1] in targets
        if key.startswith(DECODER_PARTS):
            return network.has_decoder
        return key.startswith(("encoder.", "encoder_norm."))

    converted, report = convert_state_dict(state, root, prefix=prefix, keep=keep)
    net_keys = {prefix + k for k in network.state_dict()}
    expected_missing = {k for k in root.state_dict() if k not in net_keys}
    expected_missing |= {
        prefix + k for k in network.state_dict() if k.startswith(network.nested_prefixes) or k == "missing_mod_token"
    }
    for key, embedding in network.encoder_embeddings.items():
        if key not in mods.KEY_OWNERS:  # a new modality
            expected_missing |= {f"{prefix}encoder_embeddings.{key}.{n}" for n in embedding.state_dict()}
    rebuilt = [m for m in report.mismatched if m.split(":")[0].endswith("pos_emb")]
    if rebuilt and network.config.img_size != 224:
        report.mismatched = [m for m in report.mismatched if m not in rebuilt]
        expected_missing |= {prefix + m.split(":")[0] for m in rebuilt}
    load_into(root, converted, report, source, expected_missing=expected_missing, strict=strict)
