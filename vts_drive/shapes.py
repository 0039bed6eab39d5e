"""The sizes of what answering a window feeds the LLM, from the window's layout alone.

generate() (generation.py) calls the decoder the same way in every window: the
system turn once (HeadCache), the rest of the prefix, the prompt suffixes in
passes of similar length over the branched prefix, then one token per row per step over
the prompts pooled into the prefix. So the sizes of every call follow from the
prefix layout (prompt.PrefixLayout: which tokens are text, which frame each
visual token belongs to), the prompts' token counts, max_new_tokens and the
routed layers' r. The pipeline checks a window against the model's context and
against an export with them, and `vts-drive export` sizes the TensorRT
profiles with them, so the profiles hold exactly what the pipeline feeds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields

from vts_drive.errors import InputError
from vts_drive.generation import pass_groups
from vts_drive.mod.routing import kept_tokens


@dataclass(frozen=True)
class GenerationShapes:
    """The largest size of each axis of the graph inputs one window's answers need."""

    frames: int  # frames with visual tokens: the vision tower's and keyframe scorer's batch at most
    slots: int  # most visual tokens of one frame (a routed llm_prefill's frame_slots)
    head: int  # system-turn tokens: the entries llm_prefill takes as past (HeadCache)
    prefill: int  # most tokens one llm_prefill call computes: the system turn, or the prefix after it
    prefill_text: int  # most text tokens among them (a routed llm_prefill's text_index)
    kept: int  # visual tokens a routed layer computes (keep_slots); 0 without routing
    prompts: int  # prompt rows: llm_decode's batch
    head_rows: int  # most rows of one llm_head call: a prompt's next token each, or a draft pass's tokens
    prompt_tokens: int  # the longest prompt suffix
    decode_tokens: int  # llm_decode's length: the longest suffix, or a row's token and draft in one pass
    embed_tokens: int  # most tokens one llm_embed call looks up
    prefix: int  # prefix entries llm_decode attends to, prompts pooled in, in a layer computing every token
    routed_prefix: int  # the same in a routed layer, which holds only the visual tokens it computed
    past: int  # a row's own entries llm_decode takes: its answer tokens but the last
    positions: int  # positions the longest answer reaches, which the model's context must hold

    def exceeding(self, limits: GenerationShapes) -> list[str]:
        """'name size > limit' for each size beyond `limits`."""
        return [
            f"{field.name} {size} > {limit}"
            for field, size, limit in zip(fields(self), astuple(self), astuple(limits))
            if size > limit
        ]

    def check_fits(self, limits: GenerationShapes, window: str, engines: str) -> None:
        """InputError naming `engines` when a size is beyond the export's `limits`."""
        exceeding = self.exceeding(limits)
        if exceeding:
            raise InputError(
                f"{window} needs {', '.join(exceeding)} (the largest the engines in {engines} were "
                "exported for): export again with larger --cameras, --frames, --prompts, "
                "--prompt-tokens or --new-tokens, and the run's draft setting"
            )


def generation_shapes(
    frame_index: Sequence[int],
    head: int,
    prompt_tokens: Sequence[int],
    new_tokens: int,
    keep_ratio: float | None,
    drafts: bool,
) -> GenerationShapes:
    """Sizes for a prefix whose tokens come from `frame_index` (each visual token's frame, -1
    for text; the first `head` tokens the system turn) and prompts of `prompt_tokens` suffix
    tokens, answers running to `new_tokens`; `keep_ratio`: the routed layers' r (None: none);
    `drafts`: whether decoding verifies drafts (generation.decode)."""
    visual = Counter(frame for frame in frame_index if frame >= 0)  # frame -> its visual tokens
    length, text = len(frame_index), len(frame_index) - sum(visual.values())
    pooled, longest = sum(prompt_tokens), max(prompt_tokens)
    kept = sum(kept_tokens(keep_ratio, count) for count in visual.values()) if keep_ratio is not None else 0
    groups = pass_groups(list(prompt_tokens))
    # a decode pass feeds each row its token, with drafts also up to the answer's room after the first
    # token: new_tokens - 2 draft tokens
    width = max(1, new_tokens - 1) if drafts else 1
    return GenerationShapes(
        frames=max(1, len(visual)),  # a routing plan pads to one frame of one slot
        slots=max([1, *visual.values()]),
        head=head,
        prefill=max(head, length - head),
        prefill_text=max(head, text - head),
        kept=kept,
        prompts=len(prompt_tokens),
        head_rows=len(prompt_tokens) * width,
        prompt_tokens=longest,
        decode_tokens=max(longest, width),
        # the prefix's text; a pass of suffixes, right-padded; a decode pass's tokens, right-padded
        embed_tokens=max(
            text,
            len(prompt_tokens) * width,
            *(len(rows) * max(prompt_tokens[row] for row in rows) for rows in groups),
        ),
        prefix=length + pooled,
        routed_prefix=(text + kept if keep_ratio is not None else length) + pooled,
        past=max(0, new_tokens - 2),  # the last answer token is picked, never fed
        positions=length + longest + new_tokens,
    )
