"""The masked multimodal token objective of TerraMind pretraining (TerraMind paper, arXiv 2504.11171): encode a
subset of input tokens, predict target tokens.

Pure math on a :class:`~terratim.model.terramind.TerraMind`; the Lightning loop lives in
:mod:`terratim.pretraining.module`. Inputs are raw pixels (patch embeddings) or token ids; targets are always
token ids of the modalities' tokenizers ("dual-scale": pixels in, tokens out).

Steps of :func:`masked_modeling_loss`:

1. embed every input modality and keep the ``K`` selected tokens (content and position/modality terms);
2. encode them; the decoder context is proj(encoded) + the kept tokens' position/modality terms;
3. build one query per selected target token: mask token + position + modality embedding of its domain;
4. decode with self-attention restricted to tokens of the same target modality (``decoder_sep_mask``);
5. tied logits per target domain and cross-entropy against the target ids, averaged per modality then over
   modalities (``"mod"``) or over all target tokens (``"token"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal, cast

import torch
import torch.nn.functional as F

from terratim.layers.attention import key_padding_bias
from terratim.model.embeddings import TokenDecoderEmbedding
from terratim.model.terramind import TerraMind
from terratim.pretraining.masking import Selection

LossWeighting = Literal["mod", "token"]


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of (B, N, D) at (B, K) positions -> (B, K, D)."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def target_queries(
    model: TerraMind, targets: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, domain index and ids of every target position, concatenated in ``targets`` order.

    Returns:
        queries (B, N_out, D), domain (B, N_out) int64 (position of the key in ``targets``), ids (B, N_out).
    """
    queries, domains, ids = [], [], []
    for j, (key, tokens) in enumerate(targets.items()):
        tokens = tokens.reshape(tokens.shape[0], -1).long()  # (B, n) row-major grid
        grid = math.isqrt(tokens.shape[1])
        table = cast(TokenDecoderEmbedding, model.decoder_embeddings[key]).query_emb(grid)  # (1, n, D)
        queries.append((model.mask_token + table).expand(tokens.shape[0], -1, -1))
        domains.append(torch.full_like(tokens, j))
        ids.append(tokens)
    return torch.cat(queries, 1), torch.cat(domains, 1), torch.cat(ids, 1)


def masked_modeling_loss(
    model: TerraMind,
    inputs: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    selection: Selection,
    weighting: LossWeighting = "mod",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Cross-entropy of the selected target tokens given the selected input tokens.

    Args:
        model: a TerraMind with a decoder whose ``decoder_embeddings`` hold every target key.
        inputs: ``{input key: standardized image (B, C, H, W) or token ids (B, h, w)}`` in selection order.
        targets: ``{target key: token ids (B, h, w)}`` in selection order.
        selection: token choice from :func:`terratim.pretraining.masking.select_tokens`.
        weighting: ``"mod"`` (mean of per-modality means) or ``"token"`` (mean over all target tokens).

    Returns:
        The loss and the per-target-key mean cross-entropy (detached).
    """
    if not model.has_decoder:
        raise ValueError("pretraining needs a TerraMind with a decoder (give decoder_keys)")
    device = model.mask_token.device
    # 1. embed and keep the K selected input tokens.
    x, emb, _ = model.embed(inputs)  # (B, N_in, D) each
    keep = selection.input_index.to(device)
    x, emb = _gather(x, keep), _gather(emb, keep)  # (B, K, D)
    # 2. encoder and decoder context.
    encoded = model.run_encoder(x + emb, all_layers=False)[0]
    context = model.decoder_context(encoded, emb)
    # 3. queries of the T selected targets.
    queries, domains, ids = target_queries(model, targets)
    pick = selection.target_index.to(device)
    queries = _gather(queries, pick)  # (B, T, D)
    domains, ids = domains.gather(1, pick), ids.gather(1, pick)  # (B, T)
    # 4. decoder; a target token attends only to targets of its own modality.
    separate = domains[:, :, None] != domains[:, None, :]  # (B, T, T), True = blocked
    decoded = model.run_decoder(queries, context, self_bias=key_padding_bias(separate, queries.dtype))
    # 5. per-domain tied logits and cross-entropy.
    sums, counts = {}, {}
    for j, key in enumerate(targets):
        chosen = domains == j
        count = int(chosen.sum())
        if count == 0:
            continue
        logits = model.logits(key, decoded[chosen])  # (n_j, V_j)
        sums[key] = F.cross_entropy(logits.float(), ids[chosen], reduction="sum")
        counts[key] = count
    per_mod = {key: sums[key].detach() / counts[key] for key in sums}
    if weighting == "token":
        loss = torch.stack(list(sums.values())).sum() / sum(counts.values())
    elif weighting == "mod":
        loss = torch.stack([sums[key] / counts[key] for key in sums]).mean()
    else:
        raise ValueError(f"loss weighting must be 'mod' or 'token', got {weighting!r}")
    return loss, per_mod
