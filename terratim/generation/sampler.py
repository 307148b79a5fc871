"""Iterative token generation with a TerraMind encoder-decoder: ROAR, MaskGIT and autoregressive decoding.

Each target modality is one :class:`Target` record (what to generate and how) with its own state (ids and
which positions are decoded). A decoding step is: encode the inputs (plus already decoded target tokens),
pick query positions, run the decoder, sample, write back.

Differences from the reference (TerraTorch's terratorch/models/backbones/terramind/model/generate.py), on purpose:
* multi-step decoding works: decoded tokens of the target enter the encoder for the next step (4M-style).

Like the reference (TerraTorch 1.2.13), ``chain=True`` feeds each finished target to the encoder for the targets
after it; ``chain=False`` generates every target from the inputs alone (older TerraTorch releases).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from terratim.generation.sampling import sample_tokens
from terratim.generation.schedules import TOKEN_SCHEDULES, temperature_schedule
from terratim.generation.settings import GenerationSettings
from terratim.layers import key_padding_bias
from terratim.model.terramind import TerraMind

Scheme = Literal["roar", "maskgit", "autoregressive"]

# Special ids of the coordinates WordPiece vocabulary: [PAD], [EOS], [S_1], [S_2] (see terratim.tokenizers.coords;
# TerraTorch's generate.py uses eos_id=3 and s1_id=5).
PAD_ID, EOS_ID, SENTINEL_1, SENTINEL_2 = 0, 3, 5, 6


@dataclass(frozen=True)
class Target:
    """What to generate for one modality and how.

    Attributes:
        key: internal token-domain key (``tok_lulc@224``, ``coords``).
        num_tokens: tokens of the target (grid*grid for images, max length for sequences).
        settings: sampling options (scheme, steps, temperature, top-k/p, schedules, guidance).
        sequence: decode left to right, one token at a time (coordinates); ``settings.scheme`` and
            ``settings.decoding_steps`` then do not apply.
    """

    key: str
    num_tokens: int
    settings: GenerationSettings = GenerationSettings()
    sequence: bool = False

    @property
    def scheme(self) -> Scheme:
        return "autoregressive" if self.sequence else self.settings.scheme

    @property
    def grid(self) -> int:
        return int(round(self.num_tokens**0.5))

    def counts(self) -> list[int]:
        """Tokens decoded per step (the token schedule over ``settings.decoding_steps``)."""
        return TOKEN_SCHEDULES[self.settings.token_schedule](self.settings.decoding_steps, self.num_tokens)


@dataclass
class TargetState:
    """Progress of one target: ids (B, N) and which positions are decoded (B, N)."""

    ids: torch.Tensor
    decoded: torch.Tensor
    first_logits: torch.Tensor | None = None  # (B, N, V) raster order, from the first step (diagnostics)
    orders: list[torch.Tensor] = field(default_factory=list)  # positions decoded per step


class Sampler:
    """Runs generation on a :class:`TerraMind` network with a decoder."""

    def __init__(self, network: TerraMind, record_logits: bool = False) -> None:
        if not network.has_decoder:
            raise ValueError("generation needs a TerraMind network built with decoder embeddings")
        self.network = network
        self.record_logits = record_logits

    # -------------------------------------------------------------------------------------- context
    def context(
        self, inputs: Mapping[str, torch.Tensor], visible: Mapping[str, TargetState]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encoder pass over inputs and visible target tokens -> (ctx (B, N, D), cross-attention bias)."""
        net = self.network
        keyed = dict(inputs)
        masks = []
        for key, state in visible.items():
            if key not in net.encoder_embeddings:
                raise ValueError(f"{key} cannot condition generation: the network has no encoder embedding for it")
            keyed[key] = state.ids
        x, emb, spans = net.embed(keyed)
        for span in spans:
            seen = visible.get(span.key)
            hidden = ~seen.decoded if seen is not None and span.key not in inputs else None
            masks.append(
                hidden
                if hidden is not None
                else torch.zeros(x.shape[0], span.stop - span.start, dtype=torch.bool, device=x.device)
            )
        mask = torch.cat(masks, dim=1) if masks else None  # (B, N), True = hidden
        bias = key_padding_bias(mask, x.dtype) if mask is not None and bool(mask.any()) else None
        encoded = net.run_encoder(x + emb, bias, all_layers=False)[0]
        return net.decoder_context(encoded, emb), bias

    def unconditional_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Guidance baseline: every context token hidden (the reference empties all conditions)."""
        mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
        return context, key_padding_bias(mask, context.dtype)

    # ---------------------------------------------------------------------------------------- steps
    def _logits(self, target: Target, queries: torch.Tensor, ctx: torch.Tensor, bias) -> torch.Tensor:
        net = self.network
        logits = net.logits(target.key, net.run_decoder(queries, ctx, None, bias))
        cfg_scale = target.settings.cfg_scale
        if cfg_scale != 1.0:
            u_ctx, u_bias = self.unconditional_context(ctx)
            uncond = net.logits(target.key, net.run_decoder(queries, u_ctx, None, u_bias))
            logits = uncond + cfg_scale * (logits - uncond)
        return logits  # (B, n, V)

    def roar_step(
        self,
        target: Target,
        state: TargetState,
        count: int,
        temperature: float,
        ctx,
        bias,
        generator: torch.Generator | None,
    ) -> None:
        """Decode ``count`` random not-yet-decoded positions (one random order shared by the batch)."""
        remaining = (~state.decoded[0]).nonzero()[:, 0]  # (R,)
        order = remaining[torch.randperm(len(remaining), generator=generator).to(remaining.device)]
        positions = order[:count]  # (n,)
        batch = state.ids.shape[0]
        queries = self.network.image_queries(target.key, positions.expand(batch, -1), target.grid)
        logits = self._logits(target, queries, ctx, bias)
        settings = target.settings
        ids, _ = sample_tokens(logits, temperature, settings.top_k, settings.top_p, generator, confidence=False)
        state.ids[:, positions] = ids
        state.decoded[:, positions] = True
        state.orders.append(positions)
        self._record(state, logits, positions.expand(batch, -1))

    def maskgit_step(
        self,
        target: Target,
        state: TargetState,
        count: int,
        temperature: float,
        ctx,
        bias,
        generator: torch.Generator | None,
    ) -> None:
        """Sample every remaining position; keep the ``count`` most confident per sample."""
        batch = state.ids.shape[0]
        remaining = (~state.decoded).nonzero()[:, 1].view(batch, -1)  # (B, R), same R for all rows
        queries = self.network.image_queries(target.key, remaining, target.grid)
        logits = self._logits(target, queries, ctx, bias)
        ids, confidence = sample_tokens(logits, temperature, target.settings.top_k, target.settings.top_p, generator)
        assert confidence is not None  # asked for by default
        keep = confidence.topk(count, dim=1).indices  # (B, n)
        positions = remaining.gather(1, keep)
        state.ids.scatter_(1, positions, ids.gather(1, keep))
        state.decoded.scatter_(1, positions, True)
        state.orders.append(positions)
        self._record(state, logits, remaining)

    def _record(self, state: TargetState, logits: torch.Tensor, positions: torch.Tensor) -> None:
        if not self.record_logits or state.first_logits is not None:
            return
        batch, _, vocab = logits.shape
        full = logits.new_full((batch, state.ids.shape[1], vocab), float("nan"))
        full.scatter_(1, positions[..., None].expand(-1, -1, vocab), logits)
        state.first_logits = full

    # ------------------------------------------------------------------------------ autoregressive
    def autoregressive(self, target: Target, ctx, bias, generator: torch.Generator | None) -> torch.Tensor:
        """Sequence targets: decode left to right from the [S_1] sentinel until [S_2]/EOS; (B, L) ids."""
        net, settings = self.network, target.settings
        embedding: Any = net.decoder_embeddings[target.key]
        batch = ctx.shape[0]
        prefix = torch.full((batch, 1), SENTINEL_1, dtype=torch.long, device=ctx.device)
        for _ in range(target.num_tokens):
            x = embedding.token_emb(prefix) + embedding.pos_emb[:, : prefix.shape[1]] + embedding.mod_emb
            causal = torch.ones(prefix.shape[1], prefix.shape[1], dtype=torch.bool, device=ctx.device).triu(1)
            self_bias = key_padding_bias(causal.expand(batch, -1, -1), x.dtype)
            logits = net.logits(target.key, net.run_decoder(x, ctx, self_bias, bias))[:, -1]
            ids, _ = sample_tokens(
                logits, settings.temperature, settings.top_k, settings.top_p, generator, confidence=False
            )
            prefix = torch.cat([prefix, ids[:, None]], dim=1)
            if bool(((prefix == SENTINEL_2) | (prefix == EOS_ID)).any(dim=1).all()):
                break
        return prefix[:, 1:]

    # ------------------------------------------------------------------------------------ generate
    def generate(
        self,
        inputs: Mapping[str, torch.Tensor],
        targets: list[Target],
        generator: torch.Generator | None = None,
        chain: bool = True,
    ) -> dict[str, TargetState]:
        """Generate every target in order.

        Args:
            inputs: encoder inputs keyed by internal key (validated, standardized / tokenized).
            targets: what to generate, in order.
            generator: all randomness (order shuffles, multinomial draws).
            chain: condition each target on the targets generated before it (the reference's behaviour).
        """
        batch = next(iter(inputs.values())).shape[0]
        device = next(iter(inputs.values())).device
        finished: dict[str, TargetState] = {}
        for target in targets:
            state = TargetState(
                ids=torch.zeros(batch, target.num_tokens, dtype=torch.long, device=device),
                decoded=torch.zeros(batch, target.num_tokens, dtype=torch.bool, device=device),
            )
            conditions = dict(finished) if chain else {}
            if target.scheme == "autoregressive":
                ctx, bias = self.context(inputs, conditions)
                ids = self.autoregressive(target, ctx, bias, generator)
                state.ids, state.decoded = ids, torch.ones_like(ids, dtype=torch.bool)
            else:
                self._decode_image(target, state, inputs, conditions, generator)
            finished[target.key] = state
        return finished

    def _decode_image(
        self, target: Target, state: TargetState, inputs, conditions, generator: torch.Generator | None
    ) -> None:
        counts = target.counts()
        temps = temperature_schedule(target.settings.temperature_schedule, target.settings.temperature, counts)
        step = self.roar_step if target.scheme == "roar" else self.maskgit_step
        if target.scheme not in ("roar", "maskgit"):
            raise ValueError(f"unknown decoding scheme {target.scheme!r} for {target.key}")
        for index, (count, temperature) in enumerate(zip(counts, temps)):
            visible = dict(conditions)
            if index > 0:
                visible[target.key] = state  # already decoded tokens condition the next step
            ctx, bias = self.context(inputs, visible)
            step(target, state, count, temperature, ctx, bias, generator)
