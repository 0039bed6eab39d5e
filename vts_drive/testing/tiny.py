"""A tiny random LlavaOnevision checkpoint, written to disk in seconds.

Tests load it back through `vts_drive.model.loading.load_model`, the code users
run, so the loading path is exercised for real.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vts_drive import prompt
from vts_drive.model.small import SmallModelSize, build_small_model, save_small_model, train_tokenizer

TINY_SIZE = SmallModelSize(
    image_size=32,
    patch_size=8,
    vision_width=32,
    vision_layers=2,
    vision_heads=2,
    text_width=64,
    text_layers=2,
    text_heads=4,
    text_kv_heads=2,
    max_positions=2048,
)

_CORPUS = [
    prompt.SYSTEM_PROMPT,
    prompt.DESCRIPTION_PROMPT,
    prompt.RISK_PROMPT,
    "camera front front_left front_right frame 0 1 2 3 4 5 6 7 8 9",
    "object: pedestrian; camera: front; box: [0.12, 0.40, 0.35, 0.80]; caption: the pedestrian is crossing",
    "A car is stopped ahead at a red light. The road is clear. Slow down. yes no left right",
]


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    tokenizer = train_tokenizer(_CORPUS * 4, vocab_size=400)
    model = build_small_model(tokenizer, TINY_SIZE, seed=seed)
    # The default init (std 0.02) makes a random model repeat one token; wider
    # weights make it produce varied text, so tests comparing outputs mean something.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)
    return save_small_model(model, tokenizer, Path(out_dir))
