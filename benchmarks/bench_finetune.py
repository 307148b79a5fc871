"""Fine-tuning throughput: Lightning training steps/s and samples/s for TerraMind tiny and base.

The model is the Sen1Floods11 setup (S2L1C + S1GRD, mean merge, SelectIndices -> ReshapeTokensToImage ->
LearnedInterpolateToPyramidal -> UNetDecoder, dice loss, AdamW) with random weights, trained by
``lightning.Trainer`` on random in-memory batches, so the figures exclude disk I/O. Warm-up steps are not timed.

    python benchmarks/bench_finetune.py                       # tiny and base, 224 px, batch 8, auto device
    python benchmarks/bench_finetune.py --img-size 64 --steps 5 --sizes tiny
"""

from __future__ import annotations

import argparse
import time

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from terratim.tasks import SemanticSegmentationTask

DECODER_CHANNELS = {
    "tiny": [256, 128, 64, 32],
    "small": [384, 192, 96, 48],
    "base": [512, 256, 128, 64],
    "large": [512, 256, 128, 64],
}


class RandomChips(Dataset):
    """Fixed random S2L1C + S1GRD chips and binary labels (standardized units)."""

    def __init__(self, n: int, size: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.s2 = torch.randn(n, 13, size, size, generator=gen)
        self.s1 = torch.randn(n, 2, size, size, generator=gen)
        self.mask = torch.randint(0, 2, (n, size, size), generator=gen)

    def __len__(self) -> int:
        return len(self.mask)

    def __getitem__(self, i: int) -> dict:
        return {"image": {"S2L1C": self.s2[i], "S1GRD": self.s1[i]}, "mask": self.mask[i]}


class Timer(pl.Callback):
    """Wall time of the training batches after ``warmup`` steps (synchronising CUDA)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.steps = warmup, None, 0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx == self.warmup:
            self._sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx >= self.warmup:
            self.steps += 1
        self._sync()
        self.end = time.perf_counter()


def bench(size: str, img: int, batch: int, steps: int, warmup: int, precision: str, accelerator: str) -> dict:
    model_args = {
        "backbone": f"terramind_v1_{size}",
        "backbone_modalities": ["S2L1C", "S1GRD"],
        "backbone_img_size": img,
        "necks": [
            {"name": "SelectIndices", "indices": [2, 5, 8, 11] if size != "large" else [5, 11, 17, 23]},
            {"name": "ReshapeTokensToImage"},
            {"name": "LearnedInterpolateToPyramidal"},
        ],
        "decoder": "UNetDecoder",
        "decoder_channels": DECODER_CHANNELS[size],
        "head_dropout": 0.1,
        "num_classes": 2,
    }
    task = SemanticSegmentationTask(model_args, loss="dice", ignore_index=-1, lr=2e-5)
    loader = DataLoader(RandomChips(batch * (steps + warmup), img), batch_size=batch, shuffle=False)
    timer = Timer(warmup)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=steps + warmup,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(task, loader)
    seconds = timer.end - timer.start
    return {
        "size": size,
        "steps_per_s": timer.steps / seconds,
        "samples_per_s": timer.steps * batch / seconds,
        "params_M": sum(p.numel() for p in task.parameters()) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", default=None, help="default: 16-mixed on CUDA, 32-true on CPU")
    args = parser.parse_args()
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    precision = args.precision or ("16-mixed" if accelerator == "gpu" else "32-true")
    device = torch.cuda.get_device_name() if accelerator == "gpu" else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"device: {device}; img {args.img_size}px, batch {args.batch_size}, precision {precision}, "
        f"{args.steps} timed steps after {args.warmup} warm-up"
    )
    print(f"{'model':<8}{'params (M)':>12}{'steps/s':>10}{'samples/s':>12}")
    for size in args.sizes:
        r = bench(size, args.img_size, args.batch_size, args.steps, args.warmup, precision, accelerator)
        print(f"{r['size']:<8}{r['params_M']:>12.1f}{r['steps_per_s']:>10.3f}{r['samples_per_s']:>12.2f}")


if __name__ == "__main__":
    main()
