"""``terratim quickstart``: offline demo of TiM against a plain backbone, with the bundled simulated-data model.

1. Task: water extent (open water + flooded vegetation) from Sentinel-1 alone, on the *simulated* Earth
   (:mod:`terratim.data.sim`), with scarce labels (a few chips per seed), evaluated on held-out chips.
2. For each seed, fine-tune ``terramind_sim_micro`` (plain) and ``terramind_sim_micro_tim`` (imagines LULC
   from S1 first) with the same head, data, steps and optimiser, as the package's
   :class:`~terratim.tasks.SemanticSegmentationTask` under a Lightning ``Trainer`` (what ``terratim fit`` runs);
   report its test mIoU and water IoU (torchmetrics, over all held-out pixels; mean +- std over seeds) and the
   runtime of each.
3. Save a figure (S1, imagined LULC, both predictions, ground truth) and run the TiM generator on the real
   Sen1Floods11 S1 chips shipped with the package (:data:`terratim.samples.SEN1FLOODS11_SAMPLE`, 128 x 128 crops),
   writing the imagined land cover next to their flood labels.

Every step runs, in every mode; a missing bundled file is an error, found before any training.

Everything runs on CPU in a few minutes; ``--fast`` is a seconds-long smoke version for CI. The table is the same
on every run of one machine with one thread count; training sums in float32, so another thread count (``--threads``)
or another CPU's BLAS kernels give slightly different per-seed numbers (up to ~1 pp): the footer prints the threads.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from terratim.samples import FloodChip, sen1floods11_files

LULC_WATER_CLASSES = (1, 3)  # water, flooded vegetation
CLASS_NAMES = ("dry", "water")


@dataclass(frozen=True)
class Settings:
    """Sizes of one quickstart run."""

    seeds: tuple[int, ...] = (0, 1, 2)
    train_chips: int = 8
    test_chips: int = 48
    steps: int = 150
    batch_size: int = 8
    lr: float = 1e-3
    size: int = 64
    sen1floods11_chips: int = 9


FAST = Settings(seeds=(0,), train_chips=2, test_chips=2, steps=2, batch_size=2, sen1floods11_chips=1)
TEST_WORLD_SEED = 999  # held-out chips; pretraining used dataset seeds 0 and 1, fine-tuning uses 100 + seed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="quickstart_output", help="folder for the figure and GeoTIFFs")
    parser.add_argument("--fast", action="store_true", help="a seconds-long smoke run (CI); numbers mean nothing")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps per run")
    parser.add_argument("--train-chips", type=int, default=None, help="labelled training chips per seed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def settings_from(args: argparse.Namespace) -> Settings:
    base = FAST if args.fast else Settings()
    changes: dict[str, Any] = {}
    if args.seeds is not None:
        changes["seeds"] = tuple(range(args.seeds))
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.train_chips is not None:
        changes["train_chips"] = args.train_chips
    return Settings(**{**base.__dict__, **changes})


# ------------------------------------------------------------------------------------------------ data
def task_data(seed: int, count: int, size: int) -> tuple[Any, Any]:
    """S1GRD (N, 2, H, W) standardized and the water label (N, H, W) of simulated world ``seed``."""
    import torch

    from terratim.pretraining.data import SimulatedDataset

    data = SimulatedDataset(seed, count, size, modalities=["S1GRD", "WATER"], cache=False)
    items = [data[i] for i in range(count)]
    return torch.stack([x["S1GRD"] for x in items]), torch.stack([x["WATER"] for x in items])


# ----------------------------------------------------------------------------------------------- model
def model_args(variant: str) -> dict[str, Any]:
    """The bundled model as plain or TiM backbone, with the same necks, UNet decoder and head."""
    args: dict[str, Any] = {
        "backbone": "terramind_sim_micro" if variant == "plain" else "terramind_sim_micro_tim",
        "backbone_pretrained": True,
        "backbone_modalities": ["S1GRD"],
        "necks": [{"name": "SelectIndices", "indices": [0, 1, 2, 3]}, {"name": "ReshapeTokensToImage"},
                  {"name": "LearnedInterpolateToPyramidal"}],
        "decoder": "UNetDecoder",
        "decoder_channels": [64, 32, 32, 16],
        "num_classes": 2,
    }  # fmt: skip
    if variant == "tim":
        args["backbone_tim_modalities"] = ["LULC"]
    return args


def build_task(variant: str, settings: Settings) -> Any:
    """The package's :class:`~terratim.tasks.SemanticSegmentationTask` (cross-entropy, AdamW), as a config builds it."""
    from terratim.tasks import SemanticSegmentationTask

    return SemanticSegmentationTask(model_args(variant), loss="ce", class_names=list(CLASS_NAMES), lr=settings.lr,
                                    optimizer="AdamW", optimizer_hparams={"weight_decay": 0.01})  # fmt: skip


def flips(x: Any) -> Any:
    """The four flip variants (none, x, y, both) of a batch (N, ..., H, W), stacked as (4N, ..., H, W)."""
    import torch

    return torch.cat([x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)])


def model_inputs(variant: str, model: Any, s1: Any, seed: int, batch: int = 32) -> dict[str, Any]:
    """Inputs of a segmenter. For TiM, the frozen generator imagines the LULC tokens once per chip here (what
    the TiM forward would do at every step), so training costs about as much as for the plain model."""
    import torch

    if variant == "plain":
        return {"S1GRD": s1}
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tokens = [model.backbone.imagine({"S1GRD": s1[i : i + batch]}, generator)["LULC"]
                  for i in range(0, s1.shape[0], batch)]  # fmt: skip
    return {"S1GRD": s1, "LULC": torch.cat(tokens)}


class ChipDataset:
    """Task batches ``{"image": {modality: (C, H, W)}, "mask": (H, W)}`` from stacked inputs and labels."""

    def __init__(self, inputs: dict[str, Any], label: Any) -> None:
        self.inputs, self.label = inputs, label

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": {k: v[i] for k, v in self.inputs.items()}, "mask": self.label[i]}


def trainer(max_steps: int = -1, callbacks: list | None = None) -> Any:
    """A quiet single-CPU Lightning trainer: no logger, checkpoints, progress bar or sanity check."""
    import logging
    import warnings

    import lightning.pytorch as pl

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, max_steps=max_steps, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, callbacks=callbacks or [])  # fmt: skip


def fine_tune(variant: str, seed: int, s1: Any, label: Any, settings: Settings, tick: Any) -> Any:
    """Fit the segmentation task on flip-augmented chips (batches drawn with replacement); the generator frozen."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    class Tick(pl.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            tick()

    torch.manual_seed(seed)  # the decoder's and head's initial weights
    task = build_task(variant, settings)
    data = ChipDataset(model_inputs(variant, task.model, flips(s1), seed), flips(label))
    sampler = RandomSampler(data, replacement=True, num_samples=settings.steps * settings.batch_size,
                            generator=torch.Generator().manual_seed(seed))  # fmt: skip
    loader = DataLoader(data, batch_size=settings.batch_size, sampler=sampler)
    trainer(settings.steps, [Tick()]).fit(task, train_dataloaders=loader)
    return task.eval()


def evaluate(variant: str, task: Any, s1: Any, label: Any, batch: int = 16) -> tuple[dict[str, float], Any]:
    """The task's test metrics (``test/mIoU``, ``test/IoU_water``, ...) on held-out chips, and the predictions
    (N, H, W) of the first three for the figure."""
    import torch
    from torch.utils.data import DataLoader

    inputs = model_inputs(variant, task.model, s1, seed=12345)
    loader = DataLoader(ChipDataset(inputs, label), batch_size=batch)
    (metrics,) = trainer().test(task, dataloaders=loader, verbose=False)
    with torch.no_grad():
        pred = task.predictions(task({k: v[:3] for k, v in inputs.items()}))
    return metrics, pred


# ---------------------------------------------------------------------------------------------- report
def imagined_lulc(tim_model: Any, s1: Any) -> Any:
    """Class map (N, H, W) decoded from the TiM generator's LULC tokens for standardized S1 (N, 2, H, W)."""
    import torch

    from terratim.sim_models import build_sim_tokenizer

    tokenizer = build_sim_tokenizer("LULC")
    backbone = tim_model.model.backbone
    with torch.no_grad():
        tokens = backbone.imagine({"S1GRD": s1}, torch.Generator().manual_seed(0))["LULC"]
        return tokenizer.decode_tokens(tokens).argmax(1)


def print_table(results: dict[str, list[dict]], settings: Settings, total: float) -> str:
    import statistics

    import torch
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"S1-only water mapping, simulated data, {settings.train_chips} labelled chips per seed, "
                        f"{settings.test_chips} held-out chips")  # fmt: skip
    for column in ("variant", "mIoU (mean ± std)", "IoU water", "per-seed mIoU", "fine-tune time / seed"):
        table.add_column(column)
    lines = []
    for variant, runs in results.items():
        scores = [100 * r["test/mIoU"] for r in runs]
        std = statistics.stdev(scores) if len(scores) > 1 else 0.0
        water = statistics.mean(100 * r["test/IoU_water"] for r in runs)
        seconds = statistics.mean(r["seconds"] for r in runs)
        row = (variant, f"{statistics.mean(scores):.1f} ± {std:.1f}", f"{water:.1f}",
               " ".join(f"{s:.1f}" for s in scores), f"{seconds:.1f} s")  # fmt: skip
        table.add_row(*row)
        lines.append(" | ".join(row))
    console = Console()
    console.print(table)
    # training sums in float32: another thread count or CPU (its BLAS kernels) moves each seed by up to ~1 pp
    console.print(f"seeds {list(settings.seeds)}, {settings.steps} steps each, {torch.get_num_threads()} torch "
                  f"threads; total {total:.0f} s")  # fmt: skip
    return "\n".join(lines)


def save_figure(path: Path, s1: Any, lulc: Any, plain: Any, tim: Any, truth: Any, rows: int = 3) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from terratim.modalities import LULC_COLORS

    lulc_cmap = ListedColormap(LULC_COLORS)
    rows = min(rows, s1.shape[0])
    fig, axes = plt.subplots(rows, 5, figsize=(12.5, 2.6 * rows), squeeze=False)
    titles = ("S1 VV (input)", "imagined LULC (TiM)", "plain prediction", "TiM prediction", "ground truth")
    for r in range(rows):
        panels = (s1[r, 0], lulc[r], plain[r], tim[r], truth[r])
        for c, (ax, image) in enumerate(zip(axes[r], panels)):
            if c == 0:
                ax.imshow(image.numpy(), cmap="gray")
            elif c == 1:
                ax.imshow(image.numpy(), cmap=lulc_cmap, vmin=0, vmax=9, interpolation="nearest")
            else:
                ax.imshow(image.numpy(), cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
    fig.suptitle("Simulated data (terratim.data.sim): water = open water + flooded vegetation", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------- Sen1Floods11
def imagine_sen1floods11(tim_model: Any, output: Path, chips: list[FloodChip], size: int) -> list[str]:
    """Imagined LULC for each real S1 chip (tiled at the model's size), written next to a copy of the label."""
    import numpy as np
    import torch

    from terratim.data.geotiff import read_geotiff, write_geotiff
    from terratim.pretraining.data import to_model_units
    from terratim.sim_models import build_sim_tokenizer

    tokenizer = build_sim_tokenizer("LULC")
    backbone = tim_model.model.backbone
    lines = []
    for chip in chips:
        raster = read_geotiff(chip.s1, expected_bands=2, what="S1GRD")
        s1 = to_model_units("S1GRD", raster.data)  # NaN nodata -> 0 (the mean)
        height, width = s1.shape[-2:]
        lulc = np.zeros((height, width), np.uint8)
        tiles = [(i, j) for i in range(0, height - size + 1, size) for j in range(0, width - size + 1, size)]
        if not tiles:
            raise ValueError(f"{chip.s1} is {height} x {width} pixels, smaller than the model's {size} x {size} tiles")
        batch = torch.stack([s1[:, i : i + size, j : j + size] for i, j in tiles])
        with torch.no_grad():
            tokens = backbone.imagine({"S1GRD": batch}, torch.Generator().manual_seed(0))["LULC"]
            classes = tokenizer.decode_tokens(tokens).argmax(1).numpy().astype(np.uint8)
        for (i, j), tile in zip(tiles, classes):
            lulc[i : i + size, j : j + size] = tile
        write_geotiff(output / f"{chip.name}_imagined_LULC.tif", lulc, like=raster.profile, overwrite=True)
        label = read_geotiff(chip.label).data[0]
        write_geotiff(output / f"{chip.name}_LabelHand.tif", np.nan_to_num(label, nan=-1).astype(np.int16),
                      like=raster.profile, overwrite=True)  # fmt: skip
        valid = label >= 0
        imagined_water = np.isin(lulc, LULC_WATER_CLASSES)
        inter = (imagined_water & (label == 1) & valid).sum()
        union = ((imagined_water | (label == 1)) & valid).sum()
        share = 100 * imagined_water[valid].mean()
        lines.append(f"{chip.name}: labelled water {100 * (label[valid] == 1).mean():.1f} %, imagined water/flooded "
                     f"vegetation {share:.1f} %, IoU {inter / max(union, 1):.2f}")  # fmt: skip
    return lines


# ------------------------------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    import torch
    from rich.progress import Progress

    from terratim.sim_models import CHECKPOINT

    settings = settings_from(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not CHECKPOINT.is_file():
        raise FileNotFoundError(f"the bundled model {CHECKPOINT} is missing; see docs/pretraining.md")
    real_chips = sen1floods11_files()[: settings.sen1floods11_chips]  # checked before any work
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    test_s1, test_label = task_data(TEST_WORLD_SEED, settings.test_chips, settings.size)
    results: dict[str, list[dict]] = {"plain": [], "tim": []}
    models: dict[str, Any] = {}
    with Progress() as progress:
        task = progress.add_task("fine-tuning", total=len(settings.seeds) * 2 * settings.steps)
        for seed in settings.seeds:
            s1, label = task_data(100 + seed, settings.train_chips, settings.size)
            for variant in ("plain", "tim"):
                progress.update(task, description=f"seed {seed}: {variant}")
                t0 = time.perf_counter()
                model = fine_tune(variant, seed, s1, label, settings, lambda: progress.advance(task))
                metrics, pred = evaluate(variant, model, test_s1, test_label)
                results[variant].append({**metrics, "seconds": time.perf_counter() - t0, "pred": pred})
                models[variant] = model
                progress.console.print(f"seed {seed} {variant}: mIoU {100 * metrics['test/mIoU']:.1f} "
                                       f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    print_table(results, settings, time.perf_counter() - start)
    lulc = imagined_lulc(models["tim"], test_s1[:3])
    figure = save_figure(output / "quickstart.png", test_s1[:3], lulc, results["plain"][0]["pred"][:3],
                         results["tim"][0]["pred"][:3], test_label[:3])  # fmt: skip
    print(f"figure: {figure}")
    real = output / "sen1floods11"
    lines = imagine_sen1floods11(models["tim"], real, real_chips, settings.size)
    print(f"real Sen1Floods11 S1 chips -> imagined LULC written to {real}/ (a model trained on simulated "
          "data only: expect a rough picture, not a benchmark)")  # fmt: skip
    for line in lines:
        print("  " + line)
    print(f"quickstart finished in {time.perf_counter() - start:.0f} s")
    return 0
