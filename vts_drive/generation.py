"""Answer several prompts about one window with one prefill of its visual context.

1. Prefill the shared prefix (system text + cameras + frames) once, batch 1.
   The system turn sees no visual token, so its K/V are the same in every
   window: a HeadCache computes them once and later windows start from them.
2. Branch the KV cache into one row per prompt and prefill the prompts'
   suffixes as right-padded batches of similar length (a long prompt, such as
   the risk question's answer format, would otherwise pad every short one).
3. Decode all prompts together, one token per row per step; a row that ends
   its turn leaves the batch, until every row has ended or hit max_new_tokens.
   Given drafts (in a stream, each prompt's answer in the previous window), a
   step also verifies each row's draft continuation and keeps what greedy
   decoding would have picked anyway, several tokens for one decoder pass.
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
from vts_drive.drafts import Draft, DraftLengths, DraftSources
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
        self.decode_steps = 0  # decoder passes of decoding
        self.drafted = 0  # draft tokens fed to be verified (decode's drafts)
        self.accepted = 0  # of them, those the greedy picks agreed with

    def prefilled(self, prefix_entries: list[int], cached: int, suffix_lengths: list[int]) -> None:
        """A prefix after which layer l holds prefix_entries[l] entries (the first `cached` of them
        kept from an earlier window), then prompt suffixes over it, each with its first token's logits."""
        config = self.text_config
        self.prefill_flops += prefix_prefill_flops(config, prefix_entries, cached)
        self.prefill_flops += suffix_prefill_flops(config, prefix_entries, suffix_lengths)

    def decoded(self, tokens: int, entries: int) -> None:
        """One decode step feeding `tokens` tokens (all rows, drafts included), each attending over
        `entries` K/V entries (all layers)."""
        config = self.text_config
        token = (
            config.num_hidden_layers * qwen2_token_flops(config)
            + 2.0 * config.hidden_size * config.vocab_size
        )
        self.decode_flops += tokens * (token + qwen2_pair_flops(config) * entries)
        self.decode_steps += 1

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
    suffixes (token ids) in passes of similar length (pass_groups) over branches of its cache."""
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
    groups = pass_groups(lengths)
    caches, last_hidden = [], []
    for rows in groups:
        cache = prefix_cache.branch()
        last_hidden.append(
            prefill_suffixes(decoder, [suffixes[row] for row in rows], context.length, cache, pad_id)
        )
        caches.append(cache)
    cache = KVCache.pool_rows(caches)  # rows in pass order, no padding between prompts
    rows = [row for group in groups for row in group]
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
    drafts: list[Draft] | None = None,
) -> list[list[int]]:
    """Greedy answers, one per prompt without its end-of-turn token: every row one token per
    step, a row leaving the batch when it ends its turn. `constraints`: per prompt, what keeps
    its answer well formed (None: free). `drafts`: earlier answers the answers likely repeat
    (drafts.py): a step then also feeds each row a continuation drafted from them after its
    token and keeps the longest prefix its greedy picks agree with, plus its pick after that,
    so the answers are those decoding without drafts gives, in fewer steps; the entries of
    draft tokens not kept are discarded."""
    device = state.logits.device
    answers: list[list[int]] = [[] for _ in state.rows]
    undrafted: list[list[int]] = [[] for _ in state.rows]  # the prefill's picks come before any draft
    picks = greedy_picks(state.logits, state.rows, undrafted, answers, constraints)
    if meter is not None:
        meter.first_token(device)
    _, tokens = accept(state.rows, undrafted, picks, answers, stop_ids, max_new_tokens, meter)
    cache, rows = state.cache, state.rows
    positions = state.next_positions  # [A] of each row's next token
    draft_lengths = DraftLengths(len(state.rows), max_new_tokens)
    sources = DraftSources(drafts, len(state.rows)) if drafts is not None else None
    while going := [index for index, token in enumerate(tokens) if token is not None]:
        if len(going) < len(rows):
            still = torch.tensor(going, device=device)
            rows, cache, positions = [rows[i] for i in going], cache.select_rows(still), positions[still]
        fed_tokens = [token for token in tokens if token is not None]
        # within the room left: accepted draft tokens and the pick after them stay within max_new_tokens
        fed: list[list[int]] = [[] for _ in rows]
        if sources is not None:
            sources.sync(answers)
            fed = [
                sources.continuation(
                    row, answers[row], min(draft_lengths.limit(row), max_new_tokens - len(answers[row]) - 1)
                )
                for row in rows
            ]
        groups = pass_groups([1 + len(draft) for draft in fed])
        caches: list[KVCache] = []
        order: list[int] = []  # the rows as the passes took them
        following: list[int | None] = []
        kept: list[int] = []
        for group in groups:
            index = torch.tensor(group, device=device)
            part = cache if len(groups) == 1 else cache.select_rows(index)
            part_rows, part_fed = [rows[i] for i in group], [fed[i] for i in group]
            logits = feed(decoder, part, [fed_tokens[i] for i in group], part_fed, positions[index], meter)
            picks = greedy_picks(logits, part_rows, part_fed, answers, constraints)
            part_kept, part_following = accept(
                part_rows, part_fed, picks, answers, stop_ids, max_new_tokens, meter
            )
            for row, draft, row_kept in zip(part_rows, part_fed, part_kept):
                draft_lengths.verified(row, len(draft), row_kept - 1)
            width = 1 + max(len(draft) for draft in part_fed)
            if min(part_kept) < width:  # a draft token rejected, or a row padded
                part.keep_new(torch.tensor(part_kept, device=device), width)
            caches.append(part)
            order += group
            following += part_following
            kept += part_kept
        index = torch.tensor(order, device=device)
        rows, tokens = [rows[i] for i in order], following
        positions = positions[index] + torch.tensor(kept, device=device)
        cache = caches[0] if len(caches) == 1 else KVCache.cat_rows(caches)
    return answers


# A decoder pass costs about as much as this many more tokens in it (per-pass overhead on a CPU,
# small models); prefill groups the prompt suffixes, and decode the rows of a step, into passes
# to spend the least.
PASS_TOKENS = 20


def pass_groups(lengths: list[int]) -> list[list[int]]:
    """Rows (indices) grouped into decoder passes by the tokens each feeds: a pass computes its
    rows x its longest row's tokens, padding included, and PASS_TOKENS more; of the groupings
    of the rows sorted by length, the cheapest. Equal lengths make one pass; a long prompt
    suffix (the risk question's answer format) gets a pass of its own rather than padding every
    short one."""
    order = sorted(range(len(lengths)), key=lambda row: -lengths[row])
    cost = [0] + [0] * len(order)  # cost[i]: of the first i rows in order
    start = [0] * (len(order) + 1)  # start[i]: where the last pass of the first i rows starts
    for end in range(1, len(order) + 1):
        cost[end], start[end] = min(
            (cost[first] + PASS_TOKENS + (end - first) * lengths[order[first]], first) for first in range(end)
        )
    groups, end = [], len(order)
    while end:
        groups.append(sorted(order[start[end] : end]))  # in row order: one pass takes the rows as they are
        end = start[end]
    return groups[::-1]


def feed(
    decoder: LanguageStage,
    cache: KVCache,
    tokens: list[int],
    fed: list[list[int]],
    positions: torch.Tensor,
    meter: GenerationMeter | None,
) -> torch.Tensor:
    """One decoder pass over each row's token at positions [A] and its draft tokens after it,
    rows right-padded to the longest -> the logits after each token fed, row by row [N, V]."""
    device = positions.device
    width = 1 + max(len(draft) for draft in fed)
    ids = torch.tensor(
        [[token, *draft, *[token] * (width - 1 - len(draft))] for token, draft in zip(tokens, fed)],
        device=device,
    )  # [A, W]
    columns = torch.arange(width, device=device).unsqueeze(0)  # [1, W]
    valid = columns < torch.tensor([1 + len(draft) for draft in fed], device=device).unsqueeze(1)  # [A, W]
    hidden = decoder(decoder.embed(ids), positions.unsqueeze(1) + columns, valid, cache)  # [A, W, D]
    logits = decoder.logits(hidden[valid])  # [N, V]
    if meter is not None:
        meter.decoded(logits.shape[0], sum(cache.entries(layer) for layer in range(decoder.num_layers)))
        meter.held(cache.nbytes())
    return logits


def accept(
    rows: list[int],
    fed: list[list[int]],
    picks: list[list[int]],
    answers: list[list[int]],
    stop_ids: set[int],
    max_new_tokens: int,
    meter: GenerationMeter | None,
) -> tuple[list[int], list[int | None]]:
    """Each row's draft tokens up to the first its greedy picks disagree with, then its pick
    after them, onto its answer. Returns per row the tokens fed that stay (its token and the
    draft tokens accepted) and the token it feeds next (None: it ended its turn or its answer
    is max_new_tokens long)."""
    kept: list[int] = []
    following: list[int | None] = []
    for row, draft, picked in zip(rows, fed, picks):
        accepted = 0
        while (
            accepted < len(draft) and picked[accepted] == draft[accepted] and draft[accepted] not in stop_ids
        ):
            accepted += 1
        answers[row] += draft[:accepted]
        token = picked[accepted]
        if token not in stop_ids:
            answers[row].append(token)
        kept.append(1 + accepted)
        following.append(token if token not in stop_ids and len(answers[row]) < max_new_tokens else None)
        if meter is not None:
            meter.drafted, meter.accepted = meter.drafted + len(draft), meter.accepted + accepted
    return kept, following


def greedy_picks(
    logits: torch.Tensor,
    rows: list[int],
    fed: list[list[int]],
    answers: list[list[int]],
    constraints: list[BoxConstraint | None] | None,
) -> list[list[int]]:
    """Each row's greedy picks after its token and after each draft token it was fed, up to the
    first that disagrees with the draft; logits [N, V] hold them row by row. A row's constraint,
    after draft token j, sees the row's answer followed by the draft's first j tokens: a draft
    token the grammar forbids is never the pick, so it is rejected."""
    flat = logits.argmax(dim=-1).tolist()  # [N] the picks of unconstrained rows
    picks, start = [], 0
    for row, draft in zip(rows, fed):
        constraint = constraints[row] if constraints is not None else None
        picked: list[int] = []
        for j in range(len(draft) + 1):
            pick = flat[start + j]
            if constraint is not None:
                column = logits[start + j : start + j + 1]  # [1, V]
                pick = int(constrain(column, [constraint], [answers[row] + draft[:j]]).argmax())
            picked.append(pick)
            if j == len(draft) or pick != draft[j]:
                break
        picks.append(picked)
        start += len(draft) + 1
    return picks


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
    drafts: list[Draft] | None = None,
) -> list[list[int]]:
    """prefill, then decode, each timed as a stage; token ids per prompt (see both)."""
    with timer.stage("prefill"):
        state = prefill(decoder, context, suffixes, pad_id, head_cache, meter)
    with timer.stage("decode"):
        return decode(decoder, state, stop_ids, max_new_tokens, constraints, meter, drafts)


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
