"""Caption metrics as the COCO caption evaluation computes them, and DRAMA localisation.

Captions go through pycocoevalcap exactly as its COCOEvalCap does: the Stanford PTB
tokenizer (lower-cases, strips punctuation), then BLEU-1..4, METEOR, ROUGE-L and CIDEr-D.
The tokenizer and METEOR are Java programs, so these metrics need a Java runtime: there is
no fallback tokenisation, because numbers computed differently would not be comparable to
published ones. Without Java, `require_java` fails with how to install it.

Two guards keep hostile text from breaking the tools: line breaks inside a caption (CR, U+2028
and the like) become spaces, since the tokenizer reads one caption per line and one more line
would shift every later caption onto the wrong references; and every tokenized caption is cut
to its first MAX_CAPTION_TOKENS tokens, with a note on stderr, since METEOR's aligner runs out of
memory on a caption repeated to some thousands of words (a model caught in a loop).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
from functools import lru_cache

from vts_drive.errors import InputError
from vts_drive.scoring import box_iou

CAPTION_METRICS = ("bleu1", "bleu4", "meteor", "rouge_l", "cider")
MAX_CAPTION_TOKENS = (
    1000  # far beyond any DRAMA caption or LingoQA answer, far below where METEOR runs out of memory
)
JAVA_HINT = (
    "install a Java runtime, e.g. `sudo apt-get install default-jre-headless`, so that `java` is on PATH"
)


def require_java() -> None:
    """The PTB tokenizer and METEOR of pycocoevalcap run `java`; fail before any work without it."""
    if shutil.which("java") is None:
        raise InputError(
            f"caption metrics (PTB tokenizer, METEOR) need Java, and `java` is not on PATH: {JAVA_HINT}"
        )


@lru_cache(maxsize=1)
def _meteor():
    """One METEOR process per Python process: it takes seconds to load its paraphrase table."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def caption_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, float | None]:
    """Corpus BLEU-1, BLEU-4, METEOR, ROUGE-L and CIDEr-D of each prediction against its references
    (None for every metric when there is nothing to score)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        return dict.fromkeys(CAPTION_METRICS)
    require_java()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = cut_long(
        tokenizer.tokenize({i: [{"caption": one_line(r)} for r in refs] for i, refs in enumerate(references)})
    )
    res = cut_long(tokenizer.tokenize({i: [{"caption": one_line(p)}] for i, p in enumerate(predictions)}))
    with contextlib.redirect_stdout(io.StringIO()):  # BLEU prints its n-gram counts
        bleu, _ = Bleu(4).compute_score(gts, res)
    return {
        "bleu1": float(bleu[0]),
        "bleu4": float(bleu[3]),
        "meteor": float(_meteor().compute_score(gts, res)[0]),
        "rouge_l": float(Rouge().compute_score(gts, res)[0]),
        "cider": float(Cider().compute_score(gts, res)[0]),
    }


def one_line(text: str) -> str:
    """The text with every kind of line break (which the PTB tokenizer would split at) as a space."""
    return " ".join(text.splitlines())


def cut_long(tokenized: dict[int, list[str]]) -> dict[int, list[str]]:
    """Tokenized captions cut to MAX_CAPTION_TOKENS tokens each, saying on stderr how many were longer."""
    long = sum(
        len(caption.split()) > MAX_CAPTION_TOKENS for captions in tokenized.values() for caption in captions
    )
    if long:
        print(
            f"caption metrics: {long} caption(s) longer than {MAX_CAPTION_TOKENS} tokens cut to their first {MAX_CAPTION_TOKENS}",
            file=sys.stderr,
        )
    return {
        i: [" ".join(caption.split()[:MAX_CAPTION_TOKENS]) for caption in captions]
        for i, captions in tokenized.items()
    }


def localisation_metrics(
    predicted: list[list[float] | None], truth: list[list[float]]
) -> dict[str, float | None]:
    """DRAMA localisation: mean IoU and the share of boxes with IoU > 0.5; a missing prediction has IoU 0."""
    if not truth:
        return {"bbox_miou": None, "bbox_acc50": None}
    ious = [box_iou(p, t) for p, t in zip(predicted, truth, strict=True)]
    return {"bbox_miou": sum(ious) / len(ious), "bbox_acc50": sum(iou > 0.5 for iou in ious) / len(ious)}
