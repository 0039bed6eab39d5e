"""Prompt layout chat_template: a hub checkpoint prompted as its processor and chat template prompt videos.

LLaVA-OneVision checkpoints on the hub (llava-hf/llava-onevision-qwen2-*-ov-hf) were trained
without the project's system turn and camera and frame markers. Their processor renders the
checkpoint's chat template for one user message and expands each video's placeholder into the
frames' pooled tokens followed by one image_newline embedding:

    <|im_start|>user\\n<video>\\n<video>\\n{cameras}{question}<|im_end|>\\n<|im_start|>assistant\\n
                      ^ camera 0  ^ camera 1: each its frames' tokens, oldest first, then image_newline

Each camera is one video, in camera order. The template renders every video before any text, so
with several cameras one text part before the question names them in order ({cameras}); with one
camera there is none, and the prompt is exactly the processor's for a video and a question.
A frame a reducer emptied leaves no trace: the template has no per-frame text.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
from transformers import PreTrainedTokenizerBase

from vts_drive.errors import InputError
from vts_drive.model.loading import (
    ModelSpec,
    VisionLanguageModel,
    read_chat_template,
    read_image_newline,
    saved_by_processor,
)
from vts_drive.prompt import PrefixLayout, PromptBuilder

QUESTION_SLOT = "<<question>>"  # rendered in the question's place, to split the prompt around it


def camera_names(cameras: tuple[str, ...]) -> str:
    """The text part naming the videos' cameras, before the question (several cameras only)."""
    return f"The videos are from the cameras {', '.join(cameras)}, in that order.\n"


class ChatPromptBuilder(PromptBuilder):
    """The prompt of a window as the checkpoint's processor builds it for its cameras' videos. The
    `<video>` token that follows each video's frames in the prefix is embedded as image_newline,
    the vector the model's video features end with, where the processor's last placeholder is."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        embed: Callable[[torch.Tensor], torch.Tensor],
        template: str,
        video_token_id: int,
        newline: torch.Tensor,  # [D]
    ) -> None:
        def embed_with_newline(token_ids: torch.Tensor) -> torch.Tensor:
            embeds = embed(token_ids)  # [..., D]
            is_newline = (token_ids == video_token_id).unsqueeze(-1)  # [..., 1]
            return torch.where(is_newline, newline.to(embeds), embeds)

        super().__init__(tokenizer, embed_with_newline)
        self.template = template
        self.video_token_id = video_token_id
        self.video_token = tokenizer.convert_ids_to_tokens(video_token_id)
        self._prefix_pieces = lru_cache(maxsize=64)(self._pieces)
        self._prefix_pieces(("front",))  # a template that shows no video fails here, not in a window
        self.after_question = self._render(("front",)).partition(QUESTION_SLOT)[2]

    def _render(self, cameras: tuple[str, ...]) -> str:
        """The chat template over one user message: a video per camera, then the question slot."""
        content: list[dict[str, str]] = [{"type": "video"} for _ in cameras]
        if len(cameras) > 1:
            content.append({"type": "text", "text": camera_names(cameras)})
        content.append({"type": "text", "text": QUESTION_SLOT})
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}],
            chat_template=self.template,
            tokenize=False,
            add_generation_prompt=True,
        )
        if not isinstance(text, str) or text.count(QUESTION_SLOT) != 1:
            raise InputError("the checkpoint's chat template does not show a user message's text once")
        return text

    def _pieces(self, cameras: tuple[str, ...]) -> tuple[str, ...]:
        """The prefix's text around the videos: before the first, after each (len(cameras) + 1)."""
        before = self._render(cameras).partition(QUESTION_SLOT)[0]
        pieces = tuple(before.split(self.video_token))
        if len(pieces) != len(cameras) + 1:
            raise InputError(
                f"the checkpoint's chat template shows {len(pieces) - 1} {self.video_token} for "
                f"{len(cameras)} videos before the question; set prompt_layout=vts_drive"
            )
        return pieces

    def layout(self, frames: list[tuple[str, int, int]]) -> PrefixLayout:
        """(camera, frame index, visual token count) of each frame, camera-major -> the prefix's tokens:
        the template's text, each camera's frames' tokens, and the `<video>` token image_newline takes."""
        layout = PrefixLayout([], [], [])
        cameras = tuple(dict.fromkeys(camera for camera, _, _ in frames))

        def add_ids(ids: list[int]) -> None:
            layout.rows.extend(range(len(layout.text_ids), len(layout.text_ids) + len(ids)))
            layout.text_ids.extend(ids)
            layout.frame_index.extend([-1] * len(ids))

        head, *after_videos = self._prefix_pieces(cameras)
        add_ids(self.text_ids(head))
        layout.head_length = len(layout.text_ids)
        visual_rows = 0
        for camera, after in zip(cameras, after_videos):
            for index, (frame_camera, _, count) in enumerate(frames):
                if frame_camera == camera:
                    layout.rows.extend(range(visual_rows, visual_rows + count))
                    layout.frame_index.extend([index] * count)
                    visual_rows += count
            add_ids([self.video_token_id])  # image_newline
            add_ids(self.text_ids(after))
        return layout

    def question_ids(self, question: str) -> list[int]:
        """The per-prompt suffix: the question and the template's text after it."""
        return self.text_ids(f"{question}{self.after_question}")


def prompt_builder(
    model: ModelSpec, embed: Callable[[torch.Tensor], torch.Tensor], prompt_layout: str
) -> PromptBuilder:
    """The prompt builder of a checkpoint's family: `prompt_layout` vts_drive or chat_template, or
    auto: chat_template where a transformers processor saved the folder (the hub's checkpoints),
    vts_drive otherwise (the project's own, which no processor writes)."""
    if prompt_layout == "auto":
        prompt_layout = "chat_template" if saved_by_processor(model.folder) else "vts_drive"
    if prompt_layout == "vts_drive":
        return PromptBuilder(model.tokenizer, embed)
    if isinstance(model, VisionLanguageModel):
        newline = model.hf_model.model.image_newline.detach()
    else:  # exported graphs: read image_newline alone from the weights
        newline = read_image_newline(model.folder)
    return ChatPromptBuilder(
        model.tokenizer, embed, read_chat_template(model.folder), model.config.video_token_id, newline
    )
