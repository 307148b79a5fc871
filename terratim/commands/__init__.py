"""Subcommands of the ``terratim`` CLI (see :mod:`terratim.cli`) and what they share.

Each ``commands/<name>.py`` has ``add_arguments(parser)``, which declares its options on an argparse parser, and
``run(args) -> int``, which does the work and returns the exit status (LightningCLI commands take the raw
command line instead: ``run_argv(argv) -> int``). User errors are raised as exceptions with one-line messages;
:mod:`terratim.cli` prints them and exits with status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_modality_paths(parser: argparse.ArgumentParser, *flags: str, help: str, required: bool = False) -> None:
    """A repeatable ``MODALITY=PATH`` option (``flags`` e.g. ``"--input", "-i"``), parsed by :func:`modality_paths`."""
    parser.add_argument(
        *flags, action="append", required=required, metavar="MODALITY=PATH", help=help, default=None if required else []
    )


def modality_paths(items: list[str], what: str = "--input") -> dict[str, Path]:
    """``["S1GRD=a.tif", ...]`` -> ``{"S1GRD": Path("a.tif")}`` with modality names resolved.

    Raises:
        ValueError: for an item that is not MODALITY=PATH, or a modality given twice.
    """
    from terratim.modalities import resolve

    parsed: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{what} {item!r}: expected MODALITY=PATH, e.g. S1GRD=scene.tif")
        canonical = resolve(name).name
        if canonical in parsed:
            raise ValueError(f"{what} {canonical} is given twice")
        parsed[canonical] = Path(path)
    return parsed
