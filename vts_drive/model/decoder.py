"""Qwen2 decoder forward over the checkpoint's own weights, with an explicit KV cache.

transformers' cache assumes every layer holds K/V for every token. This loop
does not: each layer attends over whatever its cache holds (see kv_cache.py),
which is what batched prompts on a shared prefix and mixture-of-depths need,
and what the ONNX export traces. For a plain sequence it computes exactly what
Qwen2Model does (tested against it).

A decoder built with routers (mixture-of-depths) wraps its routed layers in
RoutedLayer (vts_drive/mod/routing.py): given a plan from the tokens' frame
index, they compute only text tokens and each frame's top visual tokens;
text-only calls such as decoding are never routed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from vts_drive.errors import InputError
from vts_drive.mod.routing import RoutedLayer, Routers, RoutingPlan, RoutingTrace
from vts_drive.model.kv_cache import KVCache, LayerKV

# called as probe(layer, query, query_positions, segments) before each attention, to read what a
# layer attends to (router training)
AttentionProbe = Callable[[int, torch.Tensor, torch.Tensor, list[LayerKV]], None]


def head_dim(config: PretrainedConfig) -> int:
    """Width of one attention head: a Qwen2 config may set it, else hidden size / heads."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def routing_plan(frame_index: torch.Tensor, keep_ratio: float | None) -> RoutingPlan | None:
    """frame_index [B, L] (-1 for text) -> the plan routed layers keeping `keep_ratio` of each
    frame follow; None without routing (keep_ratio None) or visual tokens."""
    if keep_ratio is None or not bool((frame_index >= 0).any()):
        return None
    return RoutingPlan.from_frame_index(frame_index, keep_ratio)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, d]; cos, sin [B, L, d]."""
    return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1)


def visible_entries(kv: LayerKV, query_positions: torch.Tensor) -> torch.Tensor:
    """[B, L, S] bool: a query at position p sees the valid entries at positions <= p."""
    return (kv.positions[:, None, :] <= query_positions[:, :, None]) & kv.valid[:, None, :]


def attend(
    query: torch.Tensor, query_positions: torch.Tensor, segments: list[LayerKV], scale: float
) -> torch.Tensor:
    """query [B, H, L, d] at positions [B, L] over cache segments -> [B, H, L, d].

    One segment (a prefill, a training pass): fused scaled-dot-product attention,
    which never materialises the L x S score matrix of a long prefix. Several
    segments (prompt rows over the shared prefix): heads grouped by the K/V head
    they share, so the batch-1 prefix broadcasts over the rows without copies,
    with one float32 softmax over all segments.
    """
    if len(segments) == 1:
        kv = segments[0]
        groups = query.shape[1] // kv.keys.shape[1]
        visible = visible_entries(kv, query_positions)  # [B, L, S]
        return F.scaled_dot_product_attention(
            query,
            kv.keys.repeat_interleave(groups, dim=1),
            kv.values.repeat_interleave(groups, dim=1),
            attn_mask=visible.unsqueeze(1),
            scale=scale,
        )
    batch, heads, length, dim = query.shape
    kv_heads = segments[0].keys.shape[1]
    q = query.reshape(batch, kv_heads, heads // kv_heads * length, dim)  # [B, Hkv, G*L, d]
    scores = []
    for kv in segments:
        visible = visible_entries(kv, query_positions)  # [B, L, S]
        score = rows_matmul(q, kv.keys.transpose(-1, -2)).float() * scale  # [B, Hkv, G*L, S]
        score = score.reshape(batch, kv_heads, heads // kv_heads, length, -1)
        scores.append(score.masked_fill(~visible[:, None, None], float("-inf")))
    weights = torch.softmax(torch.cat(scores, dim=-1), dim=-1).to(query.dtype)  # [B, Hkv, G, L, S_total]
    parts, start = [], 0
    for kv, score in zip(segments, scores):
        part = weights[..., start : start + score.shape[-1]].reshape(batch, kv_heads, -1, score.shape[-1])
        parts.append(rows_matmul(part, kv.values))  # [B, Hkv, G*L, d]
        start += score.shape[-1]
    out = parts[0]
    for part in parts[1:]:
        out = out + part
    return out.reshape(batch, heads, length, dim)


def rows_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [B, H, M, X] @ b [B or 1, H, X, Y] -> [B, H, M, Y]. A batch-1 b (the shared prefix) is
    multiplied once with the rows of every batch entry stacked, instead of being broadcast,
    which would copy it B times on every decode step."""
    if b.shape[0] == a.shape[0]:
        return a @ b
    batch, heads, rows, _ = a.shape
    stacked = a.transpose(0, 1).reshape(1, heads, batch * rows, -1)  # [1, H, B*M, X]
    return (stacked @ b).view(heads, batch, rows, -1).transpose(0, 1)


class DecoderLayer(nn.Module):
    """One Qwen2 block over the checkpoint's own modules, attending over an explicit cache."""

    def __init__(self, index: int, layer: nn.Module, rotary: nn.Module, config: PretrainedConfig) -> None:
        super().__init__()
        self.index, self.layer, self.rotary = index, layer, rotary
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = head_dim(config)
        self.scale = self.head_dim**-0.5

    def forward(
        self,
        hidden: torch.Tensor,  # [B, L, D]
        positions: torch.Tensor,  # [B, L]
        valid: torch.Tensor,  # [B, L]
        cache: KVCache | None,
        probe: AttentionProbe | None = None,
    ) -> torch.Tensor:
        """The block on these tokens; their K/V go into `cache`. Returns [B, L, D]."""
        layer = self.layer
        attention = layer.self_attn
        batch, length, _ = hidden.shape
        x = layer.input_layernorm(hidden)
        q = attention.q_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = attention.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = attention.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = self.rotary(hidden, positions)  # [B, L, d]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        kv = LayerKV(keys=k, values=v, positions=positions, valid=valid)
        segments = (
            [kv]
            if cache is None
            else [*filter(None, [cache.shared[self.index]]), cache.append(self.index, kv)]
        )
        if probe is not None:
            probe(self.index, q, positions, segments)
        attended = attend(q, positions, segments, self.scale)  # [B, H, L, d]
        hidden = hidden + attention.o_proj(attended.transpose(1, 2).reshape(batch, length, -1))
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


class Qwen2Decoder(nn.Module):
    """Wraps the Qwen2 modules of a LlavaOnevision model; owns no weights of its own beside the
    routers it is given (mixture-of-depths: its routed layers are RoutedLayers; `seed` seeds
    random routing's draws)."""

    def __init__(
        self, language_model: nn.Module, lm_head: nn.Linear, routers: Routers | None = None, seed: int = 0
    ) -> None:
        super().__init__()
        config = language_model.config
        self.config = config
        if any(kind != "full_attention" for kind in config.layer_types):
            raise InputError("checkpoints with sliding-window attention layers are not supported")
        self.embed_tokens = language_model.embed_tokens
        self.norm = language_model.norm
        self.lm_head = lm_head
        self.routers = routers
        blocks = [
            DecoderLayer(i, layer, language_model.rotary_emb, config)
            for i, layer in enumerate(language_model.layers)
        ]
        generator = None
        if routers is not None:
            device = self.embed_tokens.weight.device
            generator = torch.Generator(device=device).manual_seed(seed)
        self.layers = nn.ModuleList(
            [
                RoutedLayer(block, routers, generator)
                if routers is not None and routers.routes(block.index)
                else block
                for block in blocks
            ]
        )
        self.num_kv_heads, self.head_dim, self.scale = (
            blocks[0].num_kv_heads,
            blocks[0].head_dim,
            blocks[0].scale,
        )
        self.hidden_size: int = config.hidden_size

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(token_ids)

    def forward(
        self,
        embeds: torch.Tensor,  # [B, L, D]
        positions: torch.Tensor,  # [B, L] long
        valid: torch.Tensor | None = None,  # [B, L] bool; False marks padding
        cache: KVCache | None = None,
        plan: RoutingPlan | None = None,  # from routing_plan(); None: no layer routes
        trace: list[RoutingTrace] | None = None,
        probe: AttentionProbe | None = None,
    ) -> torch.Tensor:
        """Returns the final-norm hidden states [B, L, D]."""
        if valid is None:
            valid = torch.ones(positions.shape, dtype=torch.bool, device=positions.device)
        hidden = embeds
        for layer in self.layers:
            if isinstance(layer, RoutedLayer):
                hidden = layer(hidden, positions, valid, cache, plan, trace, probe)
            else:
                hidden = layer(hidden, positions, valid, cache, probe)
        return self.norm(hidden)

    def routing_plan(self, frame_index: torch.Tensor) -> RoutingPlan | None:
        """frame_index [B, L] (-1 for text) -> the plan routed layers follow; None without routers
        or visual tokens."""
        return routing_plan(frame_index, self.routers.config.keep_ratio if self.routers is not None else None)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()
