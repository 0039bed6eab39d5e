"""Configurations of real checkpoints, to build them with random weights (no download).

Used to measure speed at the real model's dimensions where the weights cannot
be fetched; accuracy of such a model means nothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2Config,
    SiglipVisionConfig,
)

from vts_drive.config import KeyframeConfig, ModConfig
from vts_drive.errors import InputError
from vts_drive.keyframe.scorer import KeyframeScorer, save_scorer
from vts_drive.mod.routing import Routers, save_routers
from vts_drive.model.loading import VisionLanguageModel, resolve_dtype
from vts_drive.model.small import train_tokenizer
from vts_drive.prompt import DESCRIPTION_PROMPT, END_OF_TURN, RISK_PROMPT, SYSTEM_PROMPT
from vts_drive.synth.truth import QUESTIONS, TEMPORAL_QUESTIONS

# llava-hf/llava-onevision-qwen2-0.5b-ov-hf: SigLIP-so400m (384 px, patch 14) + Qwen2-0.5B
ARCHITECTURES: dict[str, dict[str, dict[str, Any]]] = {
    "llava-onevision-qwen2-0.5b": {
        "vision": dict(
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=26,
            num_attention_heads=16,
            image_size=384,
            patch_size=14,
            vision_use_head=False,
        ),
        "text": dict(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
        ),
    },
}


def random_model(
    arch: str, device: str = "cpu", dtype: str | None = None, seed: int = 0
) -> VisionLanguageModel:
    """A randomly initialised model of a real architecture, with a random keyframe scorer and
    random routers beside it so every mode runs."""
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    spec = ARCHITECTURES[arch]
    torch.manual_seed(seed)
    text = dict(spec["text"])
    rope_theta = text.pop("rope_theta")
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**spec["vision"]),
        text_config=Qwen2Config(**text, rope_parameters={"rope_type": "default", "rope_theta": rope_theta}),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        tie_word_embeddings=True,
    )
    torch_dtype = resolve_dtype(device, dtype)
    with torch.device(device):
        hf_model = LlavaOnevisionForConditionalGeneration(config).to(torch_dtype).eval().requires_grad_(False)
    tokenizer = train_tokenizer(prompt_corpus() * 8, vocab_size=1000, qwen2_split=True)
    folder = Path(tempfile.mkdtemp(prefix=f"vts-drive-{arch}-"))
    save_scorer(KeyframeScorer(KeyframeConfig()).eval(), folder)
    # r = 0.2, the mixture-of-depths paper's, at which the real-dimension figures were measured
    routing = ModConfig(keep_ratio=0.2)
    save_routers(
        Routers(config.text_config.hidden_size, config.text_config.num_hidden_layers, routing), folder
    )
    return VisionLanguageModel.of(
        hf_model, f"{arch} (random weights)", folder, tokenizer, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    )


def prompt_corpus() -> list[str]:
    """The text the pipeline prompts with: its system turn, camera and frame markers and prompts.
    A tokenizer trained on it with Qwen2's word split holds each of their words whole, as Qwen2's
    151k vocabulary does, so a random-weight model at real dimensions prefills as many text
    tokens as the real checkpoint would (tests/test_architectures.py checks the counts)."""
    cameras = ["front", "front_left", "front_right", "back", "back_left", "back_right"]
    prompts = [DESCRIPTION_PROMPT, RISK_PROMPT, *QUESTIONS.values(), *TEMPORAL_QUESTIONS.values()]
    return [
        f"<|im_start|>system\n{SYSTEM_PROMPT}{END_OF_TURN}\n<|im_start|>user\n",
        *[f"camera {camera}:\n" for camera in cameras],
        *[f"frame {age}:\n" for age in range(16)],
        *[f"{prompt}{END_OF_TURN}\n<|im_start|>assistant\n" for prompt in prompts],
    ]
