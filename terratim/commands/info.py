"""``terratim info``: models, modalities, bands and standardization statistics."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modality", help="show one modality in detail")


def run(args: argparse.Namespace) -> int:
    from terratim import modalities as mods
    from terratim.registry import describe_models

    if args.modality:
        m = mods.resolve(args.modality)
        print(f"{m.name} ({m.kind}): {m.description}")
        print(f"  units: {m.units}; input key {m.input_key}; token key {m.token_key}; vocabulary {m.vocab_size}")
        for band, mean, std in zip(m.bands, m.mean, m.std):
            print(f"  {band:<16} mean {mean:>10.3f}  std {std:>9.3f}")
        return 0
    print("Models (terratim.build(name, ...)):")
    for name, text in describe_models().items():
        print(f"  {name:<36} {text}")
    print(
        "\nModalities (names are exact, case-insensitive; aliases: "
        + ", ".join(f"{a.upper()}={c}" for a, c in mods.ALIASES.items())
        + "):"
    )
    for m in mods.MODALITIES.values():
        generated = "generatable" if m.token_key else "input only"
        print(f"  {m.name:<7} {m.kind:<8} {m.num_bands:>2} bands  {generated:<11} {m.description}")
        print(f"          bands: {', '.join(m.bands)}")
        print(f"          mean:  {', '.join(f'{v}' for v in m.mean)}")
        print(f"          std:   {', '.join(f'{v}' for v in m.std)}")
    return 0
