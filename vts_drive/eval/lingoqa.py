"""LingoQA: the evaluation parquet, the official predictions.csv, and scoring.

val.parquet has one row per (question, reference answer): columns question_id, segment_id,
images (5 frame paths, relative to the parquet's folder), question, answer. Rows of one
(question_id, segment_id) are one question with its references. The model sees a segment's
frames once and answers all of that segment's questions from the shared visual context.
An image path that leads outside the parquet's folder (`..`, absolute, a symlink) is an
InputError naming the question: the loader reads nothing outside its data.

predictions.csv is written for the official evaluator (benchmark/evaluate.py of wayveai/LingoQA),
which reads it with pandas' read_csv defaults, merges it with the references on question_id and
segment_id, and takes the question from the predictions: hence the columns question_id,
segment_id, question, answer (with three, it fails with KeyError: 'question'). read_csv turns
a field that is exactly one of PANDAS_NA_STRINGS ("None", "", "N/A", ...) into NaN, quoted or not,
and the judge would then read "nan" or "none". Such an answer is written with one leading space
(" None", " "): read_csv keeps it, and Lingo-Judge (which strips answers) and the caption
metrics (whose tokenizer drops spaces) score it as the answer itself.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from vts_drive.errors import InputError
from vts_drive.eval import judge
from vts_drive.eval.files import inside_folder, read_utf8
from vts_drive.eval.metrics import caption_metrics
from vts_drive.inputs import read_image
from vts_drive.window import FrameWindow

COLUMNS = ("question_id", "segment_id", "images", "question", "answer")
PREDICTION_COLUMNS = (
    "question_id",
    "segment_id",
    "question",
    "answer",
)  # as the official evaluator reads them
REQUIRED_COLUMNS = (
    "question_id",
    "segment_id",
    "answer",
)  # what scoring needs (LingoQA's README names only these)
# read_csv's default na_values (pandas 1.x to 3.x): a field equal to one of them reads as NaN
PANDAS_NA_STRINGS = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
FRAME_PERIOD_NS = 1_000_000_000  # stamps for the segment's frames; only their order matters


@dataclass
class LingoQuestion:
    question_id: str
    segment_id: str
    question: str
    images: list[Path]
    references: list[str]

    @property
    def key(self) -> tuple[str, str]:
        return self.question_id, self.segment_id


def parquet_path(data: Path) -> Path:
    data = Path(data)
    path = data / "val.parquet" if data.is_dir() else data
    if not path.is_file():
        raise InputError(f"{path} does not exist: LingoQA needs val.parquet (give its folder or the file)")
    return path


def load_lingoqa(data: Path) -> list[LingoQuestion]:
    """Questions in the parquet's order, each with all its references."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = parquet_path(data)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise InputError(f"{path} is not a readable parquet file: {error}") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(missing)}; LingoQA needs {', '.join(COLUMNS)}")
    questions: dict[tuple[str, str], LingoQuestion] = {}
    for number, row in enumerate(table.select(list(COLUMNS)).to_pylist(), 1):
        key = (str(row["question_id"]), str(row["segment_id"]))
        if key not in questions:
            where = f"{path} row {number} (question {key[0]} of segment {key[1]})"
            questions[key] = LingoQuestion(
                *key, str(row["question"]), segment_images(path.parent, row["images"], where), []
            )
        questions[key].references.append(str(row["answer"]))
    if not questions:
        raise InputError(f"{path} holds no questions")
    return list(questions.values())


def segment_images(folder: Path, images, where: str) -> list[Path]:
    """A row's `images` (paths relative to the parquet's folder), each resolved inside that folder."""
    if not images:
        raise InputError(f"{where} has no images")
    if not isinstance(images, list) or not all(isinstance(image, str) for image in images):
        raise InputError(
            f"{where}: images must be a list of paths, found {type(images).__name__} {str(images)[:80]!r}"
        )
    return [inside_folder(folder, folder / image, where) for image in images]


def segment_window(images: list[Path]) -> FrameWindow:
    """A segment's frames as a one-camera window (LingoQA is front-facing)."""
    return FrameWindow(
        ["front"], [[read_image(p) for p in images]], [[i * FRAME_PERIOD_NS for i in range(len(images))]]
    )


def survives_read_csv(answer: str) -> str:
    """The answer as pandas' read_csv will give it back: one that it would read as NaN gets a
    leading space, which Lingo-Judge and the caption metrics ignore."""
    return " " + answer if answer in PANDAS_NA_STRINGS else answer


def write_predictions(path: Path, rows: list[dict]) -> None:
    """The official predictions file: CSV with question_id, segment_id, question, answer."""
    with Path(path).open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=PREDICTION_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**row, "answer": survives_read_csv(row["answer"])} for row in rows)


def read_predictions(path: Path) -> dict[tuple[str, str], str]:
    """{(question_id, segment_id): answer} from a UTF-8 predictions CSV. A question answered twice is
    an InputError naming both lines (which answer counts would be a guess), and so is a line the csv
    module refuses, such as a field over its limit of 131072 characters."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"predictions file {path} does not exist")
    reader = csv.DictReader(io.StringIO(read_utf8(path), newline=""))
    predictions, line_of = {}, {}
    try:
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(
                f"predictions file {path} lacks column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}"
            )
        for row in reader:
            key = (row["question_id"], row["segment_id"])
            if key in line_of:
                raise InputError(
                    f"predictions file {path} line {reader.line_num} repeats the question and segment of line {line_of[key]}: {key}"
                )
            predictions[key], line_of[key] = row["answer"] or "", reader.line_num
    except csv.Error as error:
        raise InputError(
            f"predictions file {path} line {reader.line_num + 1}: {error}"
        ) from None  # the row after the last one read
    return predictions


def score_lingoqa(
    questions: list[LingoQuestion],
    predictions: dict[tuple[str, str], str],
    judge_model: judge.LingoJudge | CachedJudge | None,
    captions: bool = True,
) -> dict[str, float | int | None]:
    """Metrics over the questions that have a prediction (as the official evaluator merges them);
    lingo_judge is None without a judge. Without `captions`, no caption metric is computed, so
    no Java is needed."""
    answered = [q for q in questions if q.key in predictions]
    answers = [predictions[q.key] for q in answered]
    references = [q.references for q in answered]
    metrics: dict[str, float | int | None] = {"n": len(answered)}
    scores = (
        judge_model.max_scores([q.question for q in answered], references, answers)
        if judge_model and answered
        else []
    )
    metrics["lingo_judge"] = judge.accuracy(scores) if judge_model else None
    if captions:
        metrics.update(caption_metrics(answers, references))
    return metrics


class CachedJudge:
    """A judge that remembers its scores, so that eval's report page marks each answer right or
    wrong without running the classifier again over what the metrics already judged."""

    def __init__(self, judge_model: judge.LingoJudge) -> None:
        self.judge = judge_model
        self.scores: dict[tuple[str, tuple[str, ...], str], float] = {}

    def max_scores(
        self, questions: list[str], references: list[list[str]], predictions: list[str]
    ) -> list[float]:
        keys = [(q, tuple(refs), p) for q, refs, p in zip(questions, references, predictions, strict=True)]
        new = list(dict.fromkeys(key for key in keys if key not in self.scores))
        if new:
            computed = self.judge.max_scores(
                [q for q, _, _ in new], [list(refs) for _, refs, _ in new], [p for _, _, p in new]
            )
            self.scores.update(zip(new, computed, strict=True))
        return [self.scores[key] for key in keys]
