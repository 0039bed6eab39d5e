"""FLOPs counted analytically from layer shapes and token counts.

A multiply-add is 2 FLOPs. Attention counts the query-key pairs a token may
attend to (causal, after routing), at 4 x heads x head_dim FLOPs per pair
(scores and weighted values). Normalisations, activations and softmax are left
out: they are small next to the matrix products.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from vts_drive.model.decoder import head_dim


def qwen2_token_flops(config: PretrainedConfig) -> float:
    """Linear-layer FLOPs of one token through one Qwen2 decoder layer."""
    d_model = config.hidden_size
    q_out = config.num_attention_heads * head_dim(config)
    kv_out = config.num_key_value_heads * head_dim(config)
    mlp = 3 * d_model * config.intermediate_size
    return 2.0 * (d_model * q_out + 2 * d_model * kv_out + q_out * d_model + mlp)


def qwen2_pair_flops(config: PretrainedConfig) -> float:
    return 4.0 * config.num_attention_heads * head_dim(config)


def prefix_prefill_flops(config: PretrainedConfig, entries_per_layer: list[int], cached: int = 0) -> float:
    """A causal pass after which layer l holds entries_per_layer[l] tokens, the first `cached`
    of them already in the cache (a head kept between windows): only the rest are computed."""
    token, pair = qwen2_token_flops(config), qwen2_pair_flops(config)
    return sum(
        (n - cached) * token + (n * (n + 1) - cached * (cached + 1)) / 2 * pair for n in entries_per_layer
    )


def suffix_prefill_flops(
    config: PretrainedConfig, entries_per_layer: list[int], suffix_lengths: list[int]
) -> float:
    """Prompt suffixes over a cached prefix, plus the LM head for each prompt's first token."""
    token, pair = qwen2_token_flops(config), qwen2_pair_flops(config)
    total = 0.0
    for n in entries_per_layer:
        for length in suffix_lengths:
            total += length * token + (length * n + length * (length + 1) / 2) * pair
    return total + len(suffix_lengths) * 2.0 * config.hidden_size * config.vocab_size


def siglip_flops(config: PretrainedConfig, frames: int, layers: int | None = None) -> float:
    """Patch embedding and `layers` (default all) SigLIP encoder layers for `frames` frames."""
    patches = (config.image_size // config.patch_size) ** 2
    width = config.hidden_size
    embed = 2.0 * patches * width * 3 * config.patch_size**2
    per_layer = (
        2.0 * patches * (4 * width * width + 2 * width * config.intermediate_size)
        + 4.0 * patches * patches * width
    )
    return frames * (embed + (layers if layers is not None else config.num_hidden_layers) * per_layer)


def projector_flops(vision_width: int, text_width: int, tokens: int) -> float:
    return 2.0 * tokens * (vision_width * text_width + text_width * text_width)


def conv_stack_flops(module, input_size: int) -> float:
    """Conv2d and Linear FLOPs of a torch module on a square input (e.g. the keyframe CNN)."""
    import torch.nn as nn

    total, size = 0.0, input_size
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            size = (size + 2 * layer.padding[0] - layer.kernel_size[0]) // layer.stride[0] + 1
            total += (
                2.0
                * size
                * size
                * layer.out_channels
                * layer.in_channels
                * layer.kernel_size[0]
                * layer.kernel_size[1]
            )
        elif isinstance(layer, nn.Linear):
            total += 2.0 * layer.in_features * layer.out_features
    return total
