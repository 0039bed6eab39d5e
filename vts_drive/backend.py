"""What the pipeline calls on its stages, whichever backend computes them.

The torch backend's stages run the checkpoint's modules (VisionEncoder,
Qwen2Decoder, KeyframeScorer); the onnxruntime and tensorrt backends' stages
run the exported graphs (vts_drive/engines/stages.py) and hold no torch weights.
Pipeline and generate() see only these protocols, so a backend is a choice of
stage objects, never a second code path.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from vts_drive.mod.routing import RoutingPlan
from vts_drive.model.kv_cache import KVCache


class VisionStage(Protocol):
    """Camera frames -> visual tokens for the LLM and each token's saliency."""

    @property
    def token_grid(self) -> tuple[int, int]:
        """(rows, columns) of a frame's tokens."""
        ...

    @property
    def tokens_per_frame(self) -> int: ...

    @property
    def feature_layer(self) -> int:
        """The tower's hidden state the tokens come from (FLOP counts)."""
        ...

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 frames of any size -> normalised pixels [F, 3, S, S]."""
        ...

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels [F, 3, S, S] -> tokens [F, N, D] and saliency [F, N]."""
        ...


class LanguageStage(Protocol):
    """The LLM over an explicit KV cache (model/kv_cache.py): called on an empty cache it fills
    it with a prefix (its routed layers following `plan`); on a cache that holds entries, such
    as the prompt rows branched off a prefix, it appends the new tokens of every row."""

    @property
    def num_layers(self) -> int: ...

    @property
    def num_kv_heads(self) -> int: ...

    @property
    def head_dim(self) -> int: ...

    @property
    def hidden_size(self) -> int: ...

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids [...] -> embeds [..., D]."""
        ...

    def routing_plan(self, frame_index: torch.Tensor) -> RoutingPlan | None:
        """frame_index [B, L] (-1 for text) -> the plan routed layers follow; None: nothing routes."""
        ...

    def __call__(
        self,
        embeds: torch.Tensor,  # [B, L, D]
        positions: torch.Tensor,  # [B, L] long
        valid: torch.Tensor | None = None,  # [B, L] bool; False marks padding
        cache: KVCache | None = None,
        plan: RoutingPlan | None = None,
    ) -> torch.Tensor:
        """Final-norm hidden states [B, L, D]."""
        ...

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., D] -> float32 logits [..., V]."""
        ...


class KeyframeStage(Protocol):
    """The keyframe CNN: how much a frame differs from the one before it."""

    def prepare(self, images: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 frames -> the scorer's input [F, 3, S, S]."""
        ...

    def __call__(self, frames: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """frames, previous [F, 3, S, S] -> keyframe logits [F]."""
        ...
