"""PruMerge and PruMerge+ (Shang et al., 2024), applied to each frame on its own.

1. Keep the tokens whose saliency is an outlier: above Q3 + 1.5 IQR of the frame.
2. PruMerge+ also keeps spatially uniform samples, up to `plus_fraction` of the frame.
3. Merge every pruned token into the kept tokens it is most similar to: each kept
   token y_p becomes y_p + sum_j a_j y_j over its k most similar pruned tokens j,
   weighted by their saliency a_j.
The paper measures similarity between the vision layer's keys at patch level;
after LlavaOnevision's 2x2 pooling there are no keys per token, so the pooled
token features stand in for them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vts_drive.config import PruMergeConfig


def outliers(saliency: torch.Tensor) -> torch.Tensor:
    """saliency [F, N] -> [F, N] bool, True above Q3 + 1.5 IQR of the frame."""
    q1, q3 = torch.quantile(saliency.float(), torch.tensor([0.25, 0.75], device=saliency.device), dim=1)
    return saliency > (q3 + 1.5 * (q3 - q1)).unsqueeze(1)


def uniform_samples(count: int, samples: int, device: torch.device) -> torch.Tensor:
    """`samples` token indices spread evenly over a frame of `count` tokens."""
    return torch.linspace(0, count - 1, steps=samples, device=device).round().long()


def prumerge_frame(
    tokens: torch.Tensor, saliency: torch.Tensor, config: PruMergeConfig, plus: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame: tokens [N, D], saliency [N] -> (kept indices [K] ascending, merged tokens [K, D]);
    `plus`: PruMerge+, which adds uniform spatial samples."""
    count = tokens.shape[0]
    keep = outliers(saliency.unsqueeze(0))[0]
    if plus:
        target = math.ceil(config.plus_fraction * count)
        missing = target - int(keep.sum())
        if missing > 0:
            free = torch.nonzero(~keep).flatten()
            keep[free[uniform_samples(free.numel(), missing, tokens.device)]] = True
    if not keep.any():
        keep[saliency.argmax()] = True
    kept = torch.nonzero(keep).flatten()
    pruned = torch.nonzero(~keep).flatten()
    merged = tokens[kept].clone()
    if pruned.numel():
        neighbours = min(config.merge_neighbours, pruned.numel())
        unit = F.normalize(tokens.float(), dim=-1)
        similarity = unit[kept] @ unit[pruned].T  # [K, P]
        nearest = similarity.topk(neighbours, dim=1).indices  # [K, k] into pruned
        weights = saliency[pruned][nearest].to(tokens.dtype)  # [K, k]
        merged = merged + (weights.unsqueeze(-1) * tokens[pruned][nearest]).sum(dim=1)
    return kept, merged
