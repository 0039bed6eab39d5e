"""Risk answers whose box is always well formed.

A small model writes a box coordinate as several tokens ("0", ".", "86") and
picks each greedily, so it can end a coordinate it began with "0." with the
fraction it would write after "1." and produce [0.85, 0.20, 0.00, 0.45]: a box
parse_bbox must reject, losing a risk object the model did see. While a row is
inside "box: [...]", the constraint masks every token after which the box could
no longer be four numbers in [0, 1] with x1 < x2 and y1 < y2; the model's own
ranking decides among the rest. Outside the box nothing is masked.
"""

from __future__ import annotations

import re
from functools import lru_cache

import torch
from transformers import PreTrainedTokenizerBase

BOX_OPEN = "box: ["
_BOX_CHARS = set("0123456789., ")
_COMPLETE = re.compile(r"\s*(0(\.\d{1,3})?|1(\.0{1,3})?)\s*$")  # a finished coordinate in [0, 1]
_PARTIAL = re.compile(r"\s*(|0|0\.\d{0,3}|1|1\.0{0,3})$")  # the start of one


def coordinate_ceiling(partial: str) -> float:
    """The largest value a coordinate that begins with `partial` can still reach."""
    text = partial.strip()
    if text in ("", "0", "0."):
        return 1.0 if text == "" else 0.999
    if text.startswith("1"):
        return 1.0
    return float(text + "9" * (5 - len(text)))  # "0.8" -> 0.899


def box_prefix_ok(box: str) -> bool:
    """Whether `box` (the text after "[") can still become a well-formed box; text after a
    closing "]" is not the box's business."""
    body, closed, _ = box.partition("]")
    parts = body.split(",")
    if len(parts) > 4:
        return False
    *finished, last = parts
    if closed:
        finished, last = parts, None
        if len(parts) != 4:
            return False
    if not all(_COMPLETE.match(part) for part in finished):
        return False
    values = [float(part) for part in finished]
    if len(values) > 2 and values[2] <= values[0] or len(values) > 3 and values[3] <= values[1]:
        return False
    if last is None:
        return True
    if not _PARTIAL.match(last):
        return False
    index = len(values)  # the coordinate being written: x1, y1, x2 or y2
    return index < 2 or coordinate_ceiling(last) > values[index - 2]


class BoxConstraint:
    """Per-step token masks that keep a risk answer's box well formed."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        # Each token's text on its own: exact for the ASCII a box is written in, and joining
        # them costs nothing next to decoding the whole answer at every step.
        self.strings = [tokenizer.decode([index]) for index in range(len(tokenizer))]
        # The only tokens that can extend an open box: numbers, separators, a closing bracket.
        self.box_tokens = {
            index: text
            for index, text in enumerate(self.strings)
            if text and set(text.partition("]")[0]) <= _BOX_CHARS
        }
        self.masks = lru_cache(maxsize=4096)(self._mask)  # box prefixes repeat across answers

    def open_box(self, generated: list[int]) -> str | None:
        """The box text written so far when the answer stops inside "box: [", else None."""
        known = len(self.strings)  # a model's head can be wider than its tokenizer (padded rows)
        text = "".join(self.strings[index] if index < known else "" for index in generated)
        start = text.rfind(BOX_OPEN)
        if start < 0 or "]" in text[start:]:
            return None
        return text[start + len(BOX_OPEN) :]

    def allowed(self, generated: list[int], vocab_size: int) -> torch.Tensor | None:
        """Mask [V] of the tokens that may come next (None: no constraint at this point)."""
        box = self.open_box(generated)
        return None if box is None else self.masks(box, vocab_size)

    def _mask(self, box: str, vocab_size: int) -> torch.Tensor | None:
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        for index, text in self.box_tokens.items():
            if index < vocab_size and box_prefix_ok(box + text):
                mask[index] = True
        return mask if mask.any() else None


class BoxLogitsProcessor:
    """The same constraint for transformers' `generate` (a LogitsProcessor), for batch 1 started
    from inputs_embeds, where `input_ids` holds only the generated tokens."""

    def __init__(self, constraint: BoxConstraint) -> None:
        self.constraint = constraint

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = self.constraint.allowed(input_ids[0].tolist(), scores.shape[-1])
        if mask is None:
            return scores
        return scores.masked_fill(~mask.to(scores.device), float("-inf"))
