"""TiM cost: the same-run ratio against TerraTorch's TiM, TiM vs the plain backbone, and TiM's parts.

    python benchmarks/bench_tim.py                                   # CPU, tiny, S2L2A+S1GRD, TiM LULC, batch 8
    python benchmarks/bench_tim.py --reference-site DIR              # + TerraTorch 1.2.13 in this process
    python benchmarks/bench_tim.py --device cuda --dtype bf16 --sizes tiny base --breakdown

Random weights, eval mode, no_grad, argmax imagination (temperature 0) in one decoding step on both sides.
With the reference (``pip install --no-deps --target DIR terratorch==1.2.13 timm einops diffusers``, or
TERRATIM_REFERENCE_SITE=DIR; only its TerraMind model code is imported, see reference.py) the models run in
alternation and the script prints medians, spreads (min-max) and the ratio of the medians (reference /
terratim: above 1 means terratim is faster). ``--breakdown`` splits TiM into generator encoder, decoder and
trainable encoder, with FLOPs (the FLOP ratio says what the TiM / plain time ratio should be without overheads).
"""

from __future__ import annotations

import argparse

import torch
from bench_backbone import alternate, load_reference_register, ratio_text, spread
from common import device_line, flops, timed

import terratim


def tim_settings(tim: list[str]) -> dict:
    return {"tim_modalities": tim, "tim_temps": 0.0, "tim_decoding_steps": 1, "merge_method": "mean"}


def compare(size: str, batch: int, inputs: list[str], tim: list[str], device: str = "cpu", dtype: str = "fp32",
            repeats: int = 5, warmup: int = 2, register=None) -> dict[str, list[float]]:  # noqa: ANN001
    """Seconds per batch of terratim's TiM (and plain backbone, reference), run in alternation."""
    plain = terratim.build(f"terramind_v1_{size}", modalities=inputs).eval().to(device)
    model = terratim.build(f"terramind_v1_{size}_tim", modalities=inputs, **tim_settings(tim)).eval().to(device)
    g = torch.Generator().manual_seed(0)
    x = {m: torch.randn(batch, terratim.resolve(m).num_bands, 224, 224, generator=g).to(device) for m in inputs}
    fns = {"terratim TiM": lambda: model(x), "terratim plain": lambda: plain(x)}
    if register is not None:
        from reference import build_reference

        reference, _ = build_reference(register, f"terramind_v1_{size}_tim", None, modalities=inputs,
                                       **tim_settings(tim))
        reference = reference.to(device).eval()
        fns["reference TiM"] = lambda: reference(dict(x))
    return alternate(fns, device, repeats, warmup, dtype)


def breakdown(size: str, batch: int, inputs: list[str], tim: list[str], device: str, dtype: str,
              repeats: int, warmup: int) -> None:
    from terratim.generation.sampler import Sampler

    plain = terratim.build(f"terramind_v1_{size}", modalities=inputs).eval().to(device)
    model = terratim.build(f"terramind_v1_{size}_tim", modalities=inputs, **tim_settings(tim)).eval().to(device)
    g = torch.Generator().manual_seed(0)
    x = {m: torch.randn(batch, terratim.resolve(m).num_bands, 224, 224, generator=g).to(device) for m in inputs}
    with_tokens = {**x, **model.imagine(x)}

    def run(fn):  # noqa: ANN001, ANN202
        return timed(fn, device, repeats, warmup, dtype), flops(fn)

    plain_s, plain_f = run(lambda: plain(x))
    tim_s, tim_f = run(lambda: model(x))
    gen_s, gen_f = run(lambda: model.imagine(x))
    enc_s, enc_f = run(lambda: model(with_tokens))  # trainable encoder on inputs + given TiM tokens
    keyed = model.generator.network.keyed_inputs(x)
    sampler = Sampler(model.generator.network)
    genc_s, genc_f = run(lambda: sampler.context(keyed, {}))
    print(f"{size} breakdown: time TiM {tim_s * 1000:.1f} ms vs plain {plain_s * 1000:.1f} ms -> "
          f"{tim_s / plain_s:.2f}x; FLOPs {tim_f / 1e9:.1f} vs {plain_f / 1e9:.1f} GFLOP -> "
          f"{tim_f / plain_f:.2f}x; time ratio / FLOP ratio = {(tim_s / plain_s) / (tim_f / plain_f):.2f}")
    print(f"  {'part':<34}{'ms':>9}{'GFLOP':>9}")
    print(f"  {'generator encoder':<34}{genc_s * 1000:>9.1f}{genc_f / 1e9:>9.1f}")
    print(f"  {'generator decoder (+ sampling)':<34}{(gen_s - genc_s) * 1000:>9.1f}{(gen_f - genc_f) / 1e9:>9.1f}")
    print(f"  {'trainable encoder (+ merge)':<34}{enc_s * 1000:>9.1f}{enc_f / 1e9:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny"])
    parser.add_argument("--inputs", nargs="+", default=["S2L2A", "S1GRD"])
    parser.add_argument("--tim", nargs="+", default=["LULC"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--reference-site", help="folder with TerraTorch 1.2.13 (or TERRATIM_REFERENCE_SITE)")
    parser.add_argument("--breakdown", action="store_true", help="also time TiM's parts, with FLOPs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    register = load_reference_register(args.reference_site)
    print(f"{device_line(args.device)}, {args.dtype}, {'+'.join(args.inputs)} + TiM {'+'.join(args.tim)}, "
          f"batch {args.batch}, 224 x 224, median (min-max) of {args.repeats} alternating runs, ms per batch")
    for size in args.sizes:
        times = compare(size, args.batch, args.inputs, args.tim, args.device, args.dtype, args.repeats,
                        args.warmup, register)
        line = f"{size:<5} b{args.batch:<3} terratim TiM {spread(times['terratim TiM'])}"
        for other in ("terratim plain", "reference TiM"):
            if other in times:
                line += f" | {other} {spread(times[other])} -> {ratio_text(times[other], times['terratim TiM'])}"
        print(line, flush=True)
        if args.breakdown:
            breakdown(size, args.batch, args.inputs, args.tim, args.device, args.dtype, args.repeats, args.warmup)


if __name__ == "__main__":
    main()
