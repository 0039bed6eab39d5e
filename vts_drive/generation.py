"""Answer several prompts about one window with one prefill of its visual context.

1. Prefill the shared prefix (system text + cameras + frames) once, batch 1.
   The system turn sees no visual token, so its K/V are the same in every
   window: a HeadCache computes them once and later windows start from them.
2. Branch the KV cache into one row per prompt and prefill the prompts'
   suffixes as right-padded batches of similar length (a long prompt, such as
   the risk question's answer format, would otherwise pad every short one).
3. Decode all prompts together, one token per row per step; a row that ends
   its turn leaves the batch, until every row has ended or hit max_new_tokens.
A GenerationMeter, when given, counts what this costs (bench and naive.py read it).

Per-step overhead, not FLOPs, dominates decoding a small batch, so decoding
the prompts of a window together is much cheaper than one after another.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig

from vts_drive.backend import LanguageStage
from vts_drive.box_grammar import BoxConstraint
from vts_drive.flops import prefix_prefill_flops, qwen2_pair_flops, qwen2_token_flops, suffix_prefill_flops
from vts_drive.measure import StageTimer, synchronize
from vts_drive.model.kv_cache import KVCache
from vts_drive.prompt import VisualContext


class GenerationMeter:
    """What answering one window's prompts costs the LLM, with one definition for every mode
    (the pipeline's and naive.py's alike): FLOPs counted from shapes, the most K/V cache bytes
    the window's prompts hold at once, and the time to the first answer token."""

    def __init__(self, text_config: PretrainedConfig) -> None:
        self.text_config = text_config
        self.start = time.perf_counter()  # the window handed in
        self.prefill_flops = 0.0
        self.decode_flops = 0.0
        self.kv_cache_bytes = 0
        self.first_token_time: float | None = (
            None  # time.perf_counter() when the first answer token was picked
        )

    def prefilled(self, prefix_entries: list[int], cached: int, suffix_lengths: list[int]) -> None:
        """A prefix after which layer l holds prefix_entries[l] entries (the first `cached` of them
        kept from an earlier window), then prompt suffixes over it, each with its first token's logits."""
        config = self.text_config
        self.prefill_flops += prefix_prefill_flops(config, prefix_entries, cached)
        self.prefill_flops += suffix_prefill_flops(config, prefix_entries, suffix_lengths)

    def decoded(self, rows: int, entries: int) -> None:
        """One decode step of `rows` rows, each attending over `entries` K/V entries (all layers)."""
        config = self.text_config
        token = (
            config.num_hidden_layers * qwen2_token_flops(config)
            + 2.0 * config.hidden_size * config.vocab_size
        )
        self.decode_flops += rows * (token + qwen2_pair_flops(config) * entries)

    def held(self, nbytes: int) -> None:
        """K/V bytes held at one moment."""
        self.kv_cache_bytes = max(self.kv_cache_bytes, nbytes)

    def first_token(self, device: torch.device) -> None:
        if self.first_token_time is None:
            synchronize(device)
            self.first_token_time = time.perf_counter()

    @property
    def ttft_ms(self) -> float:
        return ((self.first_token_time or time.perf_counter()) - self.start) * 1000.0


class HeadCache:
    """The K/V of the prompt head every window starts with (the system turn), kept between
    windows as a server keeps a shared system prompt's. Valid for one decoder whose weights
    do not change; a head that differs from the one held is computed afresh."""

    def __init__(self) -> None:
        self.head: torch.Tensor | None = None  # [H, D] embeds of the head held
        self.cache: KVCache | None = None

    def start(self, decoder: LanguageStage, context: VisualContext) -> KVCache:
        """A single-row cache holding the head's entries, for the prefill of the rest of the prefix."""
        head = context.embeds[: context.head_length]
        if self.cache is None or self.head is None or not torch.equal(head, self.head):
            self.cache = KVCache(decoder.num_layers)
            positions = torch.arange(context.head_length, device=head.device).unsqueeze(0)  # [1, H]
            decoder(head.unsqueeze(0), positions, cache=self.cache)  # text only: no layer routes
            self.head = head
        started = KVCache(decoder.num_layers)
        started.layers = list(self.cache.layers)  # appending makes new tensors: the held entries stay
        return started


@dataclass
class Prefilled:
    """The prompts of a window after prefill, one cache row each, ready to decode."""

    cache: KVCache
    logits: torch.Tensor  # [P, V] each row's next-token logits
    rows: list[int]  # the prompt of each cache row
    next_positions: torch.Tensor  # [P] each row's next position


def prefill(
    decoder: LanguageStage,
    context: VisualContext,
    suffixes: list[list[int]],
    pad_id: int = 0,
    head_cache: HeadCache | None = None,
    meter: GenerationMeter | None = None,
) -> Prefilled:
    """The shared prefix once (from the head `head_cache` keeps, if given), then the prompts'
    suffixes (token ids) in length buckets over branches of its cache."""
    device = context.embeds.device
    if head_cache is not None:
        cached, prefix_cache = context.head_length, head_cache.start(decoder, context)
    else:
        cached, prefix_cache = 0, KVCache(decoder.num_layers)
    prefix_positions = torch.arange(cached, context.length, device=device).unsqueeze(0)  # [1, Lp - cached]
    plan = decoder.routing_plan(context.frame_index[cached:].unsqueeze(0))
    decoder(context.embeds[cached:].unsqueeze(0), prefix_positions, cache=prefix_cache, plan=plan)
    prefix_entries = [prefix_cache.entries(layer) for layer in range(decoder.num_layers)]

    lengths = [len(ids) for ids in suffixes]
    buckets = length_buckets(lengths)
    caches, last_hidden = [], []
    for rows in buckets:
        cache = prefix_cache.branch()
        last_hidden.append(
            prefill_suffixes(decoder, [suffixes[row] for row in rows], context.length, cache, pad_id)
        )
        caches.append(cache)
    cache = KVCache.pool_rows(caches)  # rows in bucket order, no padding between prompts
    rows = [row for bucket in buckets for row in bucket]
    if meter is not None:
        meter.prefilled(prefix_entries, cached, lengths)
        meter.held(cache.nbytes())
    return Prefilled(
        cache=cache,
        logits=decoder.logits(torch.cat(last_hidden)),
        rows=rows,
        next_positions=context.length + torch.tensor([lengths[row] for row in rows], device=device),
    )


def decode(
    decoder: LanguageStage,
    state: Prefilled,
    stop_ids: set[int],
    max_new_tokens: int,
    constraints: list[BoxConstraint | None] | None = None,
    meter: GenerationMeter | None = None,
) -> list[list[int]]:
    """Greedy answers, one per prompt without its end-of-turn token: every row one token per
    step, a row leaving the batch when it ends its turn. `constraints`: per prompt, what keeps
    its answer well formed (None: free)."""
    cache, logits, active, next_positions = state.cache, state.logits, state.rows, state.next_positions
    device = logits.device
    answers: list[list[int]] = [[] for _ in active]
    stop = torch.tensor(sorted(stop_ids), device=device)
    for step in range(max_new_tokens):
        if constraints is not None:
            logits = constrain(logits, [constraints[row] for row in active], [answers[row] for row in active])
        tokens = logits.argmax(dim=-1)  # [A]
        if meter is not None:
            meter.first_token(device)
        ended = torch.isin(tokens, stop)
        for row, token, row_ended in zip(active, tokens.tolist(), ended.tolist()):
            if not row_ended:
                answers[row].append(token)
        if bool(ended.all()) or step == max_new_tokens - 1:
            break
        if bool(ended.any()):
            going = (~ended).nonzero().squeeze(1)
            active = [active[i] for i in going.tolist()]
            tokens, next_positions = tokens[going], next_positions[going]
            cache = cache.select_rows(going)
        hidden = decoder(decoder.embed(tokens.unsqueeze(1)), next_positions.unsqueeze(1), cache=cache)
        if meter is not None:
            meter.decoded(len(active), sum(cache.entries(layer) for layer in range(decoder.num_layers)))
            meter.held(cache.nbytes())
        logits = decoder.logits(hidden[:, 0])
        next_positions = next_positions + 1
    return answers


@torch.no_grad()
def generate(
    decoder: LanguageStage,
    context: VisualContext,
    suffixes: list[list[int]],
    stop_ids: set[int],
    max_new_tokens: int,
    timer: StageTimer,
    pad_id: int = 0,
    constraints: list[BoxConstraint | None] | None = None,
    head_cache: HeadCache | None = None,
    meter: GenerationMeter | None = None,
) -> list[list[int]]:
    """prefill, then decode, each timed as a stage; token ids per prompt (see both)."""
    with timer.stage("prefill"):
        state = prefill(decoder, context, suffixes, pad_id, head_cache, meter)
    with timer.stage("decode"):
        return decode(decoder, state, stop_ids, max_new_tokens, constraints, meter)


def constrain(
    logits: torch.Tensor, constraints: list[BoxConstraint | None], generated: list[list[int]]
) -> torch.Tensor:
    """logits [A, V] with the tokens each row's constraint rules out at this step set to -inf."""
    masks = []
    for row, (constraint, ids) in enumerate(zip(constraints, generated)):
        mask = constraint.allowed(ids, logits.shape[1]) if constraint is not None else None
        if mask is not None:
            masks.append((row, mask))
    if not masks:
        return logits
    logits = logits.clone()
    for row, mask in masks:
        logits[row].masked_fill_(~mask.to(logits.device), float("-inf"))
    return logits


def length_buckets(lengths: list[int]) -> list[list[int]]:
    """Row indices grouped by length, longest first; a row joins the current group while it is
    more than half as long as the group's longest, so padding never doubles a row."""
    buckets: list[list[int]] = []
    for row in sorted(range(len(lengths)), key=lambda r: -lengths[r]):
        if buckets and 2 * lengths[row] > lengths[buckets[-1][0]]:
            buckets[-1].append(row)
        else:
            buckets.append([row])
    return buckets


def prefill_suffixes(
    decoder: LanguageStage, suffixes: list[list[int]], start: int, cache: KVCache, pad_id: int
) -> torch.Tensor:
    """Prompt suffixes (token ids) after a prefix of `start` tokens, as one right-padded batch on
    a branched cache -> the hidden state at each suffix's last token [P, D]."""
    prefix = cache.shared[0]
    if prefix is None:
        raise ValueError("prompt suffixes follow a prefix: give a cache branched off one")
    device = prefix.keys.device
    lengths = torch.tensor([len(ids) for ids in suffixes], device=device)  # [P]
    width = int(lengths.max())
    ids = torch.full((len(suffixes), width), pad_id, dtype=torch.long, device=device)
    for row, row_ids in enumerate(suffixes):
        ids[row, : len(row_ids)] = torch.tensor(row_ids, device=device)
    columns = torch.arange(width, device=device).unsqueeze(0)  # [1, Ls]
    valid = columns < lengths.unsqueeze(1)  # [P, Ls]
    positions = (start + columns).expand(len(suffixes), -1)  # [P, Ls]
    hidden = decoder(decoder.embed(ids), positions, valid, cache)  # [P, Ls, D]
    return hidden[torch.arange(len(suffixes), device=device), lengths - 1]
