"""Chained generation and TiM: terratim against TerraTorch 1.2.13, both in this process, on random weights.

    python benchmarks/check_reference_chaining.py --reference-site DIR            # tiny generate + small TiM
    python benchmarks/check_reference_chaining.py --reference-site DIR --tim-size tiny --threads 1

DIR holds the reference installed with ``pip install --no-deps --target DIR terratorch==1.2.13 timm einops
diffusers`` (or set TERRATIM_REFERENCE_SITE; see reference.py for how it is loaded without the rest of
TerraTorch). TerraTorch 1.2.13 feeds the tokens decoded for each output into the encoder for the outputs after it;
terratim does the same by default (``chain=True``, ``tim_chain=True``). This script checks both settings against
the reference, with argmax sampling (temperature 0) and one decoding step, so no random draw matters:

1. ``*_tiny_generate``, S1GRD -> S2L2A + DEM: token ids of each output (chain=True and chain=False).
2. ``*_{tiny,small}_tim``, S2L2A + S1GRD, TiM LULC + NDVI: imagined token ids and the 12 layer outputs.

Weights: random, in the official file layout, loaded by each side's own loader (the reference through its
``pretrained=True`` path). Tiny uses the parity fixture set ``tiny_v1_seed1001`` (tests/fixture_weights.py); for
small there is no fixture set, so the script draws one from a seeded generator into the reference's own
encoder-decoder (whose ``state_dict`` is the official layout) and saves it under --work-dir (default: a folder
in the system's temporary directory). Inputs are standardized random tensors, batch 2, 224 x 224.

Per output it prints how many token positions differ, the largest first-step logit difference, and the smallest
gap between the reference's best and second-best logit at any position (how close argmax is to a tie: a token
that differs where that gap is below the logit difference is a rounding tie, not a bug); per TiM layer the
largest absolute difference. terratim's independent mode is also shown against the reference's chained default
(expected to differ) and, for TiM, against ``tim_chained_generations=False`` (expected to match). Exit status 1
when a comparison expected to match has a differing token or a layer difference above --layer-atol.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from reference import build_reference, installed_version, load_reference, resolve_site

import terratim

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fixture_weights  # noqa: E402  (the parity fixtures' weight recipes live with the tests)

GRID = 14  # 224 / 16 tokens per side
GENERATE_INPUTS, GENERATE_OUTPUTS = ["S1GRD"], ["S2L2A", "DEM"]
TIM_INPUTS, TIM_MODALITIES = ["S2L2A", "S1GRD"], ["LULC", "NDVI"]


def standardized_inputs(names: list[str], batch: int, seed: int) -> dict[str, torch.Tensor]:
    """{name: (B, C, 224, 224)} standard-normal values, i.e. inputs already standardized."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(batch, len(terratim.MODALITIES[name].bands), 224, 224, generator=generator) for name in names
    }


class ReferenceRecorder:
    """Wraps the reference sampler's ROAR pass and ``generate`` to keep first-step logits and final token ids."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.logits: dict[str, torch.Tensor] = {}
        self.tokens: dict[str, torch.Tensor] = {}
        sampler = model.sampler
        roar, generate = sampler.forward_enc_dec_roar_batched, sampler.generate

        def recorded_roar(mod_dict, target_mod, num_select, seed=None):
            logits, positions = roar(mod_dict, target_mod, num_select, seed=seed)  # (B, N, V), (B, N)
            if target_mod not in self.logits:
                full = torch.full((logits.shape[0], GRID * GRID, logits.shape[2]), float("nan"))
                full.scatter_(1, positions[..., None].expand_as(logits), logits)
                self.logits[target_mod] = full  # (B, 196, V) raster order
            return logits, positions

        def recorded_generate(*args, **kwargs):
            out = generate(*args, **kwargs)
            self.tokens.update({key: value["tensor"].clone() for key, value in out.items()})
            return out

        sampler.forward_enc_dec_roar_batched = recorded_roar
        sampler.generate = recorded_generate


def argmax_margin(logits: torch.Tensor) -> float:
    """Smallest gap between the best and the second-best logit over all positions of (B, N, V) logits."""
    top = logits.topk(2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min())


def report_tokens(label: str, ours, ref_ids: torch.Tensor, ref_logits: torch.Tensor) -> int:
    """Print one output's comparison; returns the number of token positions that differ."""
    ours_ids = ours.ids.view(ref_ids.shape)
    differ = int((ours_ids != ref_ids).sum())
    logit_diff = float((ours.first_logits - ref_logits).abs().max())
    margin = argmax_margin(ref_logits)
    print(
        f"  {label:<28} tokens differ at {differ:>3} of {ref_ids.numel()} positions; "
        f"first-step logits max |diff| {logit_diff:.2e}; reference argmax margin {margin:.2e}"
    )
    return differ


def check_generate(register, weights: Path, inputs: dict[str, torch.Tensor]) -> int:
    """Tiny generate S1GRD -> S2L2A + DEM; returns the differing positions of the chained run."""
    settings = dict(modalities=GENERATE_INPUTS, output_modalities=GENERATE_OUTPUTS, temps=0.0, decoding_steps=1)
    reference, logged = build_reference(register, "terramind_v1_tiny_generate", weights, **settings)
    print(f"reference terramind_v1_tiny_generate: {len(logged)} loading warnings {logged[:3]}")
    recorder = ReferenceRecorder(reference)
    random.seed(0)  # the reference draws its sampling seed from Python's global RNG
    with torch.no_grad():
        reference_out = reference(dict(inputs))
    failures = 0
    for chain in (True, False):
        ours = terratim.build(
            "terramind_v1_tiny_generate",
            ckpt_path=str(weights),
            build_tokenizers_for_outputs=False,
            chain=chain,
            **settings,
        ).eval()
        states = ours.generate_tokens(inputs, return_states=True)
        print(f" terratim chain={chain} vs reference (which always chains)")
        for name in GENERATE_OUTPUTS:
            key = ours.outputs[name]
            ref_ids = reference_out[name].reshape(-1, GRID * GRID)
            assert torch.equal(ref_ids, recorder.tokens[key]), "reference output is not its generated token ids"
            differ = report_tokens(f"{name} ({key})", states[name], ref_ids, recorder.logits[key])
            failures += differ if chain else 0
    return failures


def small_weights(register, path: Path, seed: int) -> Path:
    """Random official-layout weights for TerraMind small: the reference's own encoder-decoder, redrawn.

    Every parameter is drawn uniformly from a seeded generator, on scales like the tiny fixture set's recipe:
    norm scales in [0.75, 1.25], biases in +-0.05, mask token and modality embeddings in +-0.5, token embeddings
    in +-1, other matrices in +-sqrt(3 / fan_in) (unit variance). Buffers (sin-cos position embeddings, the zero
    biases of bias-free LayerNorms) keep the reference's values.
    """
    if path.is_file():
        return path
    with warnings.catch_warnings():  # "TiM model not pre-trained": the random init is what we want here
        warnings.simplefilter("ignore", UserWarning)
        model, _ = build_reference(
            register, "terramind_v1_small_tim", None, modalities=TIM_INPUTS, tim_modalities=TIM_MODALITIES
        )
    network = model.sampler.model  # the TerraMind encoder-decoder: its state_dict is the official key layout
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in network.named_parameters():  # tied tensors appear once
            low, high = uniform_range(name, parameter)
            parameter.copy_(low + (high - low) * torch.rand(parameter.shape, generator=generator))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    return path


def uniform_range(name: str, parameter: torch.Tensor) -> tuple[float, float]:
    if name.endswith("token_emb.weight"):
        return -1.0, 1.0
    if name == "mask_token" or name.endswith("mod_emb"):
        return -0.5, 0.5
    if parameter.dim() == 1:
        return (0.75, 1.25) if name.endswith("weight") else (-0.05, 0.05)
    if parameter.dim() == 2:
        bound = (3.0 / parameter.shape[1]) ** 0.5
        return -bound, bound
    raise ValueError(f"no drawing rule for parameter {name} of shape {tuple(parameter.shape)}")


def reference_tim(register, name: str, weights: Path, inputs: dict[str, torch.Tensor], chained: bool, **settings):
    """The reference TiM's imagined tokens, first-step logits and 12 layer outputs."""
    reference, logged = build_reference(register, name, weights, tim_chained_generations=chained, **settings)
    print(f"reference {name} tim_chained_generations={chained}: {len(logged)} loading warnings {logged[:3]}")
    recorder = ReferenceRecorder(reference)
    random.seed(0)  # the reference draws its sampling seed from Python's global RNG
    with torch.no_grad():
        layers = reference(dict(inputs))
    return recorder, layers


def report_tim(label: str, ours, inputs: dict[str, torch.Tensor], recorder, reference_layers, layer_atol: float) -> int:
    """Print one TiM comparison; returns the number of differing token positions plus layers out of tolerance."""
    states = ours.generator.generate_tokens(inputs, return_states=True)
    with torch.no_grad():
        layers = ours(inputs)
    print(f" {label}")
    failures = 0
    for modality in TIM_MODALITIES:
        key = ours.generator.outputs[modality]
        failures += report_tokens(f"{modality} ({key})", states[modality], recorder.tokens[key], recorder.logits[key])
    diffs = [float((mine - theirs).abs().max()) for mine, theirs in zip(layers, reference_layers, strict=True)]
    scale = max(float(layer.abs().max()) for layer in reference_layers)
    shown = ", ".join(f"{i}: {d:.1e}" for i, d in enumerate(diffs))
    print(f"  layers (max |ref| {scale:.1f}), max |diff| per layer: {shown}")
    return failures + sum(d > layer_atol for d in diffs)


def check_tim(register, size: str, weights: Path, inputs: dict[str, torch.Tensor], layer_atol: float) -> int:
    """TiM S2L2A + S1GRD imagining LULC then NDVI; returns the failures of the comparisons that should match."""
    name = f"terramind_v1_{size}_tim"
    settings = dict(
        modalities=TIM_INPUTS, tim_modalities=TIM_MODALITIES, tim_temps=0.0, tim_decoding_steps=1, merge_method="mean"
    )
    chained = reference_tim(register, name, weights, inputs, True, **settings)
    independent = reference_tim(register, name, weights, inputs, False, **settings)
    ours = {
        chain: terratim.build(name, ckpt_path=str(weights), tim_chain=chain, **settings).eval()
        for chain in (True, False)
    }
    failures = report_tim(
        "terratim tim_chain=True vs reference default (chained)", ours[True], inputs, *chained, layer_atol
    )
    report_tim("terratim tim_chain=False vs reference default (chained)", ours[False], inputs, *chained, layer_atol)
    failures += report_tim(
        "terratim tim_chain=False vs reference tim_chained_generations=False",
        ours[False],
        inputs,
        *independent,
        layer_atol,
    )
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-site", help="folder with the installed reference (or TERRATIM_REFERENCE_SITE)")
    parser.add_argument("--tim-size", default="small", choices=["tiny", "small"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--layer-atol",
        type=float,
        default=1e-4,
        help="largest accepted |difference| of a TiM layer output (fp32, values of order 10)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs and of the small weights")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "terratim-reference-check",
        help="where the drawn small weights are kept between runs",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    site = resolve_site(args.reference_site)
    register = load_reference(site)
    print(
        f"reference TerraTorch {installed_version(site)} from {site}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; temperature 0, one decoding step, batch 2, 224 x 224"
    )
    tiny = fixture_weights.materialize("tiny_v1_seed1001")
    failures = check_generate(register, tiny, standardized_inputs(GENERATE_INPUTS, 2, args.seed))
    tim_weights = tiny
    if args.tim_size == "small":
        tim_weights = small_weights(register, args.work_dir / f"TerraMind_v1_small_seed{args.seed}.pt", args.seed)
    failures += check_tim(
        register, args.tim_size, tim_weights, standardized_inputs(TIM_INPUTS, 2, args.seed + 1), args.layer_atol
    )
    print("chained results match the reference" if failures == 0 else "chained results DIFFER from the reference")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
