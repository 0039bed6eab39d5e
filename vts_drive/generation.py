"""Answer several prompts about one window with one prefill of its visual context.

1. Prefill the shared prefix (system text + cameras + frames) once, batch 1.
2. Branch the KV cache into one row per prompt and prefill each prompt's
   suffix as one right-padded batch.
3. Decode all prompts together, one token per row per step, until every row
   has ended its turn or hit max_new_tokens.

Per-step overhead, not FLOPs, dominates decoding a small batch, so decoding
the prompts of a window together is much cheaper than one after another.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

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
    kv_cache_bytes: int  # cache held at the end of decoding
    prefix_entries: list[int]  # K/V entries per layer after the prefix prefill (fewer in routed layers)
    prefill_flops: float  # LLM FLOPs of the prefix and suffix prefills, counted from shapes
    decode_flops: float  # LLM FLOPs of the decode steps, counted from shapes
    first_token_time: float  # time.perf_counter() when the first answer token was picked


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
) -> Generation:
    device = context.embeds.device
    generator = None
    if sampling.seed is not None:
        generator = torch.Generator(device=device).manual_seed(sampling.seed)

    with timer.stage("prefill"):
        prefix_cache = KVCache(decoder.num_layers)
        prefix_positions = torch.arange(context.length, device=device).unsqueeze(0)  # [1, Lp]
        plan = decoder.routing_plan(context.frame_index.unsqueeze(0))
        decoder(context.embeds.unsqueeze(0), prefix_positions, cache=prefix_cache, plan=plan)
        prefix_entries = [prefix_cache.entries(layer) for layer in range(decoder.num_layers)]

        batch = len(suffixes)
        lengths = torch.tensor([len(ids) for ids in suffixes], device=device)  # [P]
        width = int(lengths.max())
        suffix_ids = torch.full((batch, width), pad_id, dtype=torch.long, device=device)
        for row, ids in enumerate(suffixes):
            suffix_ids[row, : len(ids)] = torch.tensor(ids, device=device)
        columns = torch.arange(width, device=device).unsqueeze(0)  # [1, Ls]
        suffix_valid = columns < lengths.unsqueeze(1)  # [P, Ls]
        suffix_positions = (context.length + columns).expand(batch, -1)  # [P, Ls]
        cache = prefix_cache.branch()
        hidden = decoder(decoder.embed(suffix_ids), suffix_positions, suffix_valid, cache)  # [P, Ls, D]
        logits = decoder.logits(hidden[torch.arange(batch, device=device), lengths - 1])  # [P, V]

    text_config = decoder.config
    token_flops = decoder.num_layers * qwen2_token_flops(text_config) + 2.0 * text_config.hidden_size * text_config.vocab_size
    pair_flops = qwen2_pair_flops(text_config)
    decode_flops = 0.0
    with timer.stage("decode"):
        next_positions = context.length + lengths  # [P]
        stop = torch.tensor(sorted(stop_ids), device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        generated: list[torch.Tensor] = []
        for step in range(sampling.max_new_tokens):
            tokens = pick_next(logits, sampling, generator)  # [P]
            tokens = tokens.masked_fill(finished, pad_id)
            generated.append(tokens)
            if step == 0:
                synchronize(device)
                first_token_time = time.perf_counter()
            finished |= torch.isin(tokens, stop)
            if bool(finished.all()) or step == sampling.max_new_tokens - 1:
                break
            hidden = decoder(
                decoder.embed(tokens.unsqueeze(1)), next_positions.unsqueeze(1), ~finished.unsqueeze(1), cache
            )
            entries = sum(cache.entries(layer) for layer in range(decoder.num_layers))
            decode_flops += batch * (token_flops + pair_flops * entries)
            logits = decoder.logits(hidden[:, 0])
            next_positions = next_positions + 1

    token_rows = torch.stack(generated, dim=1).tolist() if generated else [[] for _ in suffixes]
    answers = []
    for row in token_rows:
        ids = []
        for token in row:
            if token in stop_ids:
                break
            ids.append(token)
        answers.append(ids)
    return Generation(
        token_ids=answers,
        prompt_tokens=context.length + int(lengths.sum()),
        kv_cache_bytes=cache.nbytes(),
        prefix_entries=prefix_entries,
        prefill_flops=prefix_prefill_flops(text_config, prefix_entries)
        + suffix_prefill_flops(text_config, prefix_entries, lengths.tolist()),
        decode_flops=decode_flops,
        first_token_time=first_token_time,
    )
