"""Tokenizer speed: encode, one denoiser step and full DDIM decodes per image, on CPU or CUDA.

    python benchmarks/bench_tokenizers.py                      # DEM, 224 px, CPU, 10 and 50 steps
    python benchmarks/bench_tokenizers.py --device cuda        # adds bf16 autocast rows
    python benchmarks/bench_tokenizers.py --steps 10 --threads 1
    python benchmarks/bench_tokenizers.py --steps --repeat 9   # the denoiser-step comparison only

Full-size architecture with random weights (or ``--ckpt``). The denoiser step is timed five ways: in the
reference's plain layout (NCHW, weights reordered by oneDNN on every call), channels-last with cached oneDNN
weights, that plus Winograd 3x3 convolutions with eager transforms (terratim's CPU default), the same with only
public operators (what runs where the private oneDNN operators are refused: ``F.conv2d`` for the other
convolutions), and with compiled transforms (opt-in; this benchmark builds them into the kernel cache once
unless ``--no-native``). Outputs are compared with the NCHW one, and each round's ratio to NCHW is reported
(median and range): on a machine whose speed drifts, a ratio of two back-to-back calls is fairer than a ratio
of two best times. "weight preparation" is the extra time of the first call of the default path, which
transforms and caches the weights. Full decodes are timed with the default path and prepared weights. On CPU,
the process CPU time per call is printed next to the wall time: it is robust to other processes sharing the
cores.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

import terratim
from terratim.tokenizers.unet import Conv2d, onednn_ops_usable
from terratim.tokenizers.winograd_kernels import loaded_kernels


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeat: int, warmup: bool = True) -> tuple[float, float, object]:
    """Best wall time and best process CPU time of ``repeat`` calls (after one warm-up call)."""
    out = fn() if warmup else None
    walls, cpus = [], []
    for _ in range(repeat):
        _sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        _sync(device)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), out


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` prints it (Linux), else the platform's description."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def set_path(decoder: torch.nn.Module, enabled: bool, winograd: bool, native: bool, private_ops: bool) -> None:
    """One of the compared paths: :meth:`DiffusionUNet.set_optimized` plus the public-operators switch."""
    decoder.set_optimized(enabled, winograd=winograd, native=native)
    for module in decoder.modules():
        if isinstance(module, Conv2d):
            module.private_ops = private_ops


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modality", default="DEM")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, nargs="*", default=[10, 50], help="full decodes to time (none: skip)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="timed repetitions of encode / denoiser calls (rounds of the denoiser-step comparison)",
    )
    parser.add_argument("--ckpt", help="official tokenizer file (default: random weights)")
    parser.add_argument("--decode-both", action="store_true", help="also time full decodes in the NCHW layout")
    parser.add_argument(
        "--no-native",
        action="store_true",
        help="skip the compiled Winograd transforms (they are built into the kernel cache once)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)
    name = f"terramind_v1_tokenizer_{args.modality.lower()}"
    tok = terratim.build(name, ckpt_path=args.ckpt)
    if args.ckpt is None:
        randomize(tok)
        randomize(tok.decoder, seed=1)
    tok = tok.to(device).eval()
    channels = tok.config.in_channels
    x = torch.randn(args.batch, channels, args.size, args.size).to(device)
    per = args.batch
    print(f"{name}, {args.batch}x{channels}x{args.size}x{args.size}, device {device}"
          f" ({torch.get_num_threads()} CPU threads), torch {torch.__version__}; CPU: {cpu_model()}; "
          f"private oneDNN operators usable: {onednn_ops_usable()}")
    rows = []
    with torch.no_grad():
        wall, cpu, (codes, ids) = timed(lambda: tok.encode(x), device, args.repeat)
        rows.append(("encode", "fp32", wall / per, cpu / per))
        noise = torch.randn(args.batch, channels, args.size, args.size, generator=torch.Generator().manual_seed(0))
        noise = noise.to(device)
        decoder = tok.decoder
        cond = decoder.prepare_condition(codes, (args.size, args.size))
        step = lambda: decoder(noise, 999, cond, prepared=True)  # noqa: E731
        layouts = {  # enabled, winograd, native, private_ops
            "nchw": (False, False, False, True),
            "channels_last": (True, False, False, True),
            "winograd_eager": (True, True, False, True),
            "winograd_public": (True, True, False, False),
        }
        if not args.no_native and device.type == "cpu":  # the Winograd paths are CPU-only
            layouts["winograd_native"] = (True, True, True, True)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in layouts}
        outputs = {}
        for rep in range(args.repeat):  # rotate the order so that background load hits every layout alike
            names = list(layouts)[rep % len(layouts) :] + list(layouts)[: rep % len(layouts)]
            for name in names:
                set_path(decoder, *layouts[name])
                wall, cpu, outputs[name] = timed(step, device, 1)
                times[name].append((wall, cpu))
        kernels = loaded_kernels()
        if "winograd_native" in layouts:
            print(f"compiled Winograd transforms: {kernels.path if kernels else 'not built (eager transforms ran)'}")
        best = {name: tuple(min(t) for t in zip(*times[name], strict=True)) for name in layouts}
        # paired ratios: each round times every layout back to back, so a ratio sees one state of the machine
        paired = {name: sorted(n[0] / o[0] for n, o in zip(times["nchw"], times[name], strict=True))
                  for name in layouts}
        diff = {name: float((outputs[name] - outputs["nchw"]).abs().max()) for name in layouts}
        set_path(decoder, True, True, False, True)  # the default; drops the cached weights: time the first call
        first_wall, first_cpu, _ = timed(step, device, 1, warmup=False)
        labels = {
            "nchw": "denoiser step, NCHW (ref. layout)",
            "channels_last": "denoiser step, channels-last",
            "winograd_eager": "  + Winograd, eager (default)",
            "winograd_public": "  + Winograd, public ops only",
            "winograd_native": "  + Winograd, compiled (opt-in)",
        }
        for name in layouts:
            rows.append((labels[name], "fp32", *(v / per for v in best[name])))
        prepare = (first_wall - best["winograd_eager"][0], first_cpu - best["winograd_eager"][1])
        rows.append(("weight preparation, once", "fp32", *prepare))  # per decoder, not per image
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                wall_bf, cpu_bf, _ = timed(step, device, args.repeat)
            rows.append(("denoiser step, optimized", "bf16 autocast", wall_bf / per, cpu_bf / per))
        for steps in args.steps:
            decode = lambda s=steps: tok.decode_tokens(ids, timesteps=s, noise=noise)  # noqa: E731
            wall, cpu, _ = timed(decode, device, 1, warmup=False)
            rows.append((f"decode {steps} DDIM steps", "fp32", wall / per, cpu / per))
            if args.decode_both:
                decoder.set_optimized(False)
                wall, cpu, _ = timed(decode, device, 1, warmup=False)
                decoder.set_optimized(True)
                rows.append((f"decode {steps} steps, NCHW (ref.)", "fp32", wall / per, cpu / per))
                step()  # prepare the weights again
            if device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    wall, cpu, _ = timed(decode, device, 1, warmup=False)
                rows.append((f"decode {steps} DDIM steps", "bf16 autocast", wall / per, cpu / per))
    print(f"\n{'what':<34} {'precision':<14} {'wall s/image':>12} {'CPU s/image':>12}")
    for what, precision, wall, cpu in rows:
        print(f"{what:<34} {precision:<14} {wall:>12.3f} {cpu:>12.3f}")
    print("\nper denoiser step against the reference NCHW layout (wall-time ratio NCHW / path, same round):")
    for name in list(layouts)[1:]:
        ratios = paired[name]
        print(f"  {labels[name].strip():<32} median {ratios[len(ratios) // 2]:.2f}x over {len(ratios)} rounds "
              f"(range {ratios[0]:.2f}-{ratios[-1]:.2f}x); best times {best['nchw'][0] / best[name][0]:.2f}x wall, "
              f"{best['nchw'][1] / best[name][1]:.2f}x CPU; max |difference| {diff[name]:.2e}")


if __name__ == "__main__":
    main()
