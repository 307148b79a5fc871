"""Turning logits into token ids: top-k / top-p filtering, temperature, multinomial draws (as TerraTorch's
``sample_tokens`` in terratorch/models/backbones/terramind/model/generate.py).

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


def nucleus_keep(sorted_logits: torch.Tensor, top_p: float, log_total: torch.Tensor | None = None) -> torch.Tensor:
    """For logits sorted descending: True for the smallest prefix whose probability exceeds ``top_p``.

    ``log_total`` is the log-normaliser of the whole vocabulary (``logsumexp``) when ``sorted_logits`` holds only
    the largest entries; default: the entries given are the whole vocabulary.
    """
    if log_total is None:
        log_total = torch.logsumexp(sorted_logits, dim=-1, keepdim=True)
    cumulative = (sorted_logits - log_total).exp().cumsum(dim=-1)
    remove = cumulative > top_p
    remove[..., 1:] = remove[..., :-1].clone()  # keep the first entry that crosses top_p
    remove[..., 0] = False
    return ~remove


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: drop the tail whose cumulative probability exceeds ``top_p`` (top-1 always kept)."""
    if not 0.0 < top_p < 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    remove = ~nucleus_keep(sorted_logits, top_p)
    return logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))


def sorted_nucleus_candidates(
    logits: torch.Tensor, top_p: float, first: int = 128
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits sorted descending (with their vocabulary indices and the log-normaliser), enough to hold the nucleus.

    Trained models put the nucleus in a few dozen tokens: when the ``first`` largest logits already carry more
    than ``top_p`` of the probability in every row, only those are sorted (the nucleus is the same); otherwise
    the whole vocabulary is.
    """
    log_total = torch.logsumexp(logits, dim=-1, keepdim=True)
    if logits.shape[-1] > first:
        values, indices = torch.topk(logits, first, dim=-1)
        if bool(((values - log_total).exp().sum(dim=-1) > top_p).all()):
            return values, indices, log_total
    values, indices = torch.sort(logits, descending=True, dim=-1)
    return values, indices, log_total


def inverse_cdf_draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row of (..., V) probabilities: the first whose cumulative probability exceeds u ~ U(0, 1)."""
    cdf = probs.cumsum(dim=-1)
    device = generator.device if generator is not None else probs.device
    u = torch.rand(probs.shape[:-1] + (1,), generator=generator, device=device, dtype=cdf.dtype).to(cdf.device)
    index = torch.searchsorted(cdf, u * cdf[..., -1:], right=True)
    return index.clamp_(max=probs.shape[-1] - 1)[..., 0]


def sample_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | float = 0,
    top_p: float = 0.0,
    generator: torch.Generator | None = None,
    confidence: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Draw one id per position from (..., V) logits.

    Top-k, then top-p on the T = 1 distribution, then softmax at temperature T and one draw by inverse CDF
    (the nucleus is taken in sorted order, so the vocabulary is sorted once).

    Returns:
        ids (...,) and the probability of each drawn id under the sampling distribution (for MaskGIT
        confidence), or None for it when ``confidence`` is False (ROAR and autoregressive steps skip a
        normalisation over the vocabulary). Temperature 0 gives the argmax (deterministic).
    """
    if abs(temperature) < ARGMAX_BELOW:
        best, ids = logits.float().max(dim=-1)
        if not confidence:
            return ids, None
        return ids, (best - torch.logsumexp(logits.float(), dim=-1)).exp()  # softmax probability of the argmax
    candidates = top_k_filter(logits.float(), top_k)
    order = None
    if 0.0 < top_p < 1.0:
        candidates, order, log_total = sorted_nucleus_candidates(candidates, top_p)
        candidates = candidates.masked_fill(~nucleus_keep(candidates, top_p, log_total), float("-inf"))
    probs = (candidates / temperature).softmax(dim=-1)
    index = inverse_cdf_draw(probs, generator)
    chosen = probs.gather(-1, index[..., None])[..., 0]
    ids = order.gather(-1, index[..., None])[..., 0] if order is not None else index
    return ids, chosen
