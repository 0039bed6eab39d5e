"""Training the keyframe CNN.

Each camera stream gives pairs (frame, previous frame) with a keyframe label.
Labels come from synthdrive's scene graph (frames where decision-relevant
content changes) or, for real recordings, self-supervised: a frame is novel
when its visual tokens differ from the last keyframe's (1 - mean cosine
similarity above a threshold), and then becomes the new reference. A stream's
first frame is always a keyframe and is not trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vts_drive.config import KeyframeConfig
from vts_drive.errors import InputError
from vts_drive.keyframe.scorer import KeyframeScorer, save_scorer
from vts_drive.model.vision import VisionEncoder
from vts_drive.training import load_checkpoint, save_checkpoint


@dataclass
class LabelledPairs:
    frames: torch.Tensor  # [P, 3, S, S] uint8
    previous: torch.Tensor  # [P, 3, S, S] uint8
    labels: torch.Tensor  # [P] float (1: keyframe)

    def __len__(self) -> int:
        return self.labels.shape[0]


def stream_pairs(streams: list[tuple[list[np.ndarray], list[bool]]], scorer: KeyframeScorer) -> LabelledPairs:
    """Camera streams (frames in time order, a label per frame) -> training pairs, first frames left out."""
    frames, previous, labels = [], [], []
    for images, flags in streams:
        small = (scorer.prepare(images) * 255).round().to(torch.uint8)  # [T, 3, S, S]
        frames.append(small[1:])
        previous.append(small[:-1])
        labels.append(torch.tensor(flags[1:], dtype=torch.float))
    if not frames:
        raise InputError("no camera streams to train the keyframe scorer on")
    return LabelledPairs(torch.cat(frames), torch.cat(previous), torch.cat(labels))


@torch.no_grad()
def novelty_labels(images: list[np.ndarray], vision: VisionEncoder, threshold: float) -> list[bool]:
    """Self-supervised keyframe labels for one camera stream (see module docstring)."""
    tokens, _ = vision.encode(vision.preprocess(images))  # [T, N, D]
    unit = F.normalize(tokens.float(), dim=-1)
    labels, reference = [True], unit[0]
    for t in range(1, len(images)):
        novelty = 1.0 - float((unit[t] * reference).sum(-1).mean())
        labels.append(novelty > threshold)
        if labels[-1]:
            reference = unit[t]
    return labels


@torch.no_grad()
def precision_recall(scorer: KeyframeScorer, pairs: LabelledPairs, threshold: float) -> dict[str, float]:
    scorer.eval()
    probabilities = []
    for start in range(0, len(pairs), 512):
        frames = pairs.frames[start : start + 512].float() / 255
        previous = pairs.previous[start : start + 512].float() / 255
        probabilities.append(torch.sigmoid(scorer(frames, previous)))
    predicted = torch.cat(probabilities) > threshold
    truth = pairs.labels > 0.5
    true_positive = int((predicted & truth).sum())
    precision = true_positive / max(1, int(predicted.sum()))
    recall = true_positive / max(1, int(truth.sum()))
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(1e-9, precision + recall),
        "positives": int(truth.sum()),
        "pairs": len(pairs),
    }


def train_scorer(
    pairs: LabelledPairs,
    config: KeyframeConfig,
    out: Path,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
) -> KeyframeScorer:
    """Balanced BCE on the pairs; resumable from out/keyframe_checkpoint; writes the scorer to out."""
    torch.manual_seed(seed)
    scorer = KeyframeScorer(config)
    optimizer = torch.optim.AdamW(scorer.parameters(), lr=lr, weight_decay=1e-4)
    checkpoint = Path(out) / "keyframe_checkpoint"
    state = load_checkpoint(checkpoint, scorer, optimizer) or {"step": 0}
    positives = float(pairs.labels.sum())
    pos_weight = torch.tensor((len(pairs) - positives) / max(1.0, positives))
    scorer.train()
    progress = tqdm(
        range(state["step"], steps),
        desc="train keyframe scorer",
        unit="step",
        initial=state["step"],
        total=steps,
    )
    for step in progress:
        rows = torch.from_numpy(np.random.default_rng([seed, step]).integers(0, len(pairs), batch_size))
        frames, previous = pairs.frames[rows].float() / 255, pairs.previous[rows].float() / 255
        if (
            np.random.default_rng([seed, step, 1]).random() < 0.5
        ):  # mirror: a hazard can come from either side
            frames, previous = frames.flip(-1), previous.flip(-1)
        loss = F.binary_cross_entropy_with_logits(
            scorer(frames, previous), pairs.labels[rows], pos_weight=pos_weight
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        progress.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % 100 == 0 or step + 1 == steps:
            save_checkpoint(checkpoint, scorer, optimizer, {"step": step + 1})
    scorer.eval()
    save_scorer(scorer, out)
    return scorer
