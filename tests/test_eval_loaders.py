"""DRAMA and LingoQA loaders on a synthdrive export and on hand-made files: skipped entries
counted, splits, clips from frames, mp4 and gif, references grouped, clear errors."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vts_drive.errors import InputError
from vts_drive.eval import drama, lingoqa
from vts_drive.eval.benchmarks import load_benchmark
from vts_drive.inputs import read_image
from vts_drive.synth.dataset import SynthDataset
from vts_drive.synth.generate import SynthConfig, generate_dataset


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "d"
    generate_dataset(
        out,
        SynthConfig(scenes=3, seed=7, frames=6, image_size=(96, 64), formats=("synth", "drama", "lingoqa")),
    )
    return out


def test_drama_export_loads_with_normalised_truth(export):
    data = drama.load_drama(export / "drama", split="all")
    entries = json.loads((export / "drama" / "integrated_output_v2.json").read_text())
    risky = [e for e in entries if e["Risk"] == "Yes"]
    assert data.entries == 3 and len(data.samples) == len(risky) >= 1
    assert data.skipped == {"risk_no": 3 - len(risky)}
    scenes = {scene.scene_id: scene for scene in SynthDataset(export).scenes}
    for sample in data.samples:
        truth = scenes[sample.image.parent.name].truth[-1]
        assert sample.caption == truth.risk_caption
        assert sample.truth_box() == pytest.approx(truth.risk_box, abs=1 / 64)
        window = sample.window(4)
        assert window.cameras == ["front"] and window.num_frames == 4
        assert np.array_equal(window.images[0][-1], read_image(sample.image))
        assert np.array_equal(window.images[0][0], read_image(sample.image.parent / "frame_000002.png"))


def clip_only(export: Path, tmp_path: Path, video_name: str) -> tuple[drama.DramaSample, list[np.ndarray]]:
    """The export's first risky clip with only its key frame and a video beside it."""
    sample = drama.load_drama(export / "drama", split="all").samples[0]
    clip = tmp_path / "clip"
    clip.mkdir()
    shutil.copy(sample.image, clip / sample.image.name)
    frames = [read_image(p) for p in sorted(sample.image.parent.glob("frame_*.png"))]
    if video_name.endswith(".gif"):
        pictures = [Image.fromarray(frame) for frame in frames]
        pictures[0].save(clip / video_name, save_all=True, append_images=pictures[1:], duration=250, loop=0)
    else:
        shutil.copy(sample.video, clip / video_name)
    return drama.DramaSample(
        "k", clip / sample.image.name, clip / video_name, sample.box, sample.caption
    ), frames


@pytest.mark.parametrize("video_name", ["clip.mp4", "clip.gif"])
def test_drama_window_from_the_clip_video(export, tmp_path, video_name):
    sample, frames = clip_only(export, tmp_path, video_name)
    window = sample.window(4)
    assert window.num_frames == 4
    assert np.array_equal(window.images[0][-1], frames[-1])  # the key frame itself, not a decoded copy
    for decoded, original in zip(window.images[0][:-1], frames[-4:-1]):
        assert np.abs(decoded.astype(int) - original.astype(int)).mean() < 12  # lossy codecs, same frames


def test_drama_short_clip_repeats_its_first_frame(export, tmp_path):
    sample, frames = clip_only(export, tmp_path, "clip.mp4")
    sample.video = None
    window = sample.window(3)
    assert all(np.array_equal(image, frames[-1]) for image in window.images[0])


def write_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((40, 80, 3), np.uint8))


def entry(url: str, **overrides) -> dict:
    base = {
        "s3_fileUrl": url,
        "s3_instructionReference": "none.gif",
        "Risk": "Yes",
        "Caption": "a car brakes",
        "geometry": [[8, 4], [40, 4], [40, 20], [8, 20]],
    }
    return {**base, **overrides}


def test_drama_skips_what_common_loaders_skip(tmp_path):
    write_png(tmp_path / "combined" / "clip_1" / "frame_000010.png")
    entries = [
        entry(
            "https://bucket.s3.amazonaws.com/drama/combined/clip_1/frame_000010.png"
        ),  # kept, found by its path's tail
        entry("combined/clip_1/frame_000010.png", Risk="No"),
        entry("combined/clip_1/frame_000010.png", Caption="N/A"),
        {k: v for k, v in entry("combined/clip_1/frame_000010.png").items() if k != "Caption"},
        entry("combined/clip_1/frame_000010.png", geometry=[]),
        entry("combined/clip_1/frame_000010.png", geometry=[[1, 2]]),
        entry("combined/clip_1/frame_000010.png", geometry=[[5, 5], [9, 5], [5, 5], [5, 9]]),  # no area
        "not an entry",
        {k: v for k, v in entry("").items() if k != "s3_fileUrl"},
        entry("combined/clip_9/frame_000001.png"),  # usable, but its key frame is not on disk
    ]
    (tmp_path / drama.ANNOTATIONS).write_text(json.dumps(entries))
    data = drama.load_drama(tmp_path, split="all")
    assert data.entries == 10
    assert data.skipped == {
        "risk_no": 1,
        "caption_na": 2,
        "no_geometry": 3,
        "malformed": 1,
        "no_key_frame": 1,
        "missing_key_frame": 1,
    }
    [sample] = data.samples
    assert sample.image == tmp_path / "combined" / "clip_1" / "frame_000010.png" and sample.video is None
    assert sample.truth_box() == pytest.approx([0.1, 0.1, 0.5, 0.5])


def test_drama_ordered_split_and_split_file(tmp_path):
    urls = [f"clips/c{i:02d}/frame_000001.png" for i in range(20)]
    for url in urls:
        write_png(tmp_path / url)
    (tmp_path / drama.ANNOTATIONS).write_text(
        json.dumps([entry(u) for u in urls] + [entry(urls[0], Risk="No")])
    )
    keys = {
        split: [s.key for s in drama.load_drama(tmp_path, split).samples]
        for split in ("train", "val", "test", "all")
    }
    assert keys["train"] == urls[:14] and keys["val"] == urls[14:17] and keys["test"] == urls[17:]
    assert keys["all"] == urls
    split_file = tmp_path / "mine.txt"
    split_file.write_text(f"# my split\n{urls[5]}\n{urls[2]}\n")
    assert [s.key for s in drama.load_drama(tmp_path, str(split_file)).samples] == [urls[5], urls[2]]
    split_file.write_text("clips/elsewhere/frame_000001.png\n")
    with pytest.raises(InputError, match="not usable entries"):
        drama.load_drama(tmp_path, str(split_file))
    with pytest.raises(InputError, match="neither one of"):
        drama.load_drama(tmp_path, "testing")


def test_drama_bad_files(tmp_path):
    with pytest.raises(InputError, match="integrated_output_v2.json does not exist: DRAMA needs"):
        drama.load_drama(tmp_path)
    (tmp_path / drama.ANNOTATIONS).write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        drama.load_drama(tmp_path)
    (tmp_path / drama.ANNOTATIONS).write_text('{"Risk": "Yes"}')
    with pytest.raises(InputError, match="JSON list"):
        drama.load_drama(tmp_path)


def test_drama_scores_truth_as_perfect(export):
    samples = drama.load_drama(export / "drama", split="all").samples
    perfect = {s.key: {"caption": s.caption, "bbox": s.truth_box()} for s in samples}
    metrics = drama.score_drama(samples, perfect)
    assert metrics["n"] == len(samples)
    assert metrics["bbox_miou"] == pytest.approx(1.0) and metrics["bbox_acc50"] == 1.0
    assert metrics["bleu1"] == pytest.approx(1.0) and metrics["rouge_l"] == pytest.approx(1.0)


def test_synth_scores_the_risk_per_kind_of_object(export):
    benchmark = load_benchmark("synth", export, frames=2, stride=1)
    pairs = list(zip(benchmark.items, benchmark.windows))
    risky = [(item, w) for item, w in pairs if w.truth.risk_bbox is not None]
    assert risky, "the fixture's scenes need a risk object"
    records = {
        item.key: {
            "object": w.truth.risk_object,
            "bbox": w.truth.risk_bbox,
            "caption": w.truth.risk_caption,
            "answers": w.truth.answers,
        }
        for item, w in pairs
    }
    perfect = benchmark.score(records)["risk_by_object"]
    assert set(perfect) <= {"car", "pedestrian", "traffic light"}
    assert sum(row["n"] for row in perfect.values()) == len(risky)
    assert all(row["named"] == 1.0 and row["bbox_acc50"] == 1.0 for row in perfect.values())

    item, window = risky[0]
    records[item.key]["object"] = "cyclist"  # the wrong object, its box still right
    kind = benchmark.score(records)["risk_by_object"][window.truth.risk_object]
    assert (
        kind["named"] == pytest.approx(1 - 1 / perfect[window.truth.risk_object]["n"])
        and kind["bbox_acc50"] == 1.0
    )


def test_synth_scores_present_and_temporal_questions_apart(export):
    """qa_by_kind: exact match and the majority baseline of the newest frame's questions and of
    those about the window's past, and of each question."""
    from vts_drive.synth.truth import TEMPORAL_QUESTIONS

    benchmark = load_benchmark("synth", export, frames=4, stride=1)
    records = {}
    for item, window in zip(benchmark.items, benchmark.windows):
        temporal = [window.truth.kind(q) == "temporal" for q in range(len(window.questions))]
        assert sum(temporal) == len(TEMPORAL_QUESTIONS) and not any(temporal[: -len(TEMPORAL_QUESTIONS)])
        # right about the present, "no idea" about the past
        answers = ["no idea" if past else truth for truth, past in zip(window.truth.answers, temporal)]
        records[item.key] = {"object": None, "bbox": None, "caption": "", "answers": answers}
    metrics = benchmark.score(records)
    kinds = metrics["qa_by_kind"]
    assert metrics["qa_present"] == kinds["present"]["exact_match"] == 1.0
    assert metrics["qa_temporal"] == kinds["temporal"]["exact_match"] == 0.0
    assert kinds["temporal"]["n"] == len(TEMPORAL_QUESTIONS) * len(records)
    assert set(kinds["per_question"]) >= set(TEMPORAL_QUESTIONS) | {"light", "action"}
    assert (
        kinds["per_question"]["ego_motion"]["kind"] == "temporal"
        and kinds["per_question"]["light"]["kind"] == "present"
    )
    assert 0.0 < kinds["temporal"]["majority_answer"] <= 1.0


def test_synth_majority_answer_baseline_answers_each_question_with_its_most_common_truth():
    from vts_drive.bench import BenchWindow, WindowTruth
    from vts_drive.eval.benchmarks import majority_answer_exact_match

    def window(answers: list[str]) -> BenchWindow:
        return BenchWindow(
            None, ["Is the light red?", "How many cars?"], WindowTruth(answers, None, "", None)
        )

    windows = [window(["yes", "2"]), window(["yes", "3"]), window(["no", "2"]), window(["Yes.", "2"])]
    # "yes" wins the first question (3 of 4 with "Yes." scored as the same answer), "2" the second (3 of 4)
    assert majority_answer_exact_match(windows) == pytest.approx(6 / 8)
    assert majority_answer_exact_match([]) is None


def test_lingoqa_groups_references_per_question(export):
    questions = lingoqa.load_lingoqa(export / "lingoqa")
    assert len(questions) == 3 * (9 + 6)  # the newest frame's questions and those about the segment
    assert all(len(q.references) == 2 for q in questions)
    assert len({q.key for q in questions}) == len(questions)
    first = questions[0]
    assert len(first.images) == 5 and all(p.is_file() for p in first.images)
    window = lingoqa.segment_window(first.images)
    assert window.cameras == ["front"] and window.num_frames == 5


def test_lingoqa_scores_only_answered_questions(export):
    questions = lingoqa.load_lingoqa(export / "lingoqa")
    answers = {q.key: q.references[0] for q in questions[:4]}
    metrics = lingoqa.score_lingoqa(questions, answers, judge_model=None)
    assert metrics["n"] == 4 and metrics["lingo_judge"] is None
    assert metrics["bleu1"] == pytest.approx(1.0)


def test_lingoqa_bad_parquet(tmp_path):
    with pytest.raises(InputError, match="val.parquet does not exist: LingoQA needs"):
        lingoqa.load_lingoqa(tmp_path)
    pq.write_table(
        pa.table({"question_id": ["q"], "segment_id": ["s"], "images": [["a.jpg"]], "question": ["why?"]}),
        tmp_path / "val.parquet",
    )
    with pytest.raises(InputError, match="lacks column\\(s\\) answer"):
        lingoqa.load_lingoqa(tmp_path)
    (tmp_path / "val.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="not a readable parquet"):
        lingoqa.load_lingoqa(tmp_path)


def test_lingoqa_predictions_csv_round_trip_and_errors(tmp_path):
    rows = [
        {"question_id": "q1", "segment_id": "s1", "answer": 'Yes, "one" car, slowly'},
        {"question_id": "q2", "segment_id": "s1", "answer": ""},
    ]
    lingoqa.write_predictions(tmp_path / "predictions.csv", rows)
    assert (tmp_path / "predictions.csv").read_text().splitlines()[
        0
    ] == "question_id,segment_id,question,answer"
    # an empty answer is written as " ", which pandas does not read as NaN and every metric strips
    assert lingoqa.read_predictions(tmp_path / "predictions.csv") == {
        ("q1", "s1"): 'Yes, "one" car, slowly',
        ("q2", "s1"): " ",
    }
    (tmp_path / "bad.csv").write_text("question_id,answer\nq1,yes\n")
    with pytest.raises(InputError, match="lacks column\\(s\\) segment_id"):
        lingoqa.read_predictions(tmp_path / "bad.csv")
    with pytest.raises(InputError, match="does not exist"):
        lingoqa.read_predictions(tmp_path / "missing.csv")
