"""Video Token Sparsification: keyframes keep every token; other frames keep only
the tokens that are important and do not repeat what a keyframe already shows.

For a token of a non-keyframe of camera c:
  redundancy = highest cosine similarity to the tokens of camera c's keyframes
               at the same or a neighbouring grid position (within `radius`)
  importance = its saliency (attention it receives in the vision tower's
               feature layer), scaled so a frame's mean is 1
Tokens with redundancy >= `redundancy_threshold` are dropped; of the others,
those with the highest importance x (1 - redundancy) are kept until the window
holds `budget` x (its dense token count) tokens. Keyframe tokens count towards
the budget and are never dropped, even when they alone exceed it.

Works on a batch of windows; each window's selection depends on that window alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vts_drive.config import VtsConfig


def redundancy(
    tokens: torch.Tensor, keyframes: torch.Tensor, grid: tuple[int, int], radius: int
) -> torch.Tensor:
    """tokens [B, C, T, N, D], keyframes [B, C, T] bool -> [B, C, T, N]: each token's highest
    cosine similarity to the same camera's keyframe tokens within `radius` grid cells
    (0 for a camera without keyframes)."""
    batch, cameras, frames, count, dim = tokens.shape
    height, width = grid
    unit = F.normalize(tokens.float(), dim=-1)
    # Keyframe tokens laid out on their grid, padded so every offset is a plain slice.
    on_grid = unit.view(batch, cameras, frames, height, width, dim)
    padded = F.pad(on_grid, (0, 0, radius, radius, radius, radius))  # [B, C, T, h+2r, w+2r, D]
    best = torch.full((batch, cameras, frames, frames, count), -1.0, device=tokens.device)  # [B, C, T, S, N]
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            shifted = padded[:, :, :, dy : dy + height, dx : dx + width].reshape(
                batch, cameras, frames, count, dim
            )
            # similarity of token n of frame t to the token at offset (dy, dx) from n in frame s
            best = torch.maximum(best, torch.einsum("bctnd,bcsnd->bctsn", unit, shifted))
    best = best.masked_fill(~keyframes[:, :, None, :, None], -1.0)
    return best.amax(dim=3).clamp(min=0.0)


def select_tokens(
    tokens: torch.Tensor,  # [B, C, T, N, D]
    saliency: torch.Tensor,  # [B, C, T, N]
    keyframes: torch.Tensor,  # [B, C, T] bool
    grid: tuple[int, int],
    config: VtsConfig,
) -> torch.Tensor:
    """-> keep mask [B, C, T, N] bool."""
    batch, cameras, frames, count, _ = tokens.shape
    key_tokens = keyframes[..., None].expand(-1, -1, -1, count)  # [B, C, T, N]
    repeated = redundancy(tokens, keyframes, grid, config.radius)
    importance = saliency.float() * count  # mean 1 per frame
    score = importance * (1.0 - repeated)
    candidate = ~key_tokens & (repeated < config.redundancy_threshold)
    score = score.masked_fill(~candidate, -math.inf).view(batch, -1)  # [B, C*T*N]

    total = cameras * frames * count
    room = (round(config.budget * total) - key_tokens.reshape(batch, -1).sum(dim=1)).clamp(min=0)  # [B]
    order = torch.sort(score, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(total, device=order.device).expand(batch, -1)
    )
    chosen = (rank < room[:, None]) & candidate.view(batch, -1)
    return key_tokens | chosen.view(batch, cameras, frames, count)
