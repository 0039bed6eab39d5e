"""Lingo-Judge, LingoQA's learned metric, with the official evaluator's semantics.

For each question, every reference answer is paired with the prediction as
    "{cls_token}\\nQuestion: {question}\\nAnswer: {reference}\\nStudent: {prediction}"
(reference and prediction lower-cased and stripped, the question as it is), the batch is
tokenised with padding and truncation to 128 tokens, and the classifier gives one logit per
pair. A prediction is correct when the largest logit over its references is > 0; the score
is the share of correct predictions. The judge (`wayveai/Lingo-Judge`, a DeBERTa-v2
classifier) is loaded from `--judge PATH_OR_ID`; without it the metric is not computed.
"""

from __future__ import annotations

from collections.abc import Callable

from vts_drive.errors import InputError

MAX_TOKENS = 128


def preprocess(text: str) -> str:
    return str(text).lower().strip()


def judge_texts(question: str, references: list[str], prediction: str, cls_token: str = "[CLS]") -> list[str]:
    """The classifier inputs for one question: one per reference."""
    prediction = preprocess(prediction)
    return [
        f"{cls_token}\nQuestion: {question}\nAnswer: {preprocess(r)}\nStudent: {prediction}"
        for r in references
    ]


def max_scores(
    questions: list[str],
    references: list[list[str]],
    predictions: list[str],
    logits: Callable[[list[str]], list[float]],
    cls_token: str = "[CLS]",
) -> list[float]:
    """Per question, the largest judge logit over its references."""
    return [
        max(logits(judge_texts(q, refs, p, cls_token)))
        for q, refs, p in zip(questions, references, predictions, strict=True)
    ]


def accuracy(scores: list[float]) -> float | None:
    """Share of predictions judged correct (max logit > 0); None when there is nothing to judge."""
    return sum(score > 0 for score in scores) / len(scores) if scores else None


class LingoJudge:
    """A sequence classifier with one logit, loaded with AutoModelForSequenceClassification."""

    def __init__(self, path_or_id: str, device: str = "cpu") -> None:
        import transformers
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path_or_id)
            self.model = AutoModelForSequenceClassification.from_pretrained(path_or_id).to(device).eval()
        except (OSError, ValueError) as error:
            raise InputError(
                f"--judge {path_or_id!r} does not load as a sequence classifier with its tokenizer: {str(error).splitlines()[0]}"
            ) from None
        if self.model.config.num_labels != 1:
            raise InputError(
                f"--judge {path_or_id!r} has {self.model.config.num_labels} outputs; Lingo-Judge gives one logit"
            )
        self.device = device

    def logits(self, texts: list[str]) -> list[float]:
        import torch

        encoded = self.tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=MAX_TOKENS
        ).to(self.device)
        with torch.inference_mode():
            return self.model(**encoded).logits.squeeze(-1).float().tolist()

    def max_scores(
        self, questions: list[str], references: list[list[str]], predictions: list[str]
    ) -> list[float]:
        return max_scores(questions, references, predictions, self.logits, self.tokenizer.cls_token)
