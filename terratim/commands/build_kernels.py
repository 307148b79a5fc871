"""``terratim build-kernels``: compile the tokenizer decoder's Winograd transforms for this machine, once.

Building a model never compiles anything. This command is the one opt-in step: it compiles the C kernels with the
system compiler (``$CC``, else ``cc``) into ``$TERRATIM_KERNEL_CACHE`` (default ``~/.cache/terratim/kernels``) and
prints the library's path. Decoders use them afterwards when ``TERRATIM_NATIVE_KERNELS=1`` is set (or with
``decoder.set_optimized(native=True)`` in Python); without them the portable eager transforms run.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options: the compiler comes from $CC, the cache folder from $TERRATIM_KERNEL_CACHE


def run(args: argparse.Namespace) -> int:
    from terratim.tokenizers.winograd_kernels import KernelBuildError, build_kernels

    del args
    try:
        path = build_kernels()
    except KernelBuildError as err:
        raise SystemExit(str(err)) from err
    print(f"Winograd kernels ready: {path}")
    print("use them with TERRATIM_NATIVE_KERNELS=1 (or decoder.set_optimized(native=True) in Python)")
    return 0
