"""Prompt layout: text with camera and frame markers, interleaved with visual tokens.

The pipeline builds `inputs_embeds` itself instead of going through the
processor's placeholder tokens, so a reducer can drop any visual token and a
frame left with no tokens still keeps its marker (the LLM sees that time passed).

A window becomes one shared prefix and one short suffix per prompt (ChatML, as
LLaVA-OneVision's Qwen2 expects):

    <|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n
    camera front:\n frame 3: <v><v>...\n ... frame 0: ...\n camera front_left:\n ...   <- prefix
    {question}<|im_end|>\n<|im_start|>assistant\n                                  <- suffix per prompt
    {answer}<|im_end|>                                                             <- generated

Frames come oldest first and are numbered by age: "frame 0" is the camera's
newest frame (now), "frame 1" the one before it. The present then carries the
same marker in a window of any length, so a question about now (where is the
risk object, what colour is the light) finds it without counting frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from transformers import PreTrainedTokenizerBase

SYSTEM_PROMPT = "You are the perception assistant of an autonomous car. You see its cameras over time."
DESCRIPTION_PROMPT = "Describe the driving scene."
RISK_PROMPT = (
    "What is the most important object for the ego car? Answer as: object: <name>; camera: <camera>; "
    "box: [x1, y1, x2, y2] normalised to that camera's image; caption: <why it matters>. "
    "Answer none if nothing is a risk."
)
END_OF_TURN = "<|im_end|>"


@dataclass
class FrameTokens:
    """The visual tokens one camera frame contributes (possibly none)."""

    camera: str
    frame: int  # index within the window, oldest first
    tokens: torch.Tensor  # [n, D], n may be 0


@dataclass
class VisualContext:
    """The shared prefix of every prompt of a window."""

    embeds: torch.Tensor  # [L, D]
    frame_index: (
        torch.Tensor
    )  # [L] long: the token's frame (camera-major order) for visual tokens, -1 for text
    head_length: int = 0  # leading tokens that are the same in every window (the system turn)

    @property
    def length(self) -> int:
        return self.embeds.shape[0]

    @property
    def is_visual(self) -> torch.Tensor:
        return self.frame_index >= 0

    @property
    def num_visual(self) -> int:
        return int(self.is_visual.sum())


@dataclass
class PrefixLayout:
    """Where each token of a window's shared prefix comes from."""

    text_ids: list[int]  # the prefix's text tokens, in order
    frame_index: list[int]  # per prefix token: its frame (camera-major) for visual tokens, -1 for text
    rows: list[int]  # per prefix token: its row among the text tokens, or among the visual tokens
    head_length: int = 0  # leading tokens that are the same in every window (the system turn)


class PromptBuilder:
    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, embed: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        self.tokenizer = tokenizer
        self.embed = embed
        self._ids = lru_cache(maxsize=4096)(self._encode)

    def _encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def text_ids(self, text: str) -> list[int]:
        return list(self._ids(text))

    def layout(self, frames: list[tuple[str, int, int]]) -> PrefixLayout:
        """(camera, frame index, visual token count) of each frame, camera-major -> the prefix's
        tokens, before any is embedded: what sizes the LLM's inputs (vts_drive/shapes.py)."""
        layout = PrefixLayout([], [], [])

        def add_text(text: str) -> None:
            ids = self.text_ids(text)
            layout.rows.extend(range(len(layout.text_ids), len(layout.text_ids) + len(ids)))
            layout.text_ids.extend(ids)
            layout.frame_index.extend([-1] * len(ids))

        add_text(f"<|im_start|>system\n{SYSTEM_PROMPT}{END_OF_TURN}\n<|im_start|>user\n")
        layout.head_length = len(layout.text_ids)
        newest: dict[str, int] = {}
        for camera, frame, _ in frames:
            newest[camera] = max(newest.get(camera, 0), frame)
        current, visual_rows = None, 0
        for index, (camera, frame, count) in enumerate(frames):
            if camera != current:
                current = camera
                add_text(f"camera {camera}:\n")
            add_text(f"frame {newest[camera] - frame}:")  # age: 0 is now
            layout.rows.extend(range(visual_rows, visual_rows + count))
            layout.frame_index.extend([index] * count)
            visual_rows += count
            add_text("\n")
        return layout

    def context(self, frames: list[FrameTokens], device: torch.device) -> VisualContext:
        """Frames in camera-major order (all frames of camera 0, then camera 1, ...) -> prefix embeds.

        All text of the prefix is embedded in one lookup and interleaved with the frames' tokens
        by one gather, so a context costs a few tensor operations however many frames it holds."""
        layout = self.layout([(frame.camera, frame.frame, frame.tokens.shape[0]) for frame in frames])
        text = self.embed(torch.tensor(layout.text_ids, dtype=torch.long, device=device))  # [Lt, D]
        visual = torch.cat([frame.tokens.to(device, text.dtype) for frame in frames])  # [Lv, D]
        frame_index = torch.tensor(layout.frame_index, dtype=torch.long, device=device)  # [Lt + Lv]
        # rows of cat([text, visual]) in prompt order: visual rows come after the Lt text rows
        order = torch.tensor(layout.rows, dtype=torch.long, device=device) + len(layout.text_ids) * (
            frame_index >= 0
        )
        return VisualContext(
            embeds=torch.cat([text, visual])[order], frame_index=frame_index, head_length=layout.head_length
        )

    def question_ids(self, question: str) -> list[int]:
        """The per-prompt suffix: the question, end of the user turn, start of the answer."""
        return self.text_ids(f"{question}{END_OF_TURN}\n<|im_start|>assistant\n")

    def answer_ids(self, answer: str) -> list[int]:
        """Training target for an answer, ending the turn."""
        return self.text_ids(f"{answer}{END_OF_TURN}")
