"""Turning logits into token ids: top-k / top-p filtering, temperature, multinomial draws (spec §5.4).

The reference's order is kept: top-k, then top-p on the T = 1 distribution, then the temperature.
"""

from __future__ import annotations

import torch

ARGMAX_BELOW = 1e-10


def top_k_filter(logits: torch.Tensor, top_k: int | float) -> torch.Tensor:
    """Keep logits >= the k-th largest; a float in (0, 1) means a fraction of the vocabulary."""
    if not top_k:
        return logits
    vocab = logits.shape[-1]
    k = max(int(top_k * vocab), 1) if isinstance(top_k, float) and top_k < 1 else int(top_k)
    k = min(k, vocab)
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: drop the tail whose cumulative probability exceeds ``top_p`` (top-1 always kept)."""
    if not 0.0 < top_p < 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative > top_p
    remove[..., 1:] = remove[..., :-1].clone()  # keep the first entry that crosses top_p
    remove[..., 0] = False
    remove = remove.scatter(-1, order, remove)
    return logits.masked_fill(remove, float("-inf"))


def sample_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | float = 0,
    top_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one id per position from (..., V) logits.

    Returns:
        ids (...,) and the probability of each drawn id under the sampling distribution (for MaskGIT
        confidence). Temperature 0 gives the argmax (deterministic).
    """
    if abs(temperature) < ARGMAX_BELOW:
        probs = logits.float().softmax(dim=-1)
        ids = logits.argmax(dim=-1)
        return ids, probs.gather(-1, ids[..., None])[..., 0]
    filtered = top_p_filter(top_k_filter(logits.float(), top_k), top_p)
    probs = (filtered / temperature).softmax(dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    if generator is not None and generator.device != flat.device:
        draws = torch.multinomial(flat.cpu(), 1, generator=generator).to(flat.device)
    else:
        draws = torch.multinomial(flat, 1, generator=generator)
    ids = draws.view(probs.shape[:-1])
    return ids, probs.gather(-1, ids[..., None])[..., 0]
