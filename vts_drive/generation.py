"""Answer several prompts about one window with one prefill of its visual context.

1. Prefill the shared prefix (system text + cameras + frames) once, batch 1.
   The system turn sees no visual token, so its K/V are the same in every
   window: a HeadCache computes them once and later windows start from them.
2. Branch the KV cache into one row per prompt and prefill the prompts'
   suffixes as right-padded batches of similar length (a long prompt, such as
   the risk question's answer format, would otherwise pad every short one).
3. Decode all prompts together, one token per row per step; a row that ends
   its turn leaves the batch, until every row has ended or hit max_new_tokens.

Per-step overhead, not FLOPs, dominates decoding a small batch, so decoding
the prompts of a window together is much cheaper than one after another.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from vts_drive.box_grammar import BoxConstraint
from vts_drive.flops import prefix_prefill_flops, qwen2_pair_flops, qwen2_token_flops, suffix_prefill_flops
from vts_drive.measure import StageTimer, synchronize
from vts_drive.model.decoder import Qwen2Decoder
from vts_drive.model.kv_cache import KVCache
from vts_drive.prompt import VisualContext


@dataclass
class SamplingConfig:
    max_new_tokens: int = 48
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None


@dataclass
class Generation:
    token_ids: list[list[int]]  # per prompt, without the end-of-turn token
    prompt_tokens: int  # prefix + all suffixes
    kv_cache_bytes: int  # most cache held at once while decoding
    prefix_entries: list[int]  # K/V entries per layer after the prefix prefill (fewer in routed layers)
    prefill_flops: float  # LLM FLOPs of the prefix and suffix prefills, counted from shapes
    decode_flops: float  # LLM FLOPs of the decode steps, counted from shapes
    first_token_time: float  # time.perf_counter() when the first answer token was picked


class HeadCache:
    """The K/V of the prompt head every window starts with (the system turn), kept between
    windows as a server keeps a shared system prompt's. Valid for one decoder whose weights
    do not change; a head that differs from the one held is computed afresh."""

    def __init__(self) -> None:
        self.head: torch.Tensor | None = None  # [H, D] embeds of the head held
        self.cache: KVCache | None = None

    def start(self, decoder: Qwen2Decoder, context: VisualContext) -> KVCache:
        """A single-row cache holding the head's entries, for the prefill of the rest of the prefix."""
        head = context.embeds[: context.head_length]
        if self.head is None or not torch.equal(head, self.head):
            self.cache = KVCache(decoder.num_layers)
            positions = torch.arange(context.head_length, device=head.device).unsqueeze(0)  # [1, H]
            decoder(head.unsqueeze(0), positions, cache=self.cache)  # text only: no layer routes
            self.head = head
        started = KVCache(decoder.num_layers)
        started.layers = list(self.cache.layers)  # appending makes new tensors: the held entries stay
        return started


def pick_next(logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """logits [B, V] -> token ids [B]."""
    if sampling.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs > sampling.top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    decoder: Qwen2Decoder,
    context: VisualContext,
    suffixes: list[list[int]],
    stop_ids: set[int],
    sampling: SamplingConfig,
    timer: StageTimer,
    pad_id: int = 0,
    constraints: list[BoxConstraint | None] | None = None,
    head_cache: HeadCache | None = None,
) -> Generation:
    """`constraints`: per prompt, what keeps its answer well formed (None: free). `head_cache`:
    where the system turn's K/V are kept between windows (None: prefilled with the rest)."""
    device = context.embeds.device
    generator = None
    if sampling.seed is not None:
        generator = torch.Generator(device=device).manual_seed(sampling.seed)

    with timer.stage("prefill"):
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
            last_hidden.append(prefill_suffixes(decoder, [suffixes[row] for row in rows], context.length, cache, pad_id))
            caches.append(cache)
        cache = KVCache.pool_rows(caches)  # rows in bucket order, no padding between prompts
        logits = decoder.logits(torch.cat(last_hidden))  # [P, V]

    text_config = decoder.config
    token_flops = decoder.num_layers * qwen2_token_flops(text_config) + 2.0 * text_config.hidden_size * text_config.vocab_size
    pair_flops = qwen2_pair_flops(text_config)
    decode_flops = 0.0
    cache_bytes = cache.nbytes()
    answers: list[list[int]] = [[] for _ in suffixes]
    with timer.stage("decode"):
        active = [row for rows in buckets for row in rows]  # the prompt of each cache row
        next_positions = context.length + torch.tensor([lengths[row] for row in active], device=device)  # [A]
        stop = torch.tensor(sorted(stop_ids), device=device)
        for step in range(sampling.max_new_tokens):
            if constraints is not None:
                logits = constrain(logits, [constraints[row] for row in active], [answers[row] for row in active])
            tokens = pick_next(logits, sampling, generator)  # [A]
            if step == 0:
                synchronize(device)
                first_token_time = time.perf_counter()
            ended = torch.isin(tokens, stop)
            for row, token, row_ended in zip(active, tokens.tolist(), ended.tolist()):
                if not row_ended:
                    answers[row].append(token)
            if bool(ended.all()) or step == sampling.max_new_tokens - 1:
                break
            if bool(ended.any()):
                going = (~ended).nonzero().squeeze(1)
                active = [active[i] for i in going.tolist()]
                tokens, next_positions = tokens[going], next_positions[going]
                cache = cache.select_rows(going)
            hidden = decoder(decoder.embed(tokens.unsqueeze(1)), next_positions.unsqueeze(1), cache=cache)
            entries = sum(cache.entries(layer) for layer in range(decoder.num_layers))
            decode_flops += len(active) * (token_flops + pair_flops * entries)
            cache_bytes = max(cache_bytes, cache.nbytes())
            logits = decoder.logits(hidden[:, 0])
            next_positions = next_positions + 1

    return Generation(
        token_ids=answers,
        prompt_tokens=context.length + sum(lengths),
        kv_cache_bytes=cache_bytes,
        prefix_entries=prefix_entries,
        prefill_flops=prefix_prefill_flops(text_config, prefix_entries, cached)
        + suffix_prefill_flops(text_config, prefix_entries, lengths),
        decode_flops=decode_flops,
        first_token_time=first_token_time,
    )


def constrain(logits: torch.Tensor, constraints: list[BoxConstraint | None], generated: list[list[int]]) -> torch.Tensor:
    """logits [A, V] with the tokens each row's constraint rules out at this step set to -inf."""
    masks = [(row, c.allowed(ids, logits.shape[1])) for row, (c, ids) in enumerate(zip(constraints, generated)) if c is not None]
    masks = [(row, mask) for row, mask in masks if mask is not None]
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


def prefill_suffixes(decoder: Qwen2Decoder, suffixes: list[list[int]], start: int, cache: KVCache, pad_id: int) -> torch.Tensor:
    """Prompt suffixes (token ids) after a prefix of `start` tokens, as one right-padded batch on
    a branched cache -> the hidden state at each suffix's last token [P, D]."""
    device = cache.shared[0].keys.device
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
