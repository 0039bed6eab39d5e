"""synthdrive: same seed same bytes, valid exports read back by their real readers, clear errors."""

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from vts_drive.cli import main
from vts_drive.errors import InputError
from vts_drive.report import parse_risk
from vts_drive.synth.dataset import SynthDataset
from vts_drive.synth.generate import SynthConfig, generate_dataset
from vts_drive.synth.train import cell_labels, prepare, risk_cells


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "d"
    generate_dataset(out, SynthConfig(scenes=3, seed=7, frames=6, image_size=(96, 64)))
    return out


def test_same_seed_same_bytes_other_seed_differs(small_dataset, tmp_path):
    again = tmp_path / "again"
    generate_dataset(again, SynthConfig(scenes=3, seed=7, frames=6, image_size=(96, 64)))
    assert digest(again) == digest(small_dataset)
    other = tmp_path / "other"
    generate_dataset(other, SynthConfig(scenes=3, seed=8, frames=6, image_size=(96, 64)))
    assert (
        digest(other)["synth/scene_00000/front/05.jpg"]
        != digest(small_dataset)["synth/scene_00000/front/05.jpg"]
    )


def test_parallel_workers_write_the_bytes_of_one_process(small_dataset, tmp_path):
    parallel = tmp_path / "parallel"
    generate_dataset(parallel, SynthConfig(scenes=3, seed=7, frames=6, image_size=(96, 64)), workers=2)
    assert digest(parallel) == digest(small_dataset)


def test_native_form_reads_back_with_truth(small_dataset):
    dataset = SynthDataset(small_dataset)
    assert len(dataset) == 3 and dataset.cameras == ["front", "front_left", "front_right"]
    scene = dataset.scene(0)
    window = scene.window(5, 4, ["front", "front_left"])
    assert window.num_frames == 4 and window.images[0][0].shape == (64, 96, 3)
    assert window.stamps_ns[0][1] - window.stamps_ns[0][0] == 250_000_000  # 4 fps
    truth = scene.truth[5]
    assert len(truth.qa) == 9 and all(answer == answer.lower() for _, answer, _ in truth.qa)
    risk = parse_risk(truth.risk_answer, "front")
    assert (risk.bbox is None) == (truth.risk_box is None)
    assert all(labels[0] for labels in scene.keyframes.values())
    assert scene.labels("front", 0).max() < len(dataset.classes)


def test_drama_and_lingoqa_exports(small_dataset):
    entries = json.loads((small_dataset / "drama" / "integrated_output_v2.json").read_text())
    assert len(entries) == 3
    for entry in entries:
        assert {"s3_fileUrl", "s3_instructionReference", "Risk", "Caption", "geometry"} <= set(entry)
        assert (small_dataset / "drama" / entry["s3_fileUrl"]).is_file()
        assert (small_dataset / "drama" / entry["s3_instructionReference"]).is_file()
        assert entry["Risk"] in ("Yes", "No") and (entry["Risk"] == "Yes") == bool(entry["geometry"])
    table = pq.read_table(small_dataset / "lingoqa" / "val.parquet")
    assert table.column_names == ["question_id", "segment_id", "images", "question", "answer"]
    rows = table.to_pylist()
    assert len(rows) == 3 * (9 + 6) * 2  # the newest frame's questions and those about the segment
    assert set(Counter(row["question_id"] for row in rows).values()) == {2}
    assert len(rows[0]["images"]) == 5
    assert all((small_dataset / "lingoqa" / path).is_file() for path in rows[0]["images"])


def test_bags_hold_the_camera_topics(small_dataset):
    from rosbags.highlevel import AnyReader

    with AnyReader([small_dataset / "bags" / "scene_00000"]) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        assert topics == {
            f"/cam_{c}/image_raw": "sensor_msgs/msg/Image" for c in ("front", "front_left", "front_right")
        }
        assert sum(1 for _ in reader.messages()) == 3 * 6


def test_bad_inputs(tmp_path, capsys):
    cases = [
        (["--out", str(tmp_path / "a"), "--scenes", "0"], "--scenes must be at least 1"),
        (["--out", str(tmp_path / "b"), "--scenes", "1", "--cameras", "front,roof"], "unknown camera name"),
        (["--out", str(tmp_path / "c"), "--scenes", "1", "--cameras", "front_left"], "use the front camera"),
        (["--out", str(tmp_path / "d"), "--scenes", "1", "--image-size", "12x9"], "--image-size"),
        (["--out", str(tmp_path / "e"), "--scenes", "1", "--workers", "0"], "--workers must be at least 1"),
    ]
    for args, message in cases:
        assert main(["synth", *args]) == 2
        assert message in capsys.readouterr().err
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("keep me")
    assert main(["synth", "--out", str(full), "--scenes", "1", "--formats", "synth"]) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert (
        main(
            [
                "synth",
                "--out",
                str(full),
                "--scenes",
                "1",
                "--formats",
                "synth",
                "--overwrite",
                "--image-size",
                "64x48",
            ]
        )
        == 0
    )
    assert (full / "notes.txt").read_text() == "keep me"  # only synthdrive's own folders are replaced
    with pytest.raises(InputError, match="manifest.json is missing"):
        SynthDataset(tmp_path / "a")


def test_training_windows_drop_tokens_and_whole_frames(small_dataset):
    """Token dropout thins non-first frames; with empty_frame_share = 1 they keep no token (as
    VTS leaves a frame that repeats its keyframe) while the first frame keeps all of them."""
    from vts_drive.config import KeyframeConfig
    from vts_drive.synth.train import PreparedData, TrainConfig, sample_examples

    dataset = SynthDataset(small_dataset)
    scene = dataset.scene(0)
    frames, tokens = scene.frames, 16
    images = np.zeros((1, len(dataset.cameras), frames, 8, 8, 3), dtype=np.uint8)
    cells = np.zeros((1, len(dataset.cameras), frames, tokens, 2), dtype=np.uint8)
    data = PreparedData(images, cells, [scene], dataset.cameras)
    for empty_share in (0.0, 1.0):
        config = TrainConfig(token_dropout_share=1.0, empty_frame_share=empty_share, window_frames=(4,))
        (example,) = sample_examples(data, np.array([0]), config, np.random.default_rng(0))
        keep = example.token_keep  # [C, T, N]
        assert keep[:, 0].all()
        kept_later = keep[:, 1:].sum(axis=-1)
        assert (
            (kept_later == 0).all()
            if empty_share == 1.0
            else (0 < kept_later).all() and (kept_later < tokens).all()
        )
    # with the newest frame as the anchor, the oldest frame is thinned but never empty: it always enters
    tokens = 64  # thinning at 20 % leaves a frame of 64 tokens empty with probability 0.8^64
    data = PreparedData(
        images,
        np.zeros((1, len(dataset.cameras), frames, tokens, 2), dtype=np.uint8),
        [scene],
        dataset.cameras,
    )
    config = TrainConfig(token_dropout_share=1.0, empty_frame_share=1.0, window_frames=(4,))
    (example,) = sample_examples(
        data, np.array([0]), config, np.random.default_rng(0), KeyframeConfig(anchor="newest")
    )
    kept = example.token_keep.sum(axis=-1)  # [C, T]
    assert (kept[:, -1] == tokens).all() and (kept[:, 1:-1] == 0).all() and (0 < kept[:, 0]).all()


def test_vts_training_windows_take_keyframes_and_gating_from_the_scorer(small_dataset):
    """With vts_share = 1 a window's keyframes are the scorer's pick over its frames and the
    frames it encodes are those keyframes, the frames scored at or above the skip threshold and
    the window's oldest frame."""
    from vts_drive.keyframe.scorer import KeyframeConfig, select_keyframes
    from vts_drive.synth.train import PreparedData, TrainConfig, sample_examples

    dataset = SynthDataset(small_dataset)
    scene = dataset.scene(0)
    cameras, frames = len(dataset.cameras), scene.frames
    images = np.zeros((1, cameras, frames, 8, 8, 3), dtype=np.uint8)
    images[0] += np.arange(frames, dtype=np.uint8)[None, :, None, None, None]  # pixel value = frame index
    cells = np.zeros((1, cameras, frames, 16, 2), dtype=np.uint8)
    probabilities = np.random.default_rng(0).random((1, cameras, frames)).astype(np.float32)
    data = PreparedData(images, cells, [scene], dataset.cameras, probabilities)
    scorer = KeyframeConfig(threshold=0.5, max_keyframes=2, skip_threshold=0.4, anchor="first")
    config = TrainConfig(vts_share=1.0, front_only_share=0.0, window_frames=(4,))
    for seed in range(3):
        (example,) = sample_examples(data, np.array([0]), config, np.random.default_rng(seed), scorer)
        taken = [int(image[0, 0, 0]) for image in example.images[0]]  # the window's frame indices
        window = torch.from_numpy(probabilities[0][:, taken])  # [C, T]
        assert example.token_keep is None
        np.testing.assert_array_equal(example.keyframes, select_keyframes(window, scorer).numpy())
        expected = example.keyframes | (window >= 0.4).numpy()
        expected[:, 0] = True  # the window's oldest frame always enters
        np.testing.assert_array_equal(example.present, expected)
        assert example.keyframes[:, 0].all() and not example.present.all()


def test_risk_windows_are_front_windows_asked_only_for_the_risk_with_each_frames_box(small_dataset):
    """Risk-only windows: the front camera alone, every token, the risk prompt with the truth of
    the window's newest frame, and each front frame's own risk box as the box target."""
    from vts_drive.prompt import RISK_PROMPT
    from vts_drive.synth.train import PreparedData, TrainConfig, sample_examples

    dataset = SynthDataset(small_dataset)
    scene = dataset.scene(1)  # a risk object until frame 3: windows with and without its box
    assert [t.risk_box is not None for t in scene.truth] == [True] * 4 + [False] * 2
    cameras, frames = len(dataset.cameras), scene.frames
    images = np.zeros((1, cameras, frames, 8, 8, 3), dtype=np.uint8)
    images[0] += np.arange(frames, dtype=np.uint8)[None, :, None, None, None]  # pixel value = frame index
    data = PreparedData(
        images, np.zeros((1, cameras, frames, 16, 2), dtype=np.uint8), [scene], dataset.cameras
    )
    config = TrainConfig(vts_share=1.0, token_dropout_share=1.0, front_only_share=0.0, window_frames=(3,))
    for seed in range(8):
        (example,) = sample_examples(data, np.array([0]), config, np.random.default_rng(seed), risk_only=True)
        taken = [int(image[0, 0, 0]) for image in example.images[0]]
        assert example.cameras == ["front"] and len(taken) == 3
        assert example.prompts == [(RISK_PROMPT, scene.truth[taken[-1]].risk_answer)]
        assert example.token_keep is None and example.keyframes is None
        for t, frame in enumerate(taken):
            box = scene.truth[frame].risk_box
            assert (
                np.isnan(example.risk_boxes[0, t]).all()
                if box is None
                else np.allclose(example.risk_boxes[0, t], box)
            )


def test_training_keyframe_probabilities_score_each_camera_stream_in_time_order():
    """Batched over scenes, every frame is scored against its own camera's previous frame."""
    from vts_drive.config import KeyframeConfig
    from vts_drive.keyframe.scorer import KeyframeScorer
    from vts_drive.synth.train import keyframe_probabilities

    torch.manual_seed(0)
    scorer = KeyframeScorer(KeyframeConfig(input_size=16)).eval()
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 4, 16, 16, 3), dtype=np.uint8)
    batched = keyframe_probabilities(images, scorer, scenes_per_batch=2)
    for scene in range(5):
        streams = scorer.prepare(list(images[scene].reshape(-1, 16, 16, 3))).view(3, 4, 3, 16, 16)
        np.testing.assert_allclose(batched[scene], scorer.score_streams(streams).numpy(), atol=1e-6)


def test_cell_labels_mark_the_classes_covering_a_share_of_each_cell():
    labels = np.zeros((7, 6), dtype=np.uint8)  # 7 rows into 2 cell rows: rows 0-2 and 3-6
    labels[0, 0] = 2  # 1 of the 9 pixels of cell (0, 0)
    labels[3:, 3:] = 1  # all of cell (1, 1)
    labels[6, 5] = 9  # a label beyond the classes scored counts in the cell's size only
    cells = cell_labels(labels, (2, 2), classes=3, share=0.1)
    assert cells.tolist() == [[1, 0, 1], [1, 0, 0], [1, 0, 0], [0, 1, 0]]
    assert cell_labels(labels, (2, 2), classes=3, share=0.12)[0].tolist() == [1, 0, 0]  # 1/9 < 0.12


def test_risk_cells_are_the_cells_the_box_overlaps():
    assert risk_cells([0.1, 0.1, 0.5, 0.4], (2, 2)).tolist() == [
        1,
        0,
        0,
        0,
    ]  # touching a border is no overlap
    assert risk_cells([0.4, 0.6, 0.6, 0.9], (2, 2)).tolist() == [0, 0, 1, 1]
    assert risk_cells(None, (2, 3)).tolist() == [0] * 6


def test_prepared_data_is_cached_per_input_size(small_dataset, tmp_path):
    dataset = SynthDataset(small_dataset)
    small = prepare(dataset, 16, (2, 2), tmp_path / "data")
    assert small.images.shape == (3, 3, 6, 16, 16, 3) and small.cells.shape[3] == 4
    again = prepare(dataset, 16, (2, 2), tmp_path / "data")
    assert np.array_equal(again.images, small.images) and np.array_equal(again.cells, small.cells)
    larger = prepare(dataset, 32, (4, 4), tmp_path / "data")  # the cache holds another size: prepared anew
    assert larger.images.shape == (3, 3, 6, 32, 32, 3) and larger.cells.shape[3] == 16
    assert np.array_equal(
        larger.cells[..., -1].any(axis=-1), small.cells[..., -1].any(axis=-1)
    )  # the same risk frames
