"""``terratim reconstruct``: encode a GeoTIFF with a modality tokenizer, decode it, write the result and a PNG.

The image is standardized with the registry statistics, tokenized, decoded (DDIM for S2L2A, S1GRD, S1RTC, DEM and
NDVI; the ViT decoder for LULC class maps) and de-standardized. Outputs in ``--out``:
``<name>_<MOD>_reconstruction.tif`` (georeferenced like the input) and ``<name>_<MOD>_reconstruction.png``
(input next to reconstruction).
"""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modality", required=True, help="S2L2A, S1GRD, S1RTC, DEM, NDVI or LULC")
    parser.add_argument("--input", required=True, help="GeoTIFF of that modality (side a multiple of 32)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps (default 10; the reference's 50 for parity)")
    parser.add_argument(
        "--model",
        help="registered tokenizer name (default terramind_v1_tokenizer_<mod>); offline, "
        "the bundled terramind_sim_micro_tokenizer_{dem,lulc} with --pretrained",
    )
    parser.add_argument("--ckpt", help="official TerraMind_Tokenizer_<MOD>.pt or a converted .safetensors")
    parser.add_argument("--pretrained", action="store_true", help="download the official tokenizer from the hub")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starting noise (default 0)")
    parser.add_argument(
        "--no-clip",
        action="store_true",
        help="do not clip predicted x0 to [-1, 1] standardized units (the reference clips, which "
        "bounds every output to mean +- 1 std)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from terratim.data.geotiff import check_writable, read_geotiff, require_valid_pixels
    from terratim.modalities import resolve
    from terratim.tokenizers.build import TOKENIZER_MODALITIES

    # user errors propagate as exceptions: terratim.cli prints them as one line and exits with status 2
    modality = resolve(args.modality)
    if modality.name not in TOKENIZER_MODALITIES:
        raise ValueError(f"{modality.name} has no tokenizer; choose one of {', '.join(TOKENIZER_MODALITIES)}")
    stem = f"{Path(args.input).stem}_{modality.name}_reconstruction"
    out_dir = Path(args.out)
    raster = read_geotiff(args.input, expected_bands=modality.num_bands, what=modality.name)
    require_valid_pixels(raster, modality.name)
    tif, png = (check_writable(out_dir / f"{stem}{suffix}", args.overwrite) for suffix in (".tif", ".png"))
    recon, report = _reconstruct(args, modality, raster.data)
    _write(args, modality, raster, recon, tif, png)
    print(report)
    print(f"wrote {tif}\nwrote {png}")
    return 0


def _reconstruct(args: argparse.Namespace, modality, data):
    """(C, H, W) physical units -> reconstruction in physical units (LULC: class ids) and a summary line."""
    import numpy as np
    import torch

    import terratim

    device = torch.device(args.device)
    name = args.model or f"terramind_v1_tokenizer_{modality.name.lower()}"
    tok = terratim.build(name, pretrained=args.pretrained, ckpt_path=args.ckpt).to(device)
    built_for = getattr(tok, "modality", modality)  # a tokenizer model records its modality
    if built_for != modality:
        raise ValueError(f"--model {name} is a {built_for.name} tokenizer, but --modality is {modality.name}")
    hub = "bundled" if name.startswith("terramind_sim_") else "official (hub)"
    weights = args.ckpt or (hub if args.pretrained else "random initialisation")
    nodata = ~np.isfinite(data).all(axis=0)  # (H, W)
    x = torch.from_numpy(np.where(np.isfinite(data), data, 0.0 if modality.is_categorical else np.nan))[None]
    start = time.perf_counter()
    if modality.is_categorical:
        with torch.no_grad():
            logits = tok(x.to(device))
        recon = logits.argmax(dim=1).to(torch.uint8).cpu().numpy()  # (1, H, W)
        score = f"pixel agreement {float((recon[0] == data[0])[~nodata].mean()):.3f}"
    else:
        z = modality.standardize(x.float())
        z = torch.nan_to_num(z, nan=0.0)  # nodata -> the mean; put back as NaN below
        generator = torch.Generator().manual_seed(args.seed)
        z_hat = tok(z.to(device), timesteps=args.steps, generator=generator, clip=not args.no_clip)
        recon = modality.destandardize(z_hat.float().cpu())[0].numpy().astype(np.float32)
        recon[:, nodata] = np.nan
        error = np.abs(recon - data)[:, ~nodata]
        score = f"mean absolute error {float(error.mean()) if error.size else float('nan'):.4g} {modality.units}"
    elapsed = time.perf_counter() - start
    steps = "" if modality.is_categorical else f", {args.steps} DDIM steps"
    report = (
        f"{modality.name} tokenizer ({weights}) on {args.device}: {tuple(data.shape)} -> "
        f"{data.shape[1] // 16}x{data.shape[2] // 16} tokens{steps}, {elapsed:.1f} s; {score}"
    )
    return recon, report


def _write(args: argparse.Namespace, modality, raster, recon, tif, png) -> None:
    from pathlib import Path

    from terratim.data.geotiff import color_table, write_geotiff
    from terratim.viz import save_panel

    if modality.is_categorical:
        write_geotiff(tif, recon, like=raster.profile, overwrite=args.overwrite, colormap=color_table(modality.colors))
        caption = "reconstruction"
    else:
        write_geotiff(tif, recon, like=raster.profile, overwrite=args.overwrite)
        caption = f"reconstruction ({args.steps} DDIM steps)"
    pretrained = "bundled weights" if (args.model or "").startswith("terramind_sim_") else "official weights"
    weights = Path(args.ckpt).name if args.ckpt else (pretrained if args.pretrained else "random weights")
    save_panel(
        png,
        [("input", modality.name, raster.data), (caption, modality.name, recon)],
        title=f"{modality.name} tokenizer: {raster.path.name} ({weights})",
    )
