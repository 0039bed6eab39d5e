"""The exported graphs as torch modules: each forward is what one ONNX graph computes.

Every module wraps the pipeline's own torch stage (the keyframe CNN,
VisionEncoder, Qwen2Decoder with its mixture-of-depths routers), so a graph
runs exactly the code the torch backend runs, traced by torch.onnx.export. The
LLM is cut where the pipeline calls it:

  keyframe_scorer  frames, previous [F, 3, S, S] -> logits [F]
  vision           pixels [F, 3, S, S] -> tokens [F, N, D], saliency [F, N]
  llm_embed        token_ids [T] -> embeds [T, D]
  llm_prefill      the window's shared prefix, batch 1, routed layers included, after
                   the entries held (the system turn, computed once):
                   embeds, positions, valid (+ routing plan), past.* -> hidden, present.*
  llm_decode       prompt suffixes and generated tokens over the cached prefix:
                   embeds, positions, valid, prefix.*, past.* -> hidden, present.*
  llm_head         hidden [R, D] -> logits [R, V] (float32)

The KV cache is explicit: four tensors per layer, named {group}.{layer}.{field}
with field key [B, Hkv, S, d] (rotary applied), value, position [B, S] and
valid [B, S], which is LayerKV (model/kv_cache.py) flattened. llm_decode takes
the prefix batch 1 (every prompt row attends to it, grouped by K/V head, never
copied per row) and each row's own past, and returns present = past + the new
entries; llm_prefill takes the entries its single row holds (0 for the system
turn, the system turn's for the rest of the prefix) and returns present = past +
the prefix's entries, where a routed layer holds only the tokens it computed:
the text and each frame's k = ceil(r x n_f) tokens.

The routing plan enters llm_prefill as three host-built tensors (text_index
[1, Lt], frame_slots [1, F, N], keep_slots [1, Kv], see mod/routing.py); the
routed layers' TopK has K = ceil(r x N) from the shape of frame_slots, and they
compute Lt + Kv tokens (Kv = sum of the frames' k) from the shape of
keep_slots, so every shape follows from input shapes and no output shape
depends on data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from vts_drive.keyframe.scorer import KeyframeScorer
from vts_drive.mod.routing import Routers, RoutingPlan
from vts_drive.model.decoder import Qwen2Decoder
from vts_drive.model.kv_cache import KVCache, LayerKV
from vts_drive.model.vision import VisionEncoder

KV_FIELDS = ("key", "value", "position", "valid")
PLAN_INPUTS = ("text_index", "frame_slots", "keep_slots")


def kv_names(group: str, layers: int) -> list[str]:
    """Graph tensor names of a KV cache group (prefix, past, present), layer by layer."""
    return [f"{group}.{layer}.{field}" for layer in range(layers) for field in KV_FIELDS]


def flatten_kv(layers: Sequence[LayerKV | None]) -> list[torch.Tensor]:
    """Each layer's keys, values, positions and valid mask, layer after layer (every layer holds entries)."""
    tensors: list[torch.Tensor] = []
    for kv in layers:
        if kv is None:
            raise ValueError("a layer holds no entries: every layer's K/V is a graph input or output")
        tensors += [kv.keys, kv.values, kv.positions, kv.valid]
    return tensors


def unflatten_kv(tensors: Sequence[torch.Tensor]) -> list[LayerKV | None]:
    return [LayerKV(*tensors[i : i + len(KV_FIELDS)]) for i in range(0, len(tensors), len(KV_FIELDS))]


def router_settings(routers: Routers | None) -> dict | None:
    """What a routed llm_prefill bakes in (r, routed layers, gate, routing); None without MoD."""
    if routers is None:
        return None
    return asdict(routers.config) | {"layers": routers.layer_indices}


@dataclass
class GraphDefinition:
    """One graph to export: the module, example inputs in forward's order, and its dynamic axes.

    dims maps each dynamic axis name to the (min, opt, max) sizes of the TensorRT
    optimisation profile; the example's size of every dynamic axis must be >= 2,
    or the trace would specialise the graph to it.
    """

    name: str
    module: nn.Module
    inputs: dict[str, torch.Tensor]
    axes: dict[str, dict[int, str]]  # input name -> {axis: dim name}
    outputs: list[str]
    dims: dict[str, tuple[int, int, int]]

    def profiles(self) -> dict[str, tuple[list[int], list[int], list[int]]]:
        """min/opt/max shape of every input with dynamic axes."""
        profiles = {}
        for name, axes in self.axes.items():
            shape = [int(size) for size in self.inputs[name].shape]
            low, opt, high = (
                [self.dims[axes[axis]][level] if axis in axes else size for axis, size in enumerate(shape)]
                for level in range(3)
            )
            profiles[name] = (low, opt, high)
        return profiles


class ScorerGraph(nn.Module):
    def __init__(self, scorer: KeyframeScorer) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, frames: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        return self.scorer(frames, previous)


class VisionGraph(nn.Module):
    def __init__(self, vision: VisionEncoder) -> None:
        super().__init__()
        self.vision = vision
        self.tower, self.projector = (
            vision.tower,
            vision.projector,
        )  # registered, so weights export as initializers

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vision.encode(pixels)


class EmbedGraph(nn.Module):
    def __init__(self, decoder: Qwen2Decoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.decoder.embed(token_ids)


class HeadGraph(nn.Module):
    def __init__(self, decoder: Qwen2Decoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder.logits(hidden)


class PrefillGraph(nn.Module):
    """Prefix tokens through every layer after a single row's entries; routed when keep_ratio is set."""

    def __init__(self, decoder: Qwen2Decoder, keep_ratio: float | None) -> None:
        super().__init__()
        self.decoder = decoder
        self.keep_ratio = keep_ratio

    def forward(
        self, embeds: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, *rest: torch.Tensor
    ):
        """rest: the routing plan's PLAN_INPUTS when routed, then past.*."""
        plan = None
        if self.keep_ratio is not None:
            text_index, frame_slots, keep_slots = rest[: len(PLAN_INPUTS)]
            plan = RoutingPlan.of(text_index, frame_slots, keep_slots, self.keep_ratio, embeds.shape[1])
            rest = rest[len(PLAN_INPUTS) :]
        cache = KVCache(self.decoder.num_layers)
        cache.layers = unflatten_kv(rest)
        hidden = self.decoder(embeds, positions, valid, cache, plan)
        return hidden, *flatten_kv(cache.layers)


class DecodeGraph(nn.Module):
    """New tokens of every prompt row over the batch-1 prefix and the rows' own past."""

    def __init__(self, decoder: Qwen2Decoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, *kv: torch.Tensor):
        layers = self.decoder.num_layers
        cache = KVCache(layers)
        cache.shared = unflatten_kv(kv[: len(KV_FIELDS) * layers])
        cache.layers = unflatten_kv(kv[len(KV_FIELDS) * layers :])
        hidden = self.decoder(embeds, positions, valid, cache)
        return hidden, *flatten_kv(cache.layers)


def example_prefix(tokens_per_frame: int) -> torch.Tensor:
    """frame_index [1, L] of a small prefix: text, a full frame, text, a frame one token short, text."""
    full, short = [0] * tokens_per_frame, [1] * max(1, tokens_per_frame - 1)
    return torch.tensor([[-1] * 3 + full + [-1] * 2 + short + [-1] * 4])
