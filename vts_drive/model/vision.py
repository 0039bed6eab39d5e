"""Vision stage: camera frames -> visual tokens for the LLM, plus each token's saliency.

This is LlavaOnevision's video path (SigLIP tower, projector, 2x2 bilinear
pooling) written as one loop over the tower's layers, so that the same pass
also yields the attention each patch receives in the feature layer, which the
token reducers use as importance. SigLIP has no CLS token: saliency is the
attention a patch receives, averaged over heads and queries.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vts_drive.model.loading import ModelSpec, VisionLanguageModel


class FramePreprocessor:
    """Frames -> the tower's input, and the token grid it yields: the checkpoint's spec alone, so
    backends that run exported graphs preprocess exactly as the torch one does."""

    def __init__(self, model: ModelSpec) -> None:
        config = model.config
        self.image_size: int = config.vision_config.image_size
        patches_per_side = self.image_size // config.vision_config.patch_size
        self.patch_grid = (patches_per_side, patches_per_side)
        self.token_grid = (math.ceil(patches_per_side / 2), math.ceil(patches_per_side / 2))
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError("vision_feature_layer lists are not supported; use one layer index")
        num_layers = config.vision_config.num_hidden_layers
        self.feature_layer = layer if layer >= 0 else num_layers + 1 + layer  # index into hidden states
        self.drop_first_token = config.vision_feature_select_strategy == "default"
        self.mean = torch.tensor(model.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(model.image_std).view(1, 3, 1, 1)
        self.resample = model.resample
        self.device = model.device
        self.dtype = model.dtype

    @property
    def tokens_per_frame(self) -> int:
        return self.token_grid[0] * self.token_grid[1]

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 frames of any size -> normalised pixels [F, 3, S, S], resized as the checkpoint
        was trained: area interpolation (the project's checkpoints), or PIL's bicubic, rescaled in
        float64, as transformers' PIL image processor and LLaVA-OneVision's own training do."""
        size = (self.image_size, self.image_size)
        if self.resample == "bicubic":
            resized = np.stack(
                [
                    np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
                    for image in images
                ]
            )
            scaled = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)  # [F, S, S, 3]
            pixels = torch.from_numpy(scaled).permute(0, 3, 1, 2)  # [F, 3, S, S]
        else:
            resized = np.stack([cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in images])
            pixels = torch.from_numpy(resized).permute(0, 3, 1, 2).float() / 255.0  # [F, 3, S, S]
        pixels = (pixels - self.mean) / self.std
        return pixels.to(self.device, self.dtype)


class VisionEncoder(FramePreprocessor):
    """The torch backend's vision stage: preprocessing, and the checkpoint's tower and projector."""

    def __init__(self, model: VisionLanguageModel) -> None:
        super().__init__(model)
        self.tower = model.hf_model.model.vision_tower  # SiglipVisionModel
        self.projector = model.hf_model.model.multi_modal_projector

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels [F, 3, S, S] -> tokens [F, N, D_llm] and saliency [F, N] (sums to 1 per frame)."""
        hidden = self.tower.embeddings(pixels)  # [F, P, Dv]
        saliency = None
        for index, layer in enumerate(self.tower.encoder.layers[: self.feature_layer], start=1):
            if index == self.feature_layer:
                saliency = received_attention(layer, hidden)  # [F, P]
            hidden = layer(hidden, None)
        if saliency is None:  # features straight from the patch embedding: no attention to read
            saliency = hidden.float().norm(dim=-1)
        if self.drop_first_token:
            hidden, saliency = hidden[:, 1:], saliency[:, 1:]
        features = self.projector(hidden)  # [F, P, D]
        tokens = pool_2x2(features, self.patch_grid)  # [F, N, D]
        saliency = pool_2x2(saliency.unsqueeze(-1), self.patch_grid).squeeze(-1)  # [F, N]
        saliency = saliency / saliency.sum(dim=-1, keepdim=True)
        return tokens, saliency.float()


def received_attention(layer: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Attention each patch receives in a SigLIP encoder layer, mean over heads and queries: [F, P]."""
    attention = layer.self_attn
    x = layer.layer_norm1(hidden)
    frames, patches, _ = x.shape
    shape = (frames, patches, attention.num_heads, attention.head_dim)
    q = attention.q_proj(x).view(shape).transpose(1, 2)  # [F, H, P, d]
    k = attention.k_proj(x).view(shape).transpose(1, 2)
    weights = torch.softmax((q @ k.transpose(-1, -2)).float() * attention.scale, dim=-1)  # [F, H, Pq, Pk]
    return weights.mean(dim=(1, 2))  # [F, Pk]


def pool_2x2(features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """LlavaOnevision's video pooling: [F, h*w, D] -> [F, ceil(h/2)*ceil(w/2), D], bilinear."""
    frames, _, dim = features.shape
    height, width = grid
    x = features.view(frames, height, width, dim).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(math.ceil(height / 2), math.ceil(width / 2)), mode="bilinear")
    return x.permute(0, 2, 3, 1).reshape(frames, -1, dim)
