"""`vts-drive eval` and `vts-drive score` on a synthdrive export with the tiny model: modes side by
side, resume without recomputation, restart on changed settings, blind baseline, clear errors."""

import csv
import json
from pathlib import Path

import pytest
import torch

from test_eval_judge import tiny_judge
from vts_drive.cli import main
from vts_drive.eval import lingoqa
from vts_drive.pipeline import Pipeline
from vts_drive.synth.generate import SynthConfig, generate_dataset

SYNTH_METRICS = {
    "n",
    "qa_exact_match",
    "bbox_miou",
    "bbox_acc50",
    "caption_bleu4",
    "caption_cider",
    "reports_per_s",
    "vision_tokens",
    "peak_mem_mb",
}


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "d"
    generate_dataset(
        out,
        SynthConfig(scenes=3, seed=7, frames=6, image_size=(96, 64), formats=("synth", "drama", "lingoqa")),
    )
    return out


@pytest.fixture(scope="module")
def model(routed_model_dir) -> Path:
    return routed_model_dir


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Windows of the tiny model are too small for two threads to pay off on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def answer_calls(monkeypatch) -> list:
    """Every window the pipeline answers, in order."""
    calls = []
    answer = Pipeline.answer

    def counted(self, window, prompts):
        calls.append(window)
        return answer(self, window, prompts)

    monkeypatch.setattr(Pipeline, "answer", counted)
    return calls


def eval_synth(export, model, out, *extra) -> int:
    return main(
        [
            "eval",
            "synth",
            "--data",
            str(export),
            "--model",
            str(model),
            "--modes",
            "dense,vts+mod",
            "--out",
            str(out),
            "--stride",
            "1",
            "--max-new-tokens",
            "4",
            *extra,
        ]
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_synth_modes_report_and_resume(export, model, tmp_path, answer_calls, capsys):
    out = tmp_path / "r"
    assert eval_synth(export, model, out, "--limit", "2") == 0
    assert len(answer_calls) == 2 * (1 + 2)  # per mode: one warm-up window, two measured
    for mode in ("dense", "vts+mod"):
        assert len(lines(out / mode / "predictions.jsonl")) == 2
        summary = json.loads((out / mode / "metrics.json").read_text())
        assert SYNTH_METRICS <= set(summary["metrics"]) and summary["metrics"]["n"] == 2
    dense, routed = (
        json.loads((out / m / "metrics.json").read_text())["metrics"] for m in ("dense", "vts+mod")
    )
    assert routed["vision_tokens"] < dense["vision_tokens"]  # VTS dropped tokens of non-keyframes
    report = (out / "report.md").read_text()
    assert (
        "| dense | 2 |" in report
        and "| vts+mod | 2 |" in report
        and "(x" in report
        and "reports_per_s" in report
    )
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    first = {mode: lines(out / mode / "predictions.jsonl") for mode in ("dense", "vts+mod")}
    answer_calls.clear()
    assert eval_synth(export, model, out, "--limit", "4") == 0
    assert len(answer_calls) == 2 * (1 + 2)  # only the two new windows of each mode (+ warm-up)
    for mode, kept in first.items():
        assert (
            lines(out / mode / "predictions.jsonl")[:2] == kept
            and len(lines(out / mode / "predictions.jsonl")) == 4
        )

    answer_calls.clear()
    assert eval_synth(export, model, out, "--limit", "4") == 0
    assert answer_calls == []  # everything was finished

    predictions = out / "dense" / "predictions.jsonl"
    text = predictions.read_text()
    predictions.write_text(
        text[: len(text) - len(text.splitlines()[-1]) // 2 - 1]
    )  # killed while writing the last line
    assert eval_synth(export, model, out, "--limit", "4", "--modes", "dense") == 0
    assert len(answer_calls) == 1 + 1 and len(lines(predictions)) == 4
    assert all(json.loads(line) for line in lines(predictions))

    capsys.readouterr()
    answer_calls.clear()
    assert eval_synth(export, model, out, "--limit", "4", "--max-new-tokens", "5") == 0
    assert (
        "pipeline changed since the stored predictions; starting this mode afresh" in capsys.readouterr().err
    )
    assert len(answer_calls) == 2 * (1 + 4)
    assert json.loads((out / "dense" / "config.json").read_text())["pipeline"]["max_new_tokens"] == 5


def test_blind_answers_from_black_frames(export, model, tmp_path, answer_calls):
    out = tmp_path / "blind"
    assert (
        main(
            [
                "eval",
                "synth",
                "--data",
                str(export),
                "--model",
                str(model),
                "--modes",
                "dense",
                "--limit",
                "2",
                "--out",
                str(out),
                "--max-new-tokens",
                "3",
                "--blind",
            ]
        )
        == 0
    )
    assert len(answer_calls) == 3
    assert all(not image.any() for window in answer_calls for images in window.images for image in images)
    assert "blind" in (out / "report.md").read_text()
    assert json.loads((out / "dense" / "metrics.json").read_text())["blind"] is True


def test_lingoqa_eval_then_score_the_official_csv(export, model, tmp_path, capsys):
    judge = tiny_judge(tmp_path / "judge", bias=0.0)
    out = tmp_path / "lingo"
    assert (
        main(
            [
                "eval",
                "lingoqa",
                "--data",
                str(export / "lingoqa"),
                "--model",
                str(model),
                "--modes",
                "dense,vts",
                "--limit",
                "1",
                "--out",
                str(out),
                "--max-new-tokens",
                "4",
                "--judge",
                str(judge),
            ]
        )
        == 0
    )
    questions = lingoqa.load_lingoqa(export / "lingoqa")
    asked = sum(
        q.segment_id == questions[0].segment_id for q in questions
    )  # --limit 1: the first segment's questions
    with (out / "dense" / "predictions.csv").open(newline="") as rows:  # an answer may hold a line break
        csv_rows = list(csv.reader(rows))
    assert csv_rows[0] == ["question_id", "segment_id", "question", "answer"] and len(csv_rows) == 1 + asked
    evaluated = json.loads((out / "vts" / "metrics.json").read_text())["metrics"]
    assert evaluated["n"] == asked and 0.0 <= evaluated["lingo_judge"] <= 1.0

    scored = tmp_path / "scored.json"
    assert (
        main(
            [
                "score",
                "--benchmark",
                "lingoqa",
                "--predictions",
                str(out / "vts" / "predictions.csv"),
                "--data",
                str(export / "lingoqa"),
                "--judge",
                str(judge),
                "--json",
                str(scored),
            ]
        )
        == 0
    )
    assert f"{asked} of {len(questions)} samples have a prediction" in capsys.readouterr().err
    again = json.loads(scored.read_text())
    assert again == {name: evaluated[name] for name in again}

    assert (
        main(
            [
                "score",
                "--benchmark",
                "lingoqa",
                "--predictions",
                str(out / "vts" / "predictions.csv"),
                "--data",
                str(export / "lingoqa"),
                "--json",
                str(scored),
            ]
        )
        == 0
    )
    assert (
        json.loads(scored.read_text())["lingo_judge"] is None
    )  # without a judge: not computed, never guessed


def test_drama_eval_then_score_the_predictions(export, model, tmp_path):
    out = tmp_path / "drama"
    assert (
        main(
            [
                "eval",
                "drama",
                "--data",
                str(export / "drama"),
                "--split",
                "all",
                "--model",
                str(model),
                "--modes",
                "dense",
                "--out",
                str(out),
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )
    evaluated = json.loads((out / "dense" / "metrics.json").read_text())
    assert evaluated["skipped"]["risk_no"] == 1 and evaluated["metrics"]["n"] == 2
    scored = tmp_path / "scored.json"
    assert (
        main(
            [
                "score",
                "--benchmark",
                "drama",
                "--predictions",
                str(out / "dense" / "predictions.jsonl"),
                "--data",
                str(export / "drama"),
                "--split",
                "all",
                "--json",
                str(scored),
            ]
        )
        == 0
    )
    again = json.loads(scored.read_text())
    assert again == {name: evaluated["metrics"][name] for name in again}


def test_clear_errors(export, model, tmp_path, capsys):
    base = ["--model", str(model), "--out", str(tmp_path / "r")]
    cases = [
        (
            ["eval", "drama", "--data", str(tmp_path / "nowhere"), *base],
            "nowhere does not exist: DRAMA needs integrated_output_v2.json",
        ),
        (
            ["eval", "lingoqa", "--data", str(export / "drama"), *base],
            "val.parquet does not exist: LingoQA needs val.parquet",
        ),
        (["eval", "synth", "--data", str(export), "--modes", "dense,fast", *base], "mode spec 'fast'"),
        (
            ["eval", "drama", "--data", str(export / "drama"), "--judge", "x", *base],
            "--judge applies to lingoqa only",
        ),
        (["eval", "synth", "--data", str(export), "--limit", "0", *base], "--limit must be at least 1"),
        (
            [
                "score",
                "--benchmark",
                "lingoqa",
                "--predictions",
                str(tmp_path / "none.csv"),
                "--data",
                str(export / "lingoqa"),
            ],
            "none.csv does not exist",
        ),
    ]
    (tmp_path / "other.csv").write_text("question_id,segment_id,answer\nq,s,yes\n")
    cases.append(
        (
            [
                "score",
                "--benchmark",
                "lingoqa",
                "--predictions",
                str(tmp_path / "other.csv"),
                "--data",
                str(export / "lingoqa"),
            ],
            "no prediction in",
        )
    )
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_a_mode_with_a_path_setting_gets_one_folder():
    from vts_drive.eval.runner import mode_folder_name

    assert "/" not in mode_folder_name("vts+mod[backend=onnxruntime,engines=engines/tiny]")
