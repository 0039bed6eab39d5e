"""Streaming: frames shared by overlapping windows are encoded once, gating skips low-scoring
frames, and cached results never leak between different frames with the same stamp."""

import shutil

import numpy as np
import pytest
import torch

from conftest import TEST_SELECTION
from vts_drive.config import KeyframeConfig
from vts_drive.frame_cache import frame_key
from vts_drive.keyframe.scorer import KeyframeScorer, save_scorer
from vts_drive.pipeline import Pipeline
from vts_drive.window import FrameWindow

CAMERAS = ["front", "front_left"]


def stream(seed: int, length: int = 8) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(length)] for _ in CAMERAS]


def window_at(frames, start, size=4):
    images = [camera[start : start + size] for camera in frames]
    stamps = [[(start + t) * 100_000_000 for t in range(size)] for _ in CAMERAS]
    return FrameWindow(CAMERAS, images, stamps)


def test_overlapping_windows_reuse_encoded_frames(tiny_model_dir):
    cached = Pipeline.load(str(tiny_model_dir), {"max_new_tokens": 4})
    fresh = Pipeline.load(str(tiny_model_dir), {"max_new_tokens": 4, "frame_cache": False})
    frames = stream(0)
    for start in range(4):
        window = window_at(frames, start)
        assert cached.ask(window, ["Why?"]) == fresh.ask(window, ["Why?"])
    assert cached.frame_cache.misses == 2 * 4 + 2 * 3  # the first window, then one new frame per camera
    assert cached.frame_cache.hits == 2 * 3 * 3
    assert len(cached.frame_cache.frames) == 2 * 4  # bounded by one window


def test_same_stamps_different_images_are_not_confused(tiny_model_dir):
    pipeline = Pipeline.load(str(tiny_model_dir), {"max_new_tokens": 6})
    reference = Pipeline.load(str(tiny_model_dir), {"max_new_tokens": 6, "frame_cache": False})
    first, second = window_at(stream(1), 0), window_at(stream(2), 0)  # same stamps, other recording
    pipeline.ask(first, ["Why?"])
    assert pipeline.ask(second, ["Why?"]) == reference.ask(second, ["Why?"])
    assert pipeline.frame_cache.hits == 0


def test_out_of_order_windows_stay_correct(tiny_model_dir):
    pipeline = Pipeline.load(str(tiny_model_dir), {"max_new_tokens": 4})
    reference = Pipeline.load(str(tiny_model_dir), {"max_new_tokens": 4, "frame_cache": False})
    frames = stream(3)
    for start in [2, 0, 3, 1]:
        window = window_at(frames, start)
        assert pipeline.ask(window, ["Why?"]) == reference.ask(window, ["Why?"])


@pytest.fixture(scope="module")
def model_with_scorer(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gate") / "model"
    shutil.copytree(tiny_model_dir, folder)
    torch.manual_seed(0)
    save_scorer(KeyframeScorer(KeyframeConfig(input_size=32, **TEST_SELECTION)).eval(), folder)
    return folder


def test_gating_skips_encoding_of_low_scoring_frames(model_with_scorer):
    window = window_at(stream(4), 0)
    everything = Pipeline.load(
        str(model_with_scorer), {"mode": "vts", "keyframe.max_keyframes": 1, "keyframe.skip_threshold": 0.0}
    )
    gated = Pipeline.load(
        str(model_with_scorer), {"mode": "vts", "keyframe.max_keyframes": 1, "keyframe.skip_threshold": 1.01}
    )
    everything.answer(window, ["Why?"])
    result = gated.answer(window, ["Why?"])
    assert everything.frame_cache.misses == 8
    assert gated.frame_cache.misses == 2  # only each camera's first frame (its keyframe) is encoded
    assert result.tokens["vision_kept"] == 2 * gated.vision.tokens_per_frame


def test_skipped_frame_is_not_encoded_when_it_becomes_a_first_frame(model_with_scorer):
    """With stride 1 every frame is once a window's first frame (a keyframe). A frame the gate
    skipped enters that window with its predecessor's tokens instead of being encoded then."""
    frames = stream(5, length=6)
    gated = Pipeline.load(
        str(model_with_scorer), {"mode": "vts", "keyframe.max_keyframes": 1, "keyframe.skip_threshold": 1.01}
    )
    gated.answer(window_at(frames, 0), ["Why?"])
    assert gated.frame_cache.misses == 2
    first = {
        camera: gated.frame_cache.frames[key].tokens for camera, key in _frame_keys(frames, 0, 0).items()
    }
    result = gated.answer(window_at(frames, 1), ["Why?"])
    assert gated.frame_cache.misses == 2, "the new first frames were skipped before: their stand-ins are used"
    assert result.tokens["vision_kept"] == 2 * gated.vision.tokens_per_frame
    for camera, key in _frame_keys(frames, 1, 0).items():
        assert gated.frame_cache.frames[key].tokens is first[camera]


def _frame_keys(frames, start, index):
    """Cache key of frame `index` of each camera in the window starting at `start`."""
    window = window_at(frames, start)
    return {
        camera: frame_key(camera, stamps[index], images[index])
        for camera, stamps, images in zip(window.cameras, window.stamps_ns, window.images)
    }


def test_newest_anchor_skipped_by_the_gate_stands_in_with_its_predecessor(model_with_scorer):
    """With the newest frame as the anchor keyframe, a stride-1 stream still encodes only what
    the gate lets through: a new newest frame scored below the skip threshold enters whole, with
    the tokens of the frame before it. The stream's first window encodes each camera's oldest
    frame (it always enters, and nothing before it can stand in) and the later ones stand in."""
    frames = stream(6, length=6)
    config = {
        "mode": "vts",
        "keyframe.max_keyframes": 1,
        "keyframe.skip_threshold": 1.01,
        "keyframe.anchor": "newest",
    }
    gated = Pipeline.load(str(model_with_scorer), config)
    result = gated.answer(window_at(frames, 0), ["Why?"])
    assert gated.frame_cache.misses == 2  # each camera's first frame; the newest stands in with it
    assert result.tokens["vision_kept"] == 2 * gated.vision.tokens_per_frame
    newest = _frame_keys(frames, 0, -1)
    result = gated.answer(window_at(frames, 1), ["Why?"])
    assert gated.frame_cache.misses == 2, "the new newest frames stand in with their predecessors"
    assert result.tokens["vision_kept"] == 2 * gated.vision.tokens_per_frame
    for camera, key in _frame_keys(frames, 1, -1).items():
        assert gated.frame_cache.frames[key].tokens is gated.frame_cache.frames[newest[camera]].tokens


def _probabilities(pipeline, frames, start, size=4) -> list[list[float]]:
    """Keyframe probability of each frame of the window starting at `start`, from the cache."""
    window = window_at(frames, start, size)
    return [
        [
            pipeline.frame_cache.frames[frame_key(camera, stamp, image)].keyframe_probability
            for stamp, image in zip(stamps, images)
        ]
        for camera, stamps, images in zip(window.cameras, window.stamps_ns, window.images)
    ]


@pytest.mark.parametrize("stride", [4, 6])
def test_a_windows_oldest_frame_is_scored_against_the_streams_previous_frame(model_with_scorer, stride):
    """Back to back (stride = T) or with a gap, a window's oldest frame is scored as inside the
    stream: against the newest frame the pipeline saw before it, not against itself. The stream's
    first frame has nothing before it and is a keyframe (probability 1)."""
    frames = stream(7, length=10)
    config = {"mode": "vts", "keyframe.max_keyframes": 1, "max_new_tokens": 2}
    strided = Pipeline.load(str(model_with_scorer), config)
    strided.answer(window_at(frames, 0), ["Why?"])
    assert [row[0] for row in _probabilities(strided, frames, 0)] == [1.0, 1.0]
    strided.answer(window_at(frames, stride), ["Why?"])
    oldest = [row[0] for row in _probabilities(strided, frames, stride)]

    scorer = strided.keyframe_scorer
    expected = torch.sigmoid(
        scorer(
            scorer.prepare([camera[stride] for camera in frames]),
            scorer.prepare([camera[3] for camera in frames]),
        )
    )
    np.testing.assert_allclose(oldest, expected.tolist(), atol=1e-6)
    if stride == 4:  # back to back: the same score as frame 4 gets inside a stride-1 stream
        continuous = Pipeline.load(str(model_with_scorer), config)
        for start in range(2):
            continuous.answer(window_at(frames, start), ["Why?"])
        np.testing.assert_allclose(
            oldest, [row[-1] for row in _probabilities(continuous, frames, 1)], atol=1e-6
        )


def test_a_new_recording_starts_a_new_stream(model_with_scorer):
    """Stamps that go back (another bag, a restarted camera) have no previous frame."""
    pipeline = Pipeline.load(
        str(model_with_scorer), {"mode": "vts", "keyframe.max_keyframes": 1, "max_new_tokens": 2}
    )
    pipeline.answer(window_at(stream(8), 4), ["Why?"])
    other = stream(9)
    pipeline.answer(window_at(other, 0), ["Why?"])
    assert [row[0] for row in _probabilities(pipeline, other, 0)] == [1.0, 1.0]


def test_frames_the_gate_leaves_empty_are_counted_in_the_report(model_with_scorer):
    gated = Pipeline.load(
        str(model_with_scorer), {"mode": "vts", "keyframe.max_keyframes": 1, "keyframe.skip_threshold": 1.01}
    )
    report = gated.describe(window_at(stream(10), 0))
    assert report.tokens["frames_skipped"] == 2 * 3  # every frame but each camera's keyframe
    everything = Pipeline.load(
        str(model_with_scorer), {"mode": "vts", "keyframe.max_keyframes": 1, "keyframe.skip_threshold": 0.0}
    )
    assert everything.describe(window_at(stream(10), 0)).tokens["frames_skipped"] == 0


def test_newest_mode_runs_dense_on_each_cameras_newest_frame_only(tiny_model_dir):
    newest = Pipeline.load(str(tiny_model_dir), {"mode": "newest", "max_new_tokens": 6})
    dense = Pipeline.load(str(tiny_model_dir), {"mode": "dense", "max_new_tokens": 6, "frame_cache": False})
    frames = stream(11)
    window = window_at(frames, 2)
    result = newest.answer(window, ["Why?"])
    assert newest.frame_cache.misses == len(CAMERAS)  # one frame per camera encoded
    assert (
        result.tokens["vision_dense"]
        == result.tokens["vision_kept"]
        == len(CAMERAS) * newest.vision.tokens_per_frame
    )
    one_frame = FrameWindow(CAMERAS, [[camera[5]] for camera in frames], [[500_000_000] for _ in CAMERAS])
    assert result.answers == dense.answer(one_frame, ["Why?"]).answers
