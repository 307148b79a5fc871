"""4M-style token budgets for masked multimodal pretraining (TerraMind paper, arXiv 2504.11171; Mizrahi et al.
2023, "4M", §3).

Per sample, a fixed number of encoder (input) tokens and decoder (target) tokens is spread over the modalities
with proportions drawn from a symmetric Dirichlet distribution, so one sample may see mostly S1 and predict
mostly land cover, the next the reverse. Within a modality the positions are a random permutation: the first
``k_in`` positions are inputs and the next ``k_out`` are targets, so a position is never both input and target
of the same modality (its raw pixels would give its own token away).

Because the budgets are met exactly, every sample has the same number of input and target tokens: the selection
is a plain ``(B, K)`` index into the concatenated tokens, with no padding and no attention mask in the encoder.

Steps (numbered in :func:`sample_budgets` and :func:`select_tokens`):

1. proportions p ~ Dir(alpha * 1) over input modalities, and independently over target modalities;
2. counts = largest-remainder rounding of p * budget, capped by what each modality has left, the overflow
   handed to modalities with room, so the counts sum to the budget exactly (targets are counted first, then
   inputs among the positions left, which is always feasible when input + target budgets fit the inputs);
3. a random permutation of each modality's positions; inputs take its head, targets the following part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MaskingConfig:
    """Token budgets of the pretraining objective.

    Attributes:
        input_tokens: encoder tokens per sample (``num_encoder_tokens``).
        target_tokens: decoder tokens per sample (``num_decoder_tokens``).
        alpha: concentration of the symmetric Dirichlet over modalities (1.0 = uniform over the simplex,
            small values give samples dominated by one modality).
    """

    input_tokens: int = 128
    target_tokens: int = 128
    alpha: float = 1.0


@dataclass
class Selection:
    """Which tokens one batch uses.

    Attributes:
        input_index: (B, K) positions in the concatenation of the input modalities' tokens (in input order).
        target_index: (B, T) positions in the concatenation of the target modalities' tokens.
        input_counts: (B, M_in) tokens per input modality.
        target_counts: (B, M_out) tokens per target modality.
    """

    input_index: torch.Tensor
    target_index: torch.Tensor
    input_counts: torch.Tensor
    target_counts: torch.Tensor


def _numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    """A NumPy generator drawn from the torch one (NumPy has the Dirichlet sampler torch lacks for generators)."""
    seed = torch.randint(0, 2**62, (1,), generator=generator).item()
    return np.random.default_rng(int(seed))


def split_budget(proportions: np.ndarray, budget: int, capacity: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``budget``, close to ``proportions * budget``, each at most ``capacity`` (step 2).

    Raises:
        ValueError: when the budget exceeds the total capacity.
    """
    capacity = np.asarray(capacity, dtype=np.int64)
    if budget > capacity.sum():
        raise ValueError(f"token budget {budget} exceeds the {int(capacity.sum())} tokens available")
    share = np.asarray(proportions, dtype=np.float64) * budget
    counts = np.minimum(np.floor(share).astype(np.int64), capacity)
    remainder = np.where(counts < capacity, share - counts, -1.0)
    while counts.sum() < budget:
        room = counts < capacity
        # Largest remainder first; ties (and exhausted remainders) go to the modality with most room.
        order = np.lexsort((-(capacity - counts), -remainder))
        pick = next(i for i in order if room[i])
        counts[pick] += 1
        remainder[pick] = -1.0 if counts[pick] >= capacity[pick] else remainder[pick] - 1.0
    return counts


def sample_budgets(
    batch: int,
    num_modalities: int,
    budget: int,
    capacity: np.ndarray,
    alpha: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """(B, M) integer token counts per sample and modality (steps 1-2).

    Args:
        batch: samples.
        num_modalities: modalities M.
        budget: tokens per sample.
        capacity: (B, M) or (M,) tokens available per modality.
        alpha: Dirichlet concentration.
        rng: randomness.
    """
    capacity = np.broadcast_to(np.asarray(capacity, dtype=np.int64), (batch, num_modalities))
    proportions = rng.dirichlet(np.full(num_modalities, alpha), size=batch)  # (B, M), step 1
    return np.stack([split_budget(proportions[b], budget, capacity[b]) for b in range(batch)])


def select_tokens(
    batch: int,
    input_sizes: Mapping[str, int],
    target_sizes: Mapping[str, int],
    source: Mapping[str, str],
    config: MaskingConfig,
    generator: torch.Generator | None = None,
) -> Selection:
    """Choose input and target tokens for a batch.

    Args:
        batch: samples B.
        input_sizes: ``{input key: tokens}`` in concatenation order (e.g. ``{"untok_sen1grd@224": 196}``).
        target_sizes: ``{target key: tokens}`` in concatenation order.
        source: ``{key: modality name}`` for every input and target key; keys of the same modality share
            one permutation of positions, so an input position is never a target of that modality.
        config: budgets and Dirichlet concentration.
        generator: the only source of randomness.
    """
    in_keys, out_keys = list(input_sizes), list(target_sizes)
    input_modalities = [source[key] for key in in_keys]
    if len(set(input_modalities)) != len(input_modalities):
        raise ValueError(f"each modality may be given as input once (raw or tokens), got {in_keys}")
    in_total, out_total = sum(input_sizes.values()), sum(target_sizes.values())
    if config.target_tokens > out_total or config.input_tokens + config.target_tokens > in_total:
        raise ValueError(
            f"token budgets too large: input_tokens + target_tokens = {config.input_tokens} + "
            f"{config.target_tokens} must be at most the {in_total} input tokens, and target_tokens at most "
            f"the {out_total} target tokens (targets may take positions of input modalities)"
        )
    rng = _numpy_rng(generator)
    # Targets first, then inputs among the positions their modality has left: always feasible given the check.
    out_counts = sample_budgets(
        batch, len(out_keys), config.target_tokens, np.array(list(target_sizes.values())), config.alpha, rng
    )
    taken = np.zeros((batch, len(in_keys)), dtype=np.int64)
    for i, key in enumerate(in_keys):
        for j, out_key in enumerate(out_keys):
            if source[out_key] == source[key]:
                taken[:, i] += out_counts[:, j]
    room = np.array(list(input_sizes.values()))[None] - taken
    in_counts = sample_budgets(batch, len(in_keys), config.input_tokens, room, config.alpha, rng)
    input_index, target_index = [], []
    for b in range(batch):
        perms: dict[str, np.ndarray] = {}
        for mod in dict.fromkeys(source.values()):  # step 3: one permutation per modality
            size = next(n for k, n in (*input_sizes.items(), *target_sizes.items()) if source[k] == mod)
            perms[mod] = rng.permutation(size)
        input_index.append(_gather_positions(in_keys, input_sizes, in_counts[b], perms, source, None))
        target_index.append(
            _gather_positions(
                out_keys, target_sizes, out_counts[b], perms, source, _used(in_keys, in_counts[b], source)
            )
        )
    return Selection(
        torch.as_tensor(np.stack(input_index)),
        torch.as_tensor(np.stack(target_index)),
        torch.as_tensor(in_counts),
        torch.as_tensor(out_counts),
    )


def _used(in_keys: Sequence[str], counts: np.ndarray, source: Mapping[str, str]) -> dict[str, int]:
    used: dict[str, int] = {}
    for key, count in zip(in_keys, counts):
        used[source[key]] = used.get(source[key], 0) + int(count)
    return used


def _gather_positions(
    keys: Sequence[str],
    sizes: Mapping[str, int],
    counts: np.ndarray,
    perms: Mapping[str, np.ndarray],
    source: Mapping[str, str],
    skip: Mapping[str, int] | None,
) -> np.ndarray:
    """Flat positions in the concatenation of ``keys``: for each key, ``count`` entries of its permutation."""
    positions, offset, cursor = [], 0, dict(skip or {})
    for key, count in zip(keys, counts):
        mod = source[key]
        start = cursor.get(mod, 0)
        positions.append(offset + np.sort(perms[mod][start : start + int(count)]))
        cursor[mod] = start + int(count)
        offset += sizes[key]
    return np.concatenate(positions).astype(np.int64)
