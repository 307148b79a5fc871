"""The whole speed table in one run: same-run ratios against TerraTorch 1.2.13, bf16 and ONNX sections.

    python benchmarks/run_all.py                                  # CPU, fp32, terratim only
    python benchmarks/run_all.py --reference-site DIR             # + TerraTorch 1.2.13 in this process
    python benchmarks/run_all.py --device cuda --reference-site DIR
    python benchmarks/run_all.py --quick                          # a minute: checks that every section runs

Sections (``--sections`` picks some): backbone tiny/base at batch 1/8/64, TiM (imagines LULC), generation
(S2L2A -> LULC tokens), tokenizer decode (LULC ViT decoder, S2L2A diffusion decoder), scene inference (the
tiling engine with a tiny segmentation task), bf16 against fp32 (autocast), and ONNX fp32 / int8 against PyTorch
eager (a tiny segmentation task exported with terratim.deploy.onnx; onnxruntime on the CPU).

Inputs are S2L2A + S1GRD at 224 x 224, random weights, eval mode, no_grad. With the reference
(``pip install --no-deps --target DIR terratorch==1.2.13 timm einops diffusers``; only its TerraMind model code
is imported, see reference.py) each case runs terratim and the reference in alternation, ``--repeats`` rounds
after ``--warmup``, and the table gives each side's median (min-max) and the ratio of the medians (reference /
terratim: above 1 means terratim is faster). Cases the reference has no counterpart for (its tokenizers are
stubs here, it has no scene engine) show only terratim's time. The CPU model, thread count and versions head the
output. The script asserts nothing; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import cpu_model, sync

import terratim

INPUTS = ("S2L2A", "S1GRD")
SECTIONS = ("backbone", "tim", "generate", "tokenizer", "scene", "bf16", "onnx")


@dataclass(frozen=True)
class Plan:
    """What the run covers: sizes, batches, image side, repeats (full or ``--quick``)."""

    sizes: tuple[str, ...] = ("tiny", "base")
    backbone_batches: tuple[int, ...] = (1, 8, 64)
    tim_batches: tuple[int, ...] = (8,)
    generate_batches: tuple[int, ...] = (1, 8)
    decode_batch: int = 8
    timesteps: int = 10
    scene_side: int = 1024
    onnx_tile: int = 224
    onnx_batch: int = 8
    repeats: int = 5
    warmup: int = 2


QUICK = Plan(sizes=("tiny",), backbone_batches=(1, 2), tim_batches=(1,), generate_batches=(1,), decode_batch=1,
             timesteps=1, scene_side=256, onnx_tile=64, onnx_batch=2, repeats=1, warmup=0)


# ------------------------------------------------------------------------------------------------ timing
def alternate(fns: Mapping[str, Callable[[], object]], device: str, repeats: int,
              warmup: int) -> dict[str, list[float]]:
    """Seconds of each fn over ``repeats`` rounds, every fn once per round in turn (same-run comparison)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.no_grad():
        for round_index in range(warmup + repeats):
            for name, fn in fns.items():
                sync(device)
                start = time.perf_counter()
                fn()
                sync(device)
                if round_index >= warmup:
                    times[name].append(time.perf_counter() - start)
    return times


def spread(seconds: list[float] | None) -> str:
    """'median (min-max)' in seconds, or '-'."""
    if not seconds:
        return "-"
    return f"{statistics.median(seconds):.4g} ({min(seconds):.3g}-{max(seconds):.3g})"


def ratio(numerator: list[float] | None, denominator: list[float] | None) -> str:
    """Ratio of the medians, then the median of the per-round ratios (rounds pair the two sides in time, so
    load that drifts between rounds on a shared machine cancels out of the second figure)."""
    if not numerator or not denominator:
        return "-"
    text = f"{statistics.median(numerator) / statistics.median(denominator):.2f}x"
    if len(numerator) == len(denominator):
        text += f" ({statistics.median(n / d for n, d in zip(numerator, denominator, strict=True)):.2f}x)"
    return text


class Table:
    """A markdown table printed row by row (rows appear as they are measured)."""

    def __init__(self, title: str, columns: list[str]) -> None:
        print(f"\n### {title}\n")
        print("| " + " | ".join(columns) + " |")
        print("|" + "|".join("---" for _ in columns) + "|")

    def row(self, *cells: Any) -> None:
        print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


# ------------------------------------------------------------------------------------------------ machine
def header(device: str, reference_version: str | None) -> None:
    from terratim.precision import native_bf16

    print(f"# terratim {terratim.__version__} speed table")
    print(f"CPU: {cpu_model()}; {torch.get_num_threads()} threads; torch {torch.__version__}")
    if device.startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name()}")
    print(f"device {device}; native bf16: {native_bf16(device)}")
    print(f"reference: TerraTorch {reference_version} (TerraMind model code only), same process"
          if reference_version else "reference: none (pass --reference-site DIR for same-run ratios)")


def load_register(site: str | None) -> tuple[Any, str | None]:
    """The reference's TerraMind register module and its version, or (None, None) without a reference."""
    if not (site or os.environ.get("TERRATIM_REFERENCE_SITE")):
        return None, None
    from reference import installed_version, load_reference, resolve_site

    root = resolve_site(site)
    return load_reference(root), installed_version(root)


def reference_model(register: Any, name: str, device: str, **kwargs: Any) -> torch.nn.Module | None:
    if register is None:
        return None
    from reference import build_reference

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not pre-trained": random weights are what we time
        model, _ = build_reference(register, name, None, **kwargs)
    return model.to(device).eval()


def make_inputs(names: tuple[str, ...], batch: int, side: int, device: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {m: torch.randn(batch, terratim.resolve(m).num_bands, side, side, generator=generator).to(device)
            for m in names}


def compare_row(table: Table, case: str, ours: Callable[[], object], reference: Callable[[], object] | None,
                device: str, plan: Plan) -> None:
    fns = {"terratim": ours} if reference is None else {"terratim": ours, "reference": reference}
    times = alternate(fns, device, plan.repeats, plan.warmup)
    table.row(case, spread(times["terratim"]), spread(times.get("reference")), ratio(times.get("reference"),
                                                                                      times["terratim"]))


SAME_RUN = ["case", "terratim s", "TerraTorch 1.2.13 s", "ratio (reference / terratim; per round)"]


# ------------------------------------------------------------------------------------------------ sections
def backbone_section(device: str, plan: Plan, register: Any) -> None:
    table = Table("Backbone (S2L2A + S1GRD, 224 x 224, fp32)", SAME_RUN)
    for size in plan.sizes:
        ours = terratim.build(f"terramind_v1_{size}", modalities=list(INPUTS)).eval().to(device)
        reference = reference_model(register, f"terramind_v1_{size}", device, modalities=list(INPUTS),
                                    merge_method="mean")
        for batch in plan.backbone_batches:
            x = make_inputs(INPUTS, batch, 224, device)
            ref = (lambda r=reference, x=x: r(dict(x))) if reference is not None else None
            compare_row(table, f"{size} b{batch}", lambda m=ours, x=x: m(x), ref, device, plan)
        del ours, reference


def tim_section(device: str, plan: Plan, register: Any) -> None:
    table = Table("TiM (imagines LULC; default sampling; fp32)", SAME_RUN)
    for size in plan.sizes:
        ours = terratim.build(f"terramind_v1_{size}_tim", modalities=list(INPUTS),
                              tim_modalities=["LULC"]).eval().to(device)
        reference = reference_model(register, f"terramind_v1_{size}_tim", device, modalities=list(INPUTS),
                                    tim_modalities=["LULC"])
        for batch in plan.tim_batches:
            x = make_inputs(INPUTS, batch, 224, device)
            generator = torch.Generator(device=device).manual_seed(0)
            ref = (lambda r=reference, x=x: r(dict(x))) if reference is not None else None
            compare_row(table, f"{size} b{batch}", lambda m=ours, x=x, g=generator: m(x, g), ref, device, plan)
        del ours, reference


def generate_section(device: str, plan: Plan, register: Any) -> None:
    table = Table("Generation (S2L2A -> LULC tokens, one decoding step, fp32)", SAME_RUN)
    for size in plan.sizes:
        name = f"terramind_v1_{size}_generate"
        ours = terratim.build(name, modalities=["S2L2A"], output_modalities=["LULC"],
                              build_tokenizers_for_outputs=False).eval().to(device)
        reference = reference_model(register, name, device, modalities=["S2L2A"], output_modalities=["LULC"])
        for batch in plan.generate_batches:
            x = make_inputs(("S2L2A",), batch, 224, device)
            generator = torch.Generator(device=device).manual_seed(0)
            ref = (lambda r=reference, x=x: r(dict(x))) if reference is not None else None
            ours_fn = lambda m=ours, x=x, g=generator: m.generate_tokens(x, g)  # noqa: E731
            compare_row(table, f"{size} b{batch}", ours_fn, ref, device, plan)
        del ours, reference


def tokenizer_section(device: str, plan: Plan) -> None:
    table = Table(f"Tokenizer decode (random weights; diffusion {plan.timesteps} steps; terratim only: the "
                  "reference's tokenizers are not loaded)", ["case", "terratim s", "per image s"])
    for modality, batch in (("LULC", plan.decode_batch), ("S2L2A", 1)):
        terratim.list_models()  # registers the tokenizer builders (terratim.build alone does not, yet)
        tokenizer = terratim.build(f"terramind_v1_tokenizer_{modality.lower()}").eval().to(device)
        image = _tokenizer_input(modality, batch, device)
        with torch.no_grad():
            _, ids = tokenizer.encode(image)
        times = alternate({"decode": lambda t=tokenizer, i=ids: t.decode_tokens(i, timesteps=plan.timesteps)},
                          device, plan.repeats, plan.warmup)["decode"]
        table.row(f"{modality} b{batch}", spread(times), f"{statistics.median(times) / batch:.4g}")
        del tokenizer


def scene_section(device: str, plan: Plan) -> None:
    """The tiling engine over a synthetic S1GRD scene with a tiny segmentation task (PyTorch)."""
    from terratim.inference.adapters import task_predictor
    from terratim.inference.engine import TilingConfig, infer_scene

    table = Table("Scene inference (tiny segmentation task, S1GRD, chip 224, overlap 32, batch 16; terratim "
                  "only)", ["scene", "terratim s", "megapixels / s"])
    task = _segmentation_task("terramind_v1_tiny").to(device)
    with tempfile.TemporaryDirectory() as tmp:
        scene = _write_scene(Path(tmp) / "scene.tif", plan.scene_side)
        predictor = task_predictor(task, {"modalities": ["S1GRD"], "no_data_replace": 0}, Path(tmp) / "p.tif",
                                   device)
        times = []
        for _ in range(max(plan.repeats // 2, 1)):
            start = time.perf_counter()
            infer_scene(predictor.predict, {"S1GRD": scene}, predictor.heads, TilingConfig(), bands=predictor.bands,
                        device=device, fill=predictor.fill, overwrite=True)
            times.append(time.perf_counter() - start)
    side = plan.scene_side
    table.row(f"{side} x {side}", spread(times), f"{side * side / 1e6 / statistics.median(times):.3g}")


def bf16_section(device: str, plan: Plan) -> None:
    """fp32 against bf16 autocast, alternating; the relative difference of the last layer."""
    from terratim.precision import autocast

    table = Table("bf16 (autocast) against fp32, terratim",
                  ["case", "fp32 s", "bf16 s", "speed-up (fp32 / bf16; per round)", "max rel. diff, last layer"])
    for size in plan.sizes:
        for kind in ("backbone", "TiM"):
            name = f"terramind_v1_{size}" + ("_tim" if kind == "TiM" else "")
            extra = {"tim_modalities": ["LULC"], "tim_temperature": 0.0} if kind == "TiM" else {}
            model = terratim.build(name, modalities=list(INPUTS), **extra).eval().to(device)
            batch = plan.tim_batches[0] if kind == "TiM" else plan.backbone_batches[1]
            x = make_inputs(INPUTS, batch, 224, device)

            def bf16(m: torch.nn.Module = model, x: dict = x) -> Any:
                with autocast("bf16", device):
                    return m(x)

            times = alternate({"fp32": lambda m=model, x=x: m(x), "bf16": bf16}, device, plan.repeats, plan.warmup)
            with torch.no_grad():
                a, b = model(x)[-1].double(), bf16()[-1].double()
            diff = float((a - b).abs().max() / a.abs().max())
            table.row(f"{kind} {size} b{batch}", spread(times["fp32"]), spread(times["bf16"]),
                      ratio(times["fp32"], times["bf16"]), f"{diff:.2e}")
            del model


def onnx_section(device: str, plan: Plan) -> None:
    """A tiny segmentation task: PyTorch eager against onnxruntime fp32 and int8 (CPU)."""
    from terratim.deploy.onnx import OnnxModel, export_task, sample_inputs

    if device != "cpu":
        print("\n### ONNX\n\nskipped: the ONNX comparison runs on the CPU (run without --device)")
        return
    table = Table(f"ONNX (tiny segmentation task, S1GRD, tile {plan.onnx_tile}, batch {plan.onnx_batch}; "
                  f"onnxruntime CPU, {torch.get_num_threads()} threads)",
                  ["case", "eager s", "onnxruntime s", "speed-up (eager / onnx; per round)", "max abs diff",
                   "class agreement"])
    for backbone in ("terramind_v1_tiny", "terramind_v1_tiny_tim"):
        task = _segmentation_task(backbone)
        with tempfile.TemporaryDirectory() as tmp:
            models = {}
            for quantize in (None, "int8"):
                path = Path(tmp) / f"{quantize or 'fp32'}.onnx"
                export_task(task, {"modalities": ["S1GRD"], "no_data_replace": 0}, path, plan.onnx_tile,
                            quantize=quantize)
                models[quantize or "fp32"] = OnnxModel(path, threads=torch.get_num_threads())
            card = models["fp32"].card
            raw = sample_inputs(card, plan.onnx_batch, seed=3)[0]
            spec = card.inputs[0]
            standardized = {"S1GRD": (raw - torch.tensor(spec.mean).view(1, -1, 1, 1))
                            / torch.tensor(spec.std).view(1, -1, 1, 1)}
            fns = {"eager": lambda: task(standardized)}
            fns.update({k: (lambda m=m: m({"S1GRD": raw})) for k, m in models.items()})
            times = alternate(fns, device, plan.repeats, plan.warmup)
            with torch.no_grad():
                eager = task(standardized)
            for kind, model in models.items():
                out = model({"S1GRD": raw})
                agreement = float((out.argmax(1) == eager.argmax(1)).float().mean())
                table.row(f"{backbone.removeprefix('terramind_v1_')} {kind}", spread(times["eager"]),
                          spread(times[kind]), ratio(times["eager"], times[kind]),
                          f"{float((out - eager).abs().max()):.2e}", f"{agreement:.2%}")


def _tokenizer_input(modality: str, batch: int, device: str) -> torch.Tensor:
    """A 224 x 224 input the tokenizer encodes: class ids for a categorical modality, else standardized noise."""
    generator = torch.Generator().manual_seed(0)
    if terratim.resolve(modality).is_categorical:
        classes = len(terratim.resolve(modality).classes)
        return torch.randint(0, classes, (batch, 224, 224), generator=generator).to(device)
    return make_inputs((modality,), batch, 224, device)[modality]


def _segmentation_task(backbone: str) -> Any:
    from terratim.tasks import SemanticSegmentationTask

    model_args = {"backbone": backbone, "backbone_pretrained": False, "backbone_modalities": ["S1GRD"],
                  "necks": [{"name": "SelectIndices", "indices": [-1]}, {"name": "ReshapeTokensToImage"}],
                  "decoder": "FCNDecoder", "decoder_channels": 64, "num_classes": 10}
    if backbone.endswith("_tim"):
        model_args.update(backbone_tim_modalities=["LULC"], backbone_tim_temperature=0.0)
    torch.manual_seed(0)
    return SemanticSegmentationTask(model_args).eval()


def _write_scene(path: Path, side: int) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    rows = np.arange(side, dtype=np.float32)[:, None]
    base = np.sin(rows / 97.0) * np.cos(np.arange(side, dtype=np.float32) / 61.0) * 5 - 12
    data = np.stack([base, base - 7]).astype(np.float32)  # (2, side, side), VV and VH in dB
    profile = {"driver": "GTiff", "count": 2, "height": side, "width": side, "dtype": "float32",
               "crs": "EPSG:32631", "transform": from_origin(600000, 5000000, 10, 10), "tiled": True,
               "blockxsize": 256, "blockysize": 256}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


# ------------------------------------------------------------------------------------------------ main
def run_sections(names: list[str], device: str, plan: Plan, register: Any) -> Iterator[tuple[str, float]]:
    """Run each section; yields (name, seconds it took)."""
    runners: dict[str, Callable[[], None]] = {
        "backbone": lambda: backbone_section(device, plan, register),
        "tim": lambda: tim_section(device, plan, register),
        "generate": lambda: generate_section(device, plan, register),
        "tokenizer": lambda: tokenizer_section(device, plan),
        "scene": lambda: scene_section(device, plan),
        "bf16": lambda: bf16_section(device, plan),
        "onnx": lambda: onnx_section(device, plan),
    }
    for name in names:
        start = time.perf_counter()
        runners[name]()
        yield name, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--reference-site", help="folder with TerraTorch 1.2.13 (or TERRATIM_REFERENCE_SITE)")
    parser.add_argument("--quick", action="store_true", help="tiny only, small batches, one repeat: a smoke run")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--repeats", type=int, help="rounds per case (default 5; --quick 1)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = QUICK if args.quick else Plan()
    if args.repeats:
        plan = Plan(**{**plan.__dict__, "repeats": args.repeats})
    register, version = load_register(args.reference_site)
    header(args.device, version)
    print(f"plan: {'quick' if args.quick else 'full'}; {plan.repeats} rounds after {plan.warmup} warm-up; medians")
    total = time.perf_counter()
    for name, seconds in run_sections(args.sections, args.device, plan, register):
        print(f"\n({name}: {seconds:.0f} s)")
    print(f"\ntotal {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
