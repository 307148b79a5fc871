"""TiM cost: TiM vs plain backbone latency at equal batch, FLOP ratio and the breakdown of TiM's parts.

    python benchmarks/bench_tim.py                                   # CPU, tiny, S2L2A+S1GRD, TiM LULC, batch 8
    python benchmarks/bench_tim.py --device cuda --dtype bf16 --sizes tiny base

Reference (tiny, batch 8, this kind of machine): TiM 1.31 s vs plain 0.437 s (3.0x); on an H200 6x (tiny) to
8x (base, bf16: 38 ms vs 4.75 ms). TiM runs the generator's encoder, its decoder, then the trainable encoder on
inputs + imagined tokens; the FLOP ratio says what the time ratio should be without overheads.
"""

from __future__ import annotations

import argparse

import torch
from common import device_line, flops, timed

import terratim

REFERENCE = {("cpu", "fp32", "tiny", 8): (1.31, 0.437), ("cuda", "bf16", "base", 8): (0.038, 0.00475)}


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
    args = parser.parse_args()
    kind = args.device.split(":")[0]
    print(f"{device_line(args.device)}, {args.dtype}, {'+'.join(args.inputs)} + TiM {'+'.join(args.tim)}, "
          f"batch {args.batch}, 224 x 224")
    for size in args.sizes:
        plain = terratim.build(f"terramind_v1_{size}", modalities=args.inputs).eval().to(args.device)
        tim = terratim.build(f"terramind_v1_{size}_tim", modalities=args.inputs, tim_modalities=args.tim,
                             tim_temps=0.0).eval().to(args.device)  # fmt: skip
        g = torch.Generator().manual_seed(0)
        x = {m: torch.randn(args.batch, terratim.resolve(m).num_bands, 224, 224, generator=g).to(args.device)
             for m in args.inputs}  # fmt: skip
        imagined = tim.imagine(x)
        with_tokens = {**x, **imagined}

        def run(fn):
            return timed(fn, args.device, args.repeats, args.warmup, args.dtype), flops(fn)

        plain_s, plain_f = run(lambda: plain(x))
        tim_s, tim_f = run(lambda: tim(x))
        gen_s, gen_f = run(lambda: tim.imagine(x))
        enc_s, enc_f = run(lambda: tim(with_tokens))  # trainable encoder on inputs + given TiM tokens
        gen_model = tim.generator
        keyed = gen_model.network.keyed_inputs(x)
        from terratim.generation.sampler import Sampler

        sampler = Sampler(gen_model.network)
        genc_s, genc_f = run(lambda: sampler.context(keyed, {}))
        print(f"\n{size}: time TiM {tim_s * 1000:.1f} ms vs plain {plain_s * 1000:.1f} ms -> "
              f"{tim_s / plain_s:.2f}x; FLOPs {tim_f / 1e9:.1f} vs {plain_f / 1e9:.1f} GFLOP -> "
              f"{tim_f / plain_f:.2f}x; time ratio / FLOP ratio = {(tim_s / plain_s) / (tim_f / plain_f):.2f}")
        print(f"  {'part':<34}{'ms':>9}{'GFLOP':>9}")
        print(f"  {'generator encoder':<34}{genc_s * 1000:>9.1f}{genc_f / 1e9:>9.1f}")
        print(f"  {'generator decoder (+ sampling)':<34}{(gen_s - genc_s) * 1000:>9.1f}{(gen_f - genc_f) / 1e9:>9.1f}")
        print(f"  {'trainable encoder (+ merge)':<34}{enc_s * 1000:>9.1f}{enc_f / 1e9:>9.1f}")
        ref = REFERENCE.get((kind, args.dtype, size, args.batch))
        if ref:
            print(f"  reference: TiM {ref[0] * 1000:.1f} ms, plain {ref[1] * 1000:.1f} ms ({ref[0] / ref[1]:.1f}x); "
                  f"our TiM is {ref[0] / tim_s:.2f}x faster than the reference TiM")  # fmt: skip


if __name__ == "__main__":
    main()
