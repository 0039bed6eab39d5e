"""What the runner asks the model on each benchmark, what it keeps of the answers, and how
those predictions are scored.

Every benchmark is a list of items (a key, the prompts, and a function that reads the
window's frames) plus four methods: `record` turns a window's answers into the fields of a
prediction line, `score` turns prediction lines back into metrics against the data, `export`
writes the benchmark's official predictions file where it has one, and `view` shows one sample's
truth next to each mode's prediction lines on the report page (html_report.py).
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vts_drive.errors import InputError
from vts_drive.eval import drama, lingoqa
from vts_drive.eval.html_report import Cell, Frame, Row, SampleView, format_box, valid_box
from vts_drive.eval.judge import LingoJudge
from vts_drive.eval.metrics import CAPTION_METRICS, caption_metrics, localisation_metrics
from vts_drive.inputs import read_image
from vts_drive.prompt import DESCRIPTION_PROMPT, RISK_PROMPT
from vts_drive.report import parse_risk
from vts_drive.scoring import box_iou, exact_match
from vts_drive.window import FrameWindow

if TYPE_CHECKING:  # the bench module pulls in torch and the pipeline
    from vts_drive.bench import BenchWindow

BENCHMARKS = ("drama", "lingoqa", "synth")
BOX_CAMERA = "front"  # risk boxes are scored on this camera's image (synthdrive's truth; DRAMA and LingoQA have only it)


@dataclass
class EvalItem:
    key: str
    prompts: list[str]
    load: Callable[[], FrameWindow]  # reads the frames; InputError when they are missing or corrupt


def file_identity(path: Path) -> list:
    """Path, size and modification time: enough to tell that a file was replaced."""
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def risk_fields(answer: str) -> dict:
    risk = parse_risk(answer, default_camera=BOX_CAMERA)
    return {"risk": answer, "object": risk.object, "caption": risk.caption, "bbox": risk.bbox}


def read_frame(path: Path) -> np.ndarray | None:
    """A frame for the report page; None when it cannot be read (the page says so)."""
    try:
        return read_image(path)
    except InputError:
        return None


def box_row(truth: list[float] | None, records: dict[str, dict]) -> Row:
    """Each mode's risk box with its IoU, right at IoU > 0.5 as bbox_acc50 counts it; without a true
    box nothing is scored, and only the boxes are compared."""
    cells = {}
    for mode, record in records.items():
        iou = box_iou(record["bbox"], truth) if truth is not None else None
        text = format_box(valid_box(record["bbox"])) + (f"  IoU {iou:.2f}" if iou is not None else "")
        cells[mode] = Cell(text, iou > 0.5 if iou is not None else None)
    return Row("risk box", format_box(truth), cells)


def text_row(label: str, reference: str, records: dict[str, dict], field: str) -> Row:
    """Free text (a caption, a description) that no verdict decides and the filter leaves alone."""
    return Row(
        label, reference, {mode: Cell(record[field] or "") for mode, record in records.items()}, counts=False
    )


def risk_frame(
    camera: str, image: np.ndarray | None, truth: list[float] | None, records: dict[str, dict]
) -> Frame:
    """A frame with the true box and every mode's box drawn, where the camera is the one boxes are scored on."""
    if camera != BOX_CAMERA:
        return Frame(camera, image)
    return Frame(camera, image, truth, {mode: valid_box(record["bbox"]) for mode, record in records.items()})


class DramaBenchmark:
    """Key frame's clip -> description and risk; scored on the risk caption and box."""

    name = "drama"
    accuracy_metrics = ("bbox_miou", "bbox_acc50", *CAPTION_METRICS)
    primary_metric = "cider"

    def __init__(self, data: Path, split: str, frames: int, limit: int | None = None) -> None:
        self.data = drama.load_drama(data, split)
        self.samples = self.data.samples[:limit]
        self.skipped = dict(self.data.skipped)
        self.items = [
            EvalItem(s.key, [DESCRIPTION_PROMPT, RISK_PROMPT], partial(s.window, frames))
            for s in self.samples
        ]
        split_id = file_identity(Path(split)) if split not in drama.SPLITS else split
        self.identity = {
            "annotations": file_identity(drama.annotation_path(data)),
            "split": split_id,
            "frames": frames,
        }

    def record(self, item: EvalItem, answers: list[str]) -> dict:
        return {"description": answers[0], **risk_fields(answers[1])}

    def score(self, records: dict[str, dict]) -> dict:
        return drama.score_drama(self.samples, records)

    def export(self, records: list[dict], folder: Path) -> None:
        """The prediction lines are DRAMA's predictions file already (key, caption, bbox)."""

    def view(self, index: int, records: dict[str, dict]) -> SampleView:
        """The key frame with the true and predicted boxes; each mode's IoU, caption and description."""
        sample = self.samples[index]
        truth = sample.truth_box()
        rows = [
            box_row(truth, records),
            text_row("risk caption", sample.caption, records, "caption"),
            text_row("description", "", records, "description"),
        ]
        return SampleView(
            sample.key, [risk_frame(BOX_CAMERA, read_frame(sample.image), truth, records)], rows
        )


class LingoQABenchmark:
    """A segment's 5 frames -> answers to all of its questions; scored against the references."""

    name = "lingoqa"
    accuracy_metrics = ("lingo_judge", *CAPTION_METRICS)

    def __init__(self, data: Path, judge: LingoJudge | None = None, limit: int | None = None) -> None:
        self.questions = lingoqa.load_lingoqa(data)
        self.judge = lingoqa.CachedJudge(judge) if judge else None
        self.skipped: dict[str, int] = {}
        segments: dict[str, list[lingoqa.LingoQuestion]] = {}
        for question in self.questions:
            segments.setdefault(question.segment_id, []).append(question)
        self.segments = dict(list(segments.items())[:limit])
        self.items = [
            EvalItem(
                segment, [q.question for q in questions], partial(lingoqa.segment_window, questions[0].images)
            )
            for segment, questions in self.segments.items()
        ]
        self.identity = {"parquet": file_identity(lingoqa.parquet_path(data))}

    @property
    def primary_metric(self) -> str:
        return "lingo_judge" if self.judge else "cider"

    def record(self, item: EvalItem, answers: list[str]) -> dict:
        return {
            "questions": [
                {"question_id": q.question_id, "segment_id": q.segment_id, "answer": answer}
                for q, answer in zip(self.segments[item.key], answers, strict=True)
            ]
        }

    def rows(self, records: list[dict]) -> list[dict]:
        return [row for record in records for row in record["questions"]]

    def score(self, records: dict[str, dict]) -> dict:
        predictions = {
            (row["question_id"], row["segment_id"]): row["answer"]
            for row in self.rows(list(records.values()))
        }
        asked = [q for questions in self.segments.values() for q in questions]
        return lingoqa.score_lingoqa(asked, predictions, self.judge)

    def export(self, records: list[dict], folder: Path) -> None:
        """predictions.csv with the question text, which the official evaluator reads from it."""
        asked = {q.key: q.question for q in self.questions}
        rows = [
            {**row, "question": asked[row["question_id"], row["segment_id"]]} for row in self.rows(records)
        ]
        lingoqa.write_predictions(folder / "predictions.csv", rows)

    def view(self, index: int, records: dict[str, dict]) -> SampleView:
        """The segment's newest frame and each question's references next to every mode's answer,
        marked by the judge when there is one (its scores are cached from scoring)."""
        questions = self.segments[self.items[index].key]
        rows = []
        for number, question in enumerate(questions):
            answers = {mode: record["questions"][number]["answer"] for mode, record in records.items()}
            if self.judge:
                scores = self.judge.max_scores(
                    [question.question] * len(answers),
                    [question.references] * len(answers),
                    list(answers.values()),
                )
                verdicts = [score > 0 for score in scores]
            else:
                verdicts = [None] * len(answers)
            cells = {
                mode: Cell(answer, verdict)
                for (mode, answer), verdict in zip(answers.items(), verdicts, strict=True)
            }
            rows.append(Row(question.question, " | ".join(question.references), cells))
        return SampleView(
            self.items[index].key, [Frame(BOX_CAMERA, read_frame(questions[0].images[-1]))], rows
        )


class SynthBenchmark:
    """synthdrive windows (all cameras) -> description, risk and the scene's questions; scored
    against the scene graph's truth: exact-match answers, the risk box and caption."""

    name = "synth"
    accuracy_metrics = (
        "qa_exact_match",
        "qa_present",
        "qa_temporal",
        "bbox_miou",
        "bbox_acc50",
        "caption_bleu4",
        "caption_cider",
    )
    primary_metric = "qa_exact_match"

    def __init__(
        self, data: Path, cameras: list[str], frames: int, stride: int, limit: int | None = None
    ) -> None:
        from vts_drive.synth.bench_windows import synth_bench_windows
        from vts_drive.synth.dataset import SynthDataset

        # read up front, as the bench does: synthdrive frames are small (192x128)
        self.windows = synth_bench_windows(data, cameras, frames, stride, limit or sys.maxsize)
        self.skipped: dict[str, int] = {}
        self.items = [
            EvalItem(
                f"{index:05d}",
                [DESCRIPTION_PROMPT, RISK_PROMPT, *w.questions],
                lambda window=w.window: window,
            )
            for index, w in enumerate(self.windows)
        ]
        manifest = SynthDataset(data).root / "manifest.json"
        self.identity = {
            "manifest": file_identity(manifest),
            "cameras": cameras,
            "frames": frames,
            "stride": stride,
        }

    def record(self, item: EvalItem, answers: list[str]) -> dict:
        return {"description": answers[0], **risk_fields(answers[1]), "answers": answers[2:]}

    def score(self, records: dict[str, dict]) -> dict:
        done = [
            (window, records[item.key])
            for window, item in zip(self.windows, self.items)
            if item.key in records
        ]
        hits = [
            exact_match(a, t)
            for window, record in done
            for a, t in zip(record["answers"], window.truth.answers, strict=True)
        ]
        risky = [(window, record) for window, record in done if window.truth.risk_bbox is not None]
        boxes = localisation_metrics(
            [record["bbox"] for _, record in risky], [window.truth.risk_bbox for window, _ in risky]
        )
        captions = caption_metrics(
            [record["caption"] for _, record in risky], [[window.truth.risk_caption] for window, _ in risky]
        )
        by_kind = qa_by_kind(done)
        return {
            "n": len(done),
            "qa_exact_match": sum(hits) / len(hits) if hits else None,
            **{
                f"qa_{kind}": by_kind[kind]["exact_match"] if kind in by_kind else None
                for kind in ("present", "temporal")
            },
            "qa_majority_answer": majority_answer_exact_match([window for window, _ in done]),
            "qa_by_kind": by_kind,
            **boxes,
            **{f"caption_{name}": value for name, value in captions.items()},
            "risk_by_object": risk_by_object(risky),
        }

    def export(self, records: list[dict], folder: Path) -> None:
        """synthdrive has no official predictions format beyond the prediction lines."""

    def view(self, index: int, records: dict[str, dict]) -> SampleView:
        """Each camera's newest frame, the boxes on the front one; the risk object, box and caption,
        the description, and every question's true answer next to each mode's (exact match)."""
        bench = self.windows[index]
        truth, window = bench.truth, bench.window
        frames = [
            risk_frame(camera, images[-1], truth.risk_bbox, records)
            for camera, images in zip(window.cameras, window.images)
        ]
        objects = {
            mode: Cell(record["object"] or "none", record["object"] == truth.risk_object)
            for mode, record in records.items()
        }
        rows = [
            Row("risk object", truth.risk_object or "none", objects),
            box_row(truth.risk_bbox, records),
            text_row("risk caption", truth.risk_caption, records, "caption"),
            text_row("description", "", records, "description"),
            *(
                Row(
                    question,
                    answer,
                    {
                        mode: Cell(record["answers"][number], exact_match(record["answers"][number], answer))
                        for mode, record in records.items()
                    },
                )
                for number, (question, answer) in enumerate(zip(bench.questions, truth.answers, strict=True))
            ),
        ]
        return SampleView(self.items[index].key, frames, rows)


def majority_answers(windows: list[BenchWindow]) -> dict[str, str]:
    """Each question's most common true answer over these windows."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for window in windows:
        for question, answer in zip(window.questions, window.truth.answers, strict=True):
            counts[question][answer] += 1
    return {question: answers.most_common(1)[0][0] for question, answers in counts.items()}


def majority_answer_exact_match(windows: list[BenchWindow]) -> float | None:
    """Exact match of answering each question with its most common true answer over these windows:
    the most a model that sees nothing could score here, knowing every answer's frequency. Learned
    vision is what QA exact match gains over it (a model shown black frames may score far less)."""
    majority = majority_answers(windows)
    hits = [
        exact_match(majority[q], a)
        for window in windows
        for q, a in zip(window.questions, window.truth.answers)
    ]
    return sum(hits) / len(hits) if hits else None


def qa_by_kind(done: list[tuple[BenchWindow, dict]]) -> dict[str, dict]:
    """Exact match and the majority-answer baseline per kind of question (present: the newest
    frame answers it; temporal: it needs the window's past) and per question."""
    from vts_drive.synth.truth import QUESTION_KEYS

    majority = majority_answers([window for window, _ in done])
    rows: dict[str, dict[str, list[bool]]] = defaultdict(lambda: {"model": [], "majority": []})
    for window, record in done:
        for index, (question, truth) in enumerate(zip(window.questions, window.truth.answers, strict=True)):
            kind = window.truth.kind(index)
            for group in (kind, f"{kind}/{QUESTION_KEYS.get(question, question)}"):
                rows[group]["model"].append(exact_match(record["answers"][index], truth))
                rows[group]["majority"].append(exact_match(majority[question], truth))
    table: dict[str, dict] = {"per_question": {}}
    for group, found in sorted(rows.items()):
        figures = {
            "n": len(found["model"]),
            "exact_match": sum(found["model"]) / len(found["model"]),
            "majority_answer": sum(found["majority"]) / len(found["majority"]),
        }
        kind, _, question = group.partition("/")
        if question:
            table["per_question"][question] = {"kind": kind, **figures}
        else:
            table[kind] = figures
    return table


def risk_by_object(risky: list[tuple[BenchWindow, dict]]) -> dict[str, dict[str, float]]:
    """Per kind of risk object: how often the model names it and how often its box reaches IoU 0.5.
    Separates the two ways a box is missed: the wrong object, or the right one placed badly."""
    table: dict[str, dict[str, float]] = {}
    for kind in sorted({window.truth.risk_object for window, _ in risky if window.truth.risk_object}):
        rows = [(window, record) for window, record in risky if window.truth.risk_object == kind]
        named = [(window, record) for window, record in rows if record["object"] == kind]
        ious = [box_iou(record["bbox"], window.truth.risk_bbox) for window, record in rows]
        table[kind] = {
            "n": len(rows),
            "named": len(named) / len(rows),
            "bbox_acc50": sum(iou > 0.5 for iou in ious) / len(rows),
        }
    return table


Benchmark = DramaBenchmark | LingoQABenchmark | SynthBenchmark


def sample_views(
    benchmark: Benchmark, records_by_mode: dict[str, dict[str, dict]], limit: int
) -> tuple[list[SampleView], int]:
    """Views of the first `limit` samples that some mode has a prediction for, and how many have one."""
    answered = []
    for index, item in enumerate(benchmark.items):
        records = {mode: found[item.key] for mode, found in records_by_mode.items() if item.key in found}
        if records:
            answered.append((index, records))
    return [benchmark.view(index, records) for index, records in answered[:limit]], len(answered)


def load_benchmark(
    name: str,
    data: Path,
    *,
    split: str = "test",
    frames: int = 4,
    stride: int = 4,
    cameras: list[str] | None = None,
    judge: LingoJudge | None = None,
    limit: int | None = None,
) -> Benchmark:
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    if frames < 1:
        raise InputError(f"--frames must be at least 1, got {frames}")
    if name == "drama":
        return DramaBenchmark(data, split, frames, limit)
    if name == "lingoqa":
        return LingoQABenchmark(data, judge, limit)
    if name == "synth":
        return SynthBenchmark(data, cameras or ["front", "front_left", "front_right"], frames, stride, limit)
    raise InputError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
