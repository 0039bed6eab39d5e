"""Attacks on the predictions that `vts-drive score` and `vts-drive eval` read: bytes that are not
UTF-8, a 128 KB answer, a carriage return inside an answer, DRAMA lines of the wrong types, a key
given twice, and eval prediction lines that are not records. All through the real CLI on real
files (caption metrics run pycocoevalcap's Java tools: Java is needed, as for `score` itself)."""

import json
import shutil
from pathlib import Path

import pytest

from vts_drive.cli import main
from vts_drive.eval import drama, lingoqa, metrics
from vts_drive.synth.generate import SynthConfig, generate_dataset


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "d"
    generate_dataset(
        out, SynthConfig(scenes=3, seed=7, frames=6, image_size=(96, 64), formats=("drama", "lingoqa"))
    )
    return out


def run(argv: list, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(arg) for arg in argv])
    return code, capsys.readouterr().err


def drama_lines(export: Path) -> list[str]:
    """A perfect DRAMA predictions file, one JSON line per sample."""
    samples = drama.load_drama(export / "drama", split="all").samples
    return [json.dumps({"key": s.key, "caption": s.caption, "bbox": s.truth_box()}) for s in samples]


def lingoqa_predictions(export: Path, path: Path, answer=lambda question: question.references[0]) -> Path:
    """A LingoQA predictions.csv answering every question with its first reference, unless told otherwise."""
    rows = [
        {"question_id": q.question_id, "segment_id": q.segment_id, "answer": answer(q)}
        for q in lingoqa.load_lingoqa(export / "lingoqa")
    ]
    lingoqa.write_predictions(path, rows)
    return path


def lingoqa_lines(export: Path, path: Path) -> list[str]:
    """The lines of a LingoQA predictions.csv, header first."""
    return lingoqa_predictions(export, path).read_text().splitlines(keepends=True)


def score_file(export: Path, benchmark: str, path: Path, capsys, *extra) -> tuple[int, str]:
    argv = ["score", "--benchmark", benchmark, "--data", export / benchmark, "--predictions", path, *extra]
    return run(argv + (["--split", "all"] if benchmark == "drama" else []), capsys)


@pytest.mark.parametrize("benchmark", ["drama", "lingoqa"])
def test_predictions_that_are_not_utf8_name_the_file_and_line(export, tmp_path, capsys, benchmark):
    path = tmp_path / "predictions"
    lines = [
        line.rstrip("\n")
        for line in (drama_lines(export) if benchmark == "drama" else lingoqa_lines(export, path))
    ]
    data = [line.encode() for line in lines]
    data[1] = (
        data[1].replace(b"the", b"th\xe9", 1) if benchmark == "drama" else data[1] + b"\xe9"
    )  # latin-1, not UTF-8
    path.write_bytes(b"\n".join(data) + b"\n")
    code, err = score_file(export, benchmark, path, capsys)
    assert code == 2
    assert f"{path} line 2 is not UTF-8" in err


def test_an_overlong_answer_is_cut_to_the_documented_limit(export, tmp_path, capsys):
    """A model caught in a loop: one caption repeated to 128 KB (METEOR's aligner runs out of memory
    on it). It is scored as its first MAX_CAPTION_TOKENS tokens, and the cut is said."""
    lines = [json.loads(line) for line in drama_lines(export)]
    caption = lines[0]["caption"]
    lines[0]["caption"] = ((caption + " ") * (131072 // len(caption)))[:131072]
    long, cut = tmp_path / "long.jsonl", tmp_path / "cut.jsonl"
    long.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, err = score_file(export, "drama", long, capsys, "--json", tmp_path / "long.json")
    assert code == 0
    limit = metrics.MAX_CAPTION_TOKENS
    assert f"1 caption(s) longer than {limit} tokens cut to their first {limit}" in err

    words = (caption.replace(",", "").split() * (131072 // len(caption)))[
        :limit
    ]  # PTB tokens: punctuation goes
    lines[0]["caption"] = " ".join(words)
    cut.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert score_file(export, "drama", cut, capsys, "--json", tmp_path / "cut.json")[0] == 0
    assert json.loads((tmp_path / "long.json").read_text()) == json.loads((tmp_path / "cut.json").read_text())


def test_a_lingoqa_answer_beyond_the_csv_field_limit_is_refused_naming_the_line(export, tmp_path, capsys):
    """Python's csv module stops at fields of 131072 characters; such an answer is refused, not a traceback."""
    path = tmp_path / "predictions.csv"
    lines = lingoqa_lines(export, path)
    question_id, segment_id, _ = lines[2].split(",", 2)
    path.write_text("".join(lines[:2]) + f"{question_id},{segment_id},{'no ' * 50_000}\n")
    code, err = score_file(export, "lingoqa", path, capsys)
    assert code == 2
    assert f"{path} line 3: field larger than field limit (131072)" in err


def test_a_carriage_return_inside_an_answer_scores_as_a_space(export, tmp_path, capsys):
    """The PTB tokenizer reads one caption per line; a CR (or U+2028) inside an answer must not shift
    every later answer onto the next question's references."""
    plain = lingoqa_predictions(export, tmp_path / "plain.csv")
    broken = lingoqa_predictions(
        export,
        tmp_path / "broken.csv",
        lambda q: q.references[0].replace(" ", "\r", 1).replace(" ", "\u2028", 1) + "\r",
    )
    assert b"\r" in broken.read_bytes()
    for path in (plain, broken):
        assert score_file(export, "lingoqa", path, capsys, "--json", path.with_suffix(".json"))[0] == 0
    scored = json.loads(broken.with_suffix(".json").read_text())
    assert scored == json.loads(plain.with_suffix(".json").read_text()) and scored["bleu1"] == pytest.approx(
        1.0
    )


@pytest.mark.parametrize(
    "bad, problem",
    [
        (
            {"key": ["clips/scene_00001/frame_000005.png"], "caption": "a car", "bbox": None},
            '"key" must be a string',
        ),
        ({"caption": "a car", "bbox": None}, '"key" must be a string'),
        ({"key": "K", "caption": 5, "bbox": None}, '"caption" must be a string or null'),
        (
            {"key": "K", "caption": "a car", "bbox": "0.1,0.1,0.5,0.5"},
            '"bbox" must be null or four finite numbers',
        ),
        (
            {"key": "K", "caption": "a car", "bbox": [0.1, 0.1, 0.5]},
            '"bbox" must be null or four finite numbers',
        ),
        (
            {"key": "K", "caption": "a car", "bbox": [0.1, 0.1, float("nan"), 0.5]},
            '"bbox" must be null or four finite numbers',
        ),
        ({"key": "K", "caption": "a car", "bbox": [0.5, 0.1, 0.1, 0.5]}, "x1 <= x2 and y1 <= y2"),
        (
            {"key": "K", "caption": "a car", "bbox": [0.1, True, 0.5, 0.5]},
            '"bbox" must be null or four finite numbers',
        ),
        ([1, 2, 3], "not a JSON object"),
        ("FIRST", "repeats the key of line 1"),
    ],
)
def test_drama_prediction_lines_of_the_wrong_types_name_the_file_and_line(
    export, tmp_path, capsys, bad, problem
):
    lines = drama_lines(export)
    if bad == "FIRST":
        bad = json.loads(lines[0])
    if isinstance(bad, dict) and bad.get("key") == "K":
        bad["key"] = json.loads(lines[1])["key"]
    path = tmp_path / "predictions.jsonl"
    path.write_text(f"{lines[0]}\n{json.dumps(bad)}\n" + "".join(line + "\n" for line in lines[1:]))
    code, err = score_file(export, "drama", path, capsys)
    assert code == 2
    assert f"{path} line 2" in err and problem in err


def test_lingoqa_answer_given_twice_names_both_lines(export, tmp_path, capsys):
    first, second = lingoqa.load_lingoqa(export / "lingoqa")[:2]
    rows = [
        {"question_id": q.question_id, "segment_id": q.segment_id, "answer": answer}
        for q, answer in ((first, "yes"), (second, "no"), (first, "no, two"))
    ]
    path = tmp_path / "predictions.csv"
    lingoqa.write_predictions(path, rows)
    code, err = score_file(export, "lingoqa", path, capsys)
    assert code == 2
    assert f"{path} line 4 repeats the question and segment of line 2" in err


@pytest.fixture(scope="module")
def finished_eval(export, tiny_model_dir, tmp_path_factory) -> Path:
    """A finished `eval drama` run of the dense mode (two windows)."""
    out = tmp_path_factory.mktemp("eval") / "out"
    assert main(eval_args(export, tiny_model_dir, out)) == 0
    return out


def eval_args(export: Path, model: Path, out: Path) -> list[str]:
    return [
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
        "2",
    ]


def test_eval_drops_a_last_line_that_is_not_a_record_and_says_so(
    export, tiny_model_dir, finished_eval, tmp_path, capsys
):
    out = tmp_path / "out"
    shutil.copytree(finished_eval, out)
    predictions = out / "dense" / "predictions.jsonl"
    kept = predictions.read_bytes()
    predictions.write_bytes(kept + b"[1, 2, 3]\n")
    code, err = run(eval_args(export, tiny_model_dir, out), capsys)
    assert code == 0
    assert f"{predictions} line 3 is not a finished prediction; dropped" in err
    assert predictions.read_bytes() == kept
    assert json.loads((out / "dense" / "metrics.json").read_text())["metrics"]["n"] == 2


@pytest.mark.parametrize(
    "bad, problem",
    [
        (b"[1, 2, 3]", "is not a prediction record"),
        (b'{"key": 7, "seconds": 0.1, "vision_tokens": 4, "peak_mem_mb": 0.0}', "is not a prediction record"),
        (b'{"key": "clips/scene_00001/frame_000005.png"}', "is not a prediction record"),
        (
            b'{"key": "x", "seconds": "fast", "vision_tokens": 4, "peak_mem_mb": 0.0}',
            "is not a prediction record",
        ),
        (b'{"key": "caf\xe9"}', "is not a prediction record"),
        (b"FIRST", "repeats the key of line 1"),
    ],
)
def test_eval_refuses_a_line_inside_the_predictions_that_is_not_a_record(
    export, tiny_model_dir, finished_eval, tmp_path, capsys, bad, problem
):
    out = tmp_path / "out"
    shutil.copytree(finished_eval, out)
    predictions = out / "dense" / "predictions.jsonl"
    first, *rest = predictions.read_bytes().splitlines(keepends=True)
    tampered = first + (first if bad == b"FIRST" else bad + b"\n") + b"".join(rest)
    predictions.write_bytes(tampered)
    code, err = run(eval_args(export, tiny_model_dir, out), capsys)
    assert code == 2
    assert f"{predictions} line 2 {problem}" in err
    assert predictions.read_bytes() == tampered  # nothing dropped, nothing recomputed
