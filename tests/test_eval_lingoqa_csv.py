"""LingoQA's predictions.csv as the official evaluator (benchmark/evaluate.py of wayveai/LingoQA)
reads it, with pandas, and `score --judge-only`, which needs no Java."""

from pathlib import Path

import pytest

from test_eval_judge import tiny_judge
from vts_drive.cli import main
from vts_drive.eval import judge, lingoqa, metrics
from vts_drive.synth.generate import SynthConfig, generate_dataset

pd = pytest.importorskip("pandas")

ANSWERS = [
    "None",
    "",
    "N/A",
    "nan",
    "NULL",
    " None",
    "no, none",
    'a "quoted", multi\nline answer',
    "01",
    "Yes.",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "d"
    generate_dataset(out, SynthConfig(scenes=2, seed=5, frames=6, image_size=(96, 64), formats=("lingoqa",)))
    return out / "lingoqa"


def predictions_file(data: Path, path: Path) -> tuple[Path, list[dict]]:
    """Every question of the data answered with ANSWERS in turn, written as eval writes it."""
    questions = lingoqa.load_lingoqa(data)
    rows = [
        {
            "question_id": q.question_id,
            "segment_id": q.segment_id,
            "question": q.question,
            "answer": ANSWERS[i % len(ANSWERS)],
        }
        for i, q in enumerate(questions)
    ]
    lingoqa.write_predictions(path, rows)
    return path, rows


def official_merge(predictions: Path, data: Path):
    """The official evaluator's reading, line for line: references grouped with their question,
    predictions read with read_csv's defaults, merged on the two ids."""
    references = pd.read_parquet(data / "val.parquet")
    references = references[["question_id", "segment_id", "question", "answer"]]
    references = references.groupby(["question_id", "segment_id", "question"]).agg(list)
    references = references.rename({"answer": "references"}, axis=1)
    read = pd.read_csv(predictions).rename({"answer": "prediction"}, axis=1)
    return pd.merge(read, references, on=["question_id", "segment_id"])


def test_the_official_reader_finds_the_question_and_every_answer(data, tmp_path):
    path, rows = predictions_file(data, tmp_path / "predictions.csv")
    merged = official_merge(path, data)
    assert len(merged) == len(rows)
    assert list(merged["question"]) == [
        row["question"] for row in rows
    ]  # evaluate_question reads data_dict["question"]
    read = list(merged["prediction"])
    assert not any(isinstance(answer, float) for answer in read)  # no NaN
    assert [judge.preprocess(answer) for answer in read] == [
        judge.preprocess(row["answer"]) for row in rows
    ]  # what Lingo-Judge sees


def test_without_the_question_column_the_official_reader_has_no_question(data, tmp_path):
    """Why the column is written: LingoQA's README names three columns, but its script needs four."""
    path, _ = predictions_file(data, tmp_path / "predictions.csv")
    pd.read_csv(path).drop(columns="question").to_csv(tmp_path / "three.csv", index=False)
    assert "question" not in official_merge(tmp_path / "three.csv", data).columns


def test_the_written_answers_cover_every_string_read_csv_reads_as_missing():
    from pandas._libs.parsers import STR_NA_VALUES

    assert STR_NA_VALUES <= lingoqa.PANDAS_NA_STRINGS
    for answer in lingoqa.PANDAS_NA_STRINGS:
        assert lingoqa.survives_read_csv(answer) not in STR_NA_VALUES
        assert judge.preprocess(lingoqa.survives_read_csv(answer)) == judge.preprocess(answer)


def test_score_reads_its_own_csv_and_a_three_column_one(data, tmp_path, capsys):
    path, rows = predictions_file(data, tmp_path / "predictions.csv")
    read = lingoqa.read_predictions(path)
    assert [judge.preprocess(read[row["question_id"], row["segment_id"]]) for row in rows] == [
        judge.preprocess(row["answer"]) for row in rows
    ]
    pd.read_csv(path, keep_default_na=False).drop(columns="question").to_csv(
        tmp_path / "three.csv", index=False
    )
    assert set(lingoqa.read_predictions(tmp_path / "three.csv")) == set(read)


def test_score_with_only_the_judge_needs_no_java(data, tmp_path, monkeypatch, capsys):
    path, _ = predictions_file(data, tmp_path / "predictions.csv")
    folder = tiny_judge(tmp_path / "judge", bias=50.0)
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)  # no java on PATH
    argv = [
        "score",
        "--benchmark",
        "lingoqa",
        "--predictions",
        str(path),
        "--data",
        str(data),
        "--judge",
        str(folder),
    ]
    capsys.readouterr()
    assert main(argv) == 2 and "need Java" in capsys.readouterr().err
    assert main([*argv, "--judge-only"]) == 0
    printed = capsys.readouterr().out
    assert "lingo_judge  1" in printed and "bleu" not in printed
    assert main(argv[:-2] + ["--judge-only"]) == 2
    assert "--judge-only needs --benchmark lingoqa and --judge" in capsys.readouterr().err
