"""Accuracy of a report against known ground truth: short answers, risk boxes, captions.

Used by the bench (accuracy next to speed, same windows for every mode) and by
synthdrive evaluation. Captions are scored with pycocoevalcap's CIDEr on
lower-cased, punctuation-free words (no Java tokenizer needed here).
"""

from __future__ import annotations

import re

from pycocoevalcap.cider.cider import Cider

_PUNCTUATION = re.compile(r"[^\w\s]")


def normalize_answer(text: str) -> str:
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def exact_match(prediction: str, truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(truth)


def box_iou(a: list[float] | None, b: list[float] | None) -> float:
    """IoU of two [x1, y1, x2, y2] boxes; 0 when either is missing."""
    if a is None or b is None:
        return 0.0
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def cider(predictions: list[str], references: list[list[str]]) -> float:
    """Corpus CIDEr-D of predictions against their reference lists (0 for an empty corpus)."""
    if not predictions:
        return 0.0
    res = {i: [normalize_answer(p) or "empty"] for i, p in enumerate(predictions)}
    gts = {i: [normalize_answer(r) or "empty" for r in refs] for i, refs in enumerate(references)}
    score, _ = Cider().compute_score(gts, res)
    return float(score)
