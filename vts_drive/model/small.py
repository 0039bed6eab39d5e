"""Small LlavaOnevision models built from scratch: for tests and for synthdrive-tiny.

They use the very classes of the real checkpoints (SigLIP vision tower,
projector, Qwen2 LLM) with small sizes, and a byte-level BPE tokenizer trained
locally with the `tokenizers` library, so nothing is downloaded.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipVisionConfig,
)

from vts_drive.errors import InputError

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
# Qwen2's pre-tokenizer: words with their leading space or mark, every digit alone, runs of marks
QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


@dataclass
class SmallModelSize:
    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_width: int = 256
    text_mlp_ratio: int = 2  # intermediate = ratio x width (the MLP dominates a small LLM's cost)
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    max_positions: int = 4096


def train_tokenizer(
    corpus: Iterable[str], vocab_size: int, qwen2_split: bool = False
) -> PreTrainedTokenizerFast:
    """Byte-level BPE (like Qwen2's) with the ChatML special tokens the prompts use. With
    `qwen2_split` text is split into words as Qwen2's tokenizer splits it (digits one by one),
    so a vocabulary that holds the corpus's words counts tokens as Qwen2 does."""
    tokenizer = Tokenizer(models.BPE())
    if qwen2_split:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )


def small_config(tokenizer: PreTrainedTokenizerFast, size: SmallModelSize) -> LlavaOnevisionConfig:
    vision = SiglipVisionConfig(
        hidden_size=size.vision_width,
        intermediate_size=4 * size.vision_width,
        num_hidden_layers=size.vision_layers,
        num_attention_heads=size.vision_heads,
        image_size=size.image_size,
        patch_size=size.patch_size,
        vision_use_head=False,
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=size.text_width,
        intermediate_size=size.text_mlp_ratio * size.text_width,
        num_hidden_layers=size.text_layers,
        num_attention_heads=size.text_heads,
        num_key_value_heads=size.text_kv_heads,
        max_position_embeddings=size.max_positions,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        tie_word_embeddings=True,
    )


def build_small_model(
    tokenizer: PreTrainedTokenizerFast, size: SmallModelSize, seed: int = 0
) -> LlavaOnevisionForConditionalGeneration:
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(small_config(tokenizer, size))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model.eval()


def with_image_size(
    model: LlavaOnevisionForConditionalGeneration, image_size: int
) -> LlavaOnevisionForConditionalGeneration:
    """The same weights reading images of `image_size`: the patch size stays, so the vision tower
    sees a larger patch grid, and its learned position embeddings (one per patch) are interpolated
    bicubically to it, the usual way to fine-tune a ViT at a higher resolution."""
    vision = model.config.vision_config
    if image_size % vision.patch_size:
        raise InputError(f"image size {image_size} is not a multiple of the patch size {vision.patch_size}")
    config = copy.deepcopy(model.config)
    config.vision_config.image_size = image_size
    resized = LlavaOnevisionForConditionalGeneration(config)
    state = model.state_dict()
    key = next(name for name in state if name.endswith("embeddings.position_embedding.weight"))
    old, new = vision.image_size // vision.patch_size, image_size // vision.patch_size
    grid = state[key].reshape(old, old, -1).permute(2, 0, 1)[None]  # [1, Dv, old, old]
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    state[key] = grid[0].permute(1, 2, 0).reshape(new * new, -1)  # [new * new, Dv]
    resized.load_state_dict(state)
    resized.generation_config = copy.deepcopy(model.generation_config)
    return resized.to(model.device).train(model.training)


def save_small_model(
    model: LlavaOnevisionForConditionalGeneration, tokenizer: PreTrainedTokenizerFast, out_dir: Path
) -> Path:
    """Write a folder `load_model` reads: safetensors weights, config, tokenizer, image statistics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    image_size = model.config.vision_config.image_size
    (out_dir / "preprocessor_config.json").write_text(
        '{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], '
        f'"size": {{"height": {image_size}, "width": {image_size}}}}}\n'
    )
    return out_dir
