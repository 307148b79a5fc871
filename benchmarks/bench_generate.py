"""Generation latency: tokens only (batch 1 and 8) and the full pipeline with decoding to pixels.

    python benchmarks/bench_generate.py                     # CPU, tiny S2L2A -> LULC
    python benchmarks/bench_generate.py --device cuda --sizes tiny base --dtype bf16
    python benchmarks/bench_generate.py --decode            # also decode (random-weight real tokenizers)

Reference on this kind of machine (2 CPU cores): tiny S2L2A -> LULC tokens 0.049 s at batch 1.
"""

from __future__ import annotations

import argparse

import torch
from common import device_line, flops, timed

import terratim

REFERENCE = {("cpu", "tiny", 1): 0.049}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny"])
    parser.add_argument("--inputs", nargs="+", default=["S2L2A"])
    parser.add_argument("--outputs", nargs="+", default=["LULC"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--decoding-steps", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = argmax (no sampling)")
    parser.add_argument("--top-p", type=float, default=0.8)
    parser.add_argument("--decode", action="store_true", help="also time decoding with the real tokenizers")
    parser.add_argument("--timesteps", type=int, default=10, help="diffusion steps when decoding")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    print(f"{device_line(args.device)}, {args.dtype}, {'+'.join(args.inputs)} -> {'+'.join(args.outputs)}, "
          f"{args.decoding_steps} decoding step(s), temperature {args.temperature}, top-p {args.top_p}, 224 x 224")
    print(f"{'size':<6}{'batch':>6}{'tokens s':>10}{'GFLOP':>9}{'full s':>9}{'reference':>11}{'speed-up':>9}")
    kind = args.device.split(":")[0]
    for size in args.sizes:
        model = terratim.build(f"terramind_v1_{size}_generate", modalities=args.inputs, output_modalities=args.outputs,
                               decoding_steps=args.decoding_steps, temps=args.temperature, top_p=args.top_p,
                               timesteps=args.timesteps,
                               build_tokenizers_for_outputs=args.decode).eval().to(args.device)
        for batch in args.batch_sizes:
            g = torch.Generator().manual_seed(0)
            x = {m: torch.randn(batch, terratim.resolve(m).num_bands, 224, 224, generator=g).to(args.device)
                 for m in args.inputs}
            tokens_s = timed(lambda: model.generate_tokens(x, torch.Generator().manual_seed(1)), args.device,
                             args.repeats, args.warmup, args.dtype)
            gflop = flops(lambda: model.generate_tokens(x, torch.Generator().manual_seed(1))) / 1e9
            full = "-"
            if args.decode:
                full_s = timed(lambda: model(x, generator=torch.Generator().manual_seed(1)), args.device, 1, 0,
                               args.dtype)
                full = f"{full_s:.2f}"
            ref = REFERENCE.get((kind, size, batch)) if args.dtype == "fp32" else None
            print(f"{size:<6}{batch:>6}{tokens_s:>10.3f}{gflop:>9.1f}{full:>9}"
                  f"{(f'{ref:.3f} s' if ref else '-'):>11}{(f'{ref / tokens_s:.2f}x' if ref else '-'):>9}")


if __name__ == "__main__":
    main()
