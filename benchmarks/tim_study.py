"""Why does (or doesn't) TiM help the bundled simulated-data model? A fixed-protocol study.

Protocol (fixed in this file before the final run; the quickstart's fine-tuning, head, steps and optimiser):

* task: water from S1 alone on simulated 64 px chips (:mod:`terratim.data.sim`), 150 AdamW steps (lr 1e-3,
  batch 8, four flips), the package's ``SemanticSegmentationTask``;
* label budgets 2, 8 and 32 chips (chips 0..n-1 of world ``100 + seed``), seeds 0..4, paired: for one seed every
  variant sees the same chips, head initialisation and batches;
* variants: ``plain``, ``tim`` (LULC tokens imagined from S1) and ``oracle`` (the TiM backbone fed the tokens of
  the *true* land cover: what a perfect generator would give);
* evaluation on 48 held-out chips of a world seed never used in pretraining (0, 1), the bundle's tests (4242),
  fine-tuning (100..) or for choosing settings: ``--world eval``. Development runs use ``--world dev`` (999);
* intervals: mean ± half-width of the 95 % Student-t interval over seeds; differences are paired per seed.

Diagnostics on the same held-out chips:

* tokenizer ceiling: LULC decoded from the tokens of the true map vs the true map (pixel accuracy, IoU of the
  water label's classes: open water + flooded vegetation, and of each);
* generator quality: LULC decoded from imagined tokens vs the true map, per class (confusion matrix), next to the
  ceiling;
* label realism: isolated pixels (no 8-neighbour of the same label) and mean 8-connected water-component size of
  the simulated label vs real Sen1Floods11 hand labels, both as 64 px crops.

Run (1 torch thread by default; one budget, 15 fine-tunings, took about 5 min on a shared 2-core box)::

    python benchmarks/tim_study.py --world dev --label-window 1 --budgets 8   # diagnosis, the label before the fix
    python benchmarks/tim_study.py --world eval --part diagnostics --real <folder with LabelHand/>
    python benchmarks/tim_study.py --world eval --part finetune --budgets 2   # then 8, then 32
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from terratim.commands import quickstart as qs
from terratim.data import sim
from terratim.data.geotiff import read_geotiff
from terratim.modalities import LULC_CLASSES
from terratim.samples import SEN1FLOODS11_SAMPLE

WORLDS = {"dev": 999, "eval": qs.TEST_WORLD_SEED}
BUDGETS = (2, 8, 32)
SEEDS = (0, 1, 2, 3, 4)
TEST_CHIPS = 48
SETTINGS = qs.Settings()  # steps, batch, lr, chip size of the quickstart
WATER_CLASSES = (sim.WATER, sim.FLOODED_VEG)
SHOWN_CLASSES = (sim.WATER, sim.TREES, sim.FLOODED_VEG, sim.CROPS, sim.BUILT, sim.BARE, sim.SNOW, sim.RANGELAND)


# ------------------------------------------------------------------------------------------- land cover
def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else float("nan")


def map_scores(pred: np.ndarray, true: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Pixel accuracy and IoUs of class maps (N, H, W), and IoU of their water classes with the task label."""
    return {
        "pixel accuracy": float((pred == true).mean()),
        "IoU water classes (1+3)": iou(np.isin(pred, WATER_CLASSES), np.isin(true, WATER_CLASSES)),
        "IoU with the task label": iou(np.isin(pred, WATER_CLASSES), label == 1),
        "mIoU with the task label": (iou(np.isin(pred, WATER_CLASSES), label == 1)
                                     + iou(~np.isin(pred, WATER_CLASSES), label != 1)) / 2,
        "IoU open water (1)": iou(pred == sim.WATER, true == sim.WATER),
        "IoU flooded vegetation (3)": iou(pred == sim.FLOODED_VEG, true == sim.FLOODED_VEG),
    }


def confusion(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Row-normalised confusion (true class x predicted class) in %, over SHOWN_CLASSES."""
    matrix = np.zeros((len(SHOWN_CLASSES), len(SHOWN_CLASSES)))
    for i, t in enumerate(SHOWN_CLASSES):
        row = pred[true == t]
        for j, p in enumerate(SHOWN_CLASSES):
            matrix[i, j] = (row == p).mean() * 100 if row.size else float("nan")
    return matrix


def land_cover_diagnostics(chips: qs.Chips) -> dict:
    """Tokenizer ceiling and generator quality on held-out chips."""
    tim = qs.build_task("tim", SETTINGS).model
    true, label = chips.lulc.numpy(), chips.label.numpy()
    ceiling = qs.decode_lulc(qs.true_lulc_tokens(chips.lulc)).numpy()
    imagined = qs.decode_lulc(qs.imagined_lulc_tokens(tim, chips.s1, seed=0)).numpy()
    majority = np.bincount(true.ravel()).argmax()
    return {
        "class share %": {LULC_CLASSES[c]: float((true == c).mean() * 100) for c in SHOWN_CLASSES},
        "majority-class accuracy": float((true == majority).mean()),
        "ceiling": map_scores(ceiling, true, label),
        "generator": map_scores(imagined, true, label),
        "generator vs ceiling": map_scores(imagined, ceiling, np.isin(ceiling, WATER_CLASSES)),
        "confusion ceiling": confusion(ceiling, true).tolist(),
        "confusion generator": confusion(imagined, true).tolist(),
    }


# ------------------------------------------------------------------------------------------------ labels
EIGHT = np.ones((3, 3), bool)


def label_structure(labels: list[np.ndarray]) -> dict[str, float]:
    """Isolated-pixel fraction and mean water-component size of binary labels (-1 = no data)."""
    from scipy import ndimage

    isolated = valid_total = 0
    sizes: list[int] = []
    for label in labels:
        valid = label >= 0
        for cls in (0, 1):
            mask = (label == cls).astype(int)
            other = ((label >= 0) & (label != cls)).astype(int)
            same = ndimage.convolve(mask, EIGHT.astype(int), mode="constant") - mask
            different = ndimage.convolve(other, EIGHT.astype(int), mode="constant")
            isolated += int(((same == 0) & (different > 0) & (mask == 1)).sum())
        valid_total += int(valid.sum())
        components, count = ndimage.label(label == 1, structure=EIGHT)
        sizes += np.bincount(components.ravel())[1:].tolist() if count else []
    return {"isolated pixels %": 100 * isolated / max(valid_total, 1),
            "mean water component (px)": float(np.mean(sizes)) if sizes else float("nan"),
            "water %": 100 * float(np.mean([(lab == 1).sum() / max((lab >= 0).sum(), 1) for lab in labels])),
            "crops": len(labels)}


def real_label_crops(folders: list[Path], size: int) -> list[np.ndarray]:
    """Sen1Floods11 hand labels cut into size x size crops with >= 90 % valid pixels (-1 = no data)."""
    crops = []
    for folder in folders:
        files = sorted((folder / "LabelHand").glob("*_LabelHand.tif"))
        if not files:
            raise FileNotFoundError(f"no LabelHand/*_LabelHand.tif under {folder}")
        for path in files:
            label = np.nan_to_num(read_geotiff(path).data[0], nan=-1).astype(np.int64)
            for i in range(0, label.shape[0] - size + 1, size):
                for j in range(0, label.shape[1] - size + 1, size):
                    crop = label[i : i + size, j : j + size]
                    if (crop >= 0).mean() >= 0.9:
                        crops.append(crop)
    return crops


# -------------------------------------------------------------------------------------------- fine-tune
def mean_ci(values: list[float], signed: bool = False) -> str:
    mean, half = qs.mean_interval(values)
    return f"{mean:+.1f} ± {half:.1f}" if signed else f"{mean:.1f} ± {half:.1f}"


def fine_tune_study(test: qs.Chips, budgets: tuple[int, ...], seeds: tuple[int, ...], label_window: int) -> dict:
    """mIoU (pp) per budget, variant and seed."""
    scores: dict = {}
    for budget in budgets:
        settings = qs.Settings(seeds=seeds, train_chips=budget)
        scores[budget] = {v: [] for v in qs.VARIANTS}
        for seed in seeds:
            train = qs.task_data(qs.TRAIN_WORLD_OFFSET + seed, budget, settings.size, label_window)
            for variant in qs.VARIANTS:
                t0 = time.perf_counter()
                task = qs.fine_tune(variant, seed, train, settings, lambda: None)
                metrics, _ = qs.evaluate(variant, task, test)
                scores[budget][variant].append(100 * metrics["test/mIoU"])
                print(f"budget {budget} seed {seed} {variant}: {scores[budget][variant][-1]:.1f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return scores


def finetune_table(scores: dict) -> str:
    """Markdown rows per budget: mean ± 95 % t-interval of each variant and of the paired differences."""
    lines = ["| labelled chips | plain | TiM | oracle TiM | TiM − plain (paired) | oracle − plain (paired) |",
             "|---|---|---|---|---|---|"]
    for budget, runs in scores.items():
        diff = {v: [a - b for a, b in zip(runs[v], runs["plain"])] for v in ("tim", "oracle")}
        lines.append(f"| {budget} | {mean_ci(runs['plain'])} | {mean_ci(runs['tim'])} | {mean_ci(runs['oracle'])} "
                     f"| {mean_ci(diff['tim'], True)} | {mean_ci(diff['oracle'], True)} |")
    return "\n".join(lines)


def diagnostics_text(lc: dict, labels: dict) -> str:
    lines = ["| LULC vs true map | pixel accuracy | IoU water classes (1+3) | IoU with label | mIoU with label "
             "| IoU open water (1) | IoU flooded veg. (3) |", "|---|---|---|---|---|---|---|"]
    for name in ("ceiling", "generator", "generator vs ceiling"):
        s = lc[name]
        lines.append(f"| {name} | {100 * s['pixel accuracy']:.1f} | {s['IoU water classes (1+3)']:.2f} | "
                     f"{s['IoU with the task label']:.2f} | {100 * s['mIoU with the task label']:.1f} | "
                     f"{s['IoU open water (1)']:.2f} | "
                     f"{s['IoU flooded vegetation (3)']:.2f} |")
    lines.append(f"\nmajority-class accuracy {100 * lc['majority-class accuracy']:.1f} %; class share % "
                 + ", ".join(f"{k} {v:.1f}" for k, v in lc["class share %"].items()))
    short = [LULC_CLASSES[c][:8] for c in SHOWN_CLASSES]
    for name in ("confusion ceiling", "confusion generator"):
        lines += [f"\n{name} (rows true, columns predicted, % of the row)", "| true \\ pred | " + " | ".join(short)
                  + " |", "|---" * (len(short) + 1) + "|"]
        for cls, row in zip(short, lc[name]):
            lines.append(f"| {cls} | " + " | ".join(f"{v:.0f}" for v in row) + " |")
    lines += ["\n| water label, 64 px crops | isolated pixels % | mean water component (px) | water % | crops |",
              "|---|---|---|---|---|"]
    for name, s in labels.items():
        lines.append(f"| {name} | {s['isolated pixels %']:.3f} | {s['mean water component (px)']:.0f} | "
                     f"{s['water %']:.1f} | {s['crops']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", choices=sorted(WORLDS), default="dev", help="held-out world: dev or eval")
    parser.add_argument("--part", choices=("diagnostics", "finetune", "all"), default="all")
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="number of paired seeds (0..n-1)")
    parser.add_argument("--real", type=Path, nargs="*", default=[],
                        help="Sen1Floods11 folders (with LabelHand/) for the label statistics "
                        "(default: the packaged 128 px crops)")
    parser.add_argument("--label-window", type=int, default=sim.SimConfig().label_window,
                        help="the simulator's water-label window (1: per-pixel land cover, the label before the fix)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    test = qs.task_data(WORLDS[args.world], TEST_CHIPS, SETTINGS.size, args.label_window)
    out: dict = {"world": WORLDS[args.world], "label window": args.label_window}
    print(f"# TiM study, held-out world {WORLDS[args.world]} ({args.world}), {TEST_CHIPS} chips of "
          f"{SETTINGS.size} px, water label window {args.label_window}\n")
    if args.part in ("diagnostics", "all"):
        out["land cover"] = land_cover_diagnostics(test)
        out["labels"] = {
            "simulated, per-pixel land cover (window 1)": label_structure(
                list(qs.task_data(WORLDS[args.world], TEST_CHIPS, SETTINGS.size, 1).label.numpy())),
            f"simulated, label window {args.label_window}": label_structure(list(test.label.numpy())),
            "Sen1Floods11 hand labels": label_structure(
                real_label_crops(args.real or [SEN1FLOODS11_SAMPLE], SETTINGS.size)),
        }
        print(diagnostics_text(out["land cover"], out["labels"]), "\n", flush=True)
    if args.part in ("finetune", "all"):
        out["mIoU"] = fine_tune_study(test, tuple(args.budgets), tuple(range(args.seeds)), args.label_window)
        print("\n" + finetune_table(out["mIoU"]))
    print(f"\n{torch.get_num_threads()} torch threads, {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
