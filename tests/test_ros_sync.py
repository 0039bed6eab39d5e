"""Approximate-time sync and window assembly: matching, drops by reason, stride, stale cameras."""

import numpy as np
import pytest

from vts_drive.errors import InputError
from vts_drive.ros.stream import FrameStream, StreamConfig
from vts_drive.ros.sync import ApproximateSync

MS = 1_000_000
IMAGE = np.zeros((4, 4, 3), np.uint8)
CAMERAS = ["front", "front_left", "front_right"]


def test_frames_within_slop_form_a_set_and_the_rest_are_unmatched():
    sync = ApproximateSync(["a", "b"], slop_ns=10 * MS)
    assert sync.add("a", 0, IMAGE) == []
    assert sync.add("b", 30 * MS, IMAGE) == []  # a@0 can never match: b has moved past it
    assert sync.dropped["a"]["unmatched"] == 1
    (matched,) = sync.add("a", 25 * MS, IMAGE)
    assert {camera: stamp for camera, (stamp, _) in matched.items()} == {"a": 25 * MS, "b": 30 * MS}


def test_out_of_order_and_duplicate_stamps_are_dropped_and_counted():
    sync = ApproximateSync(["a", "b"], slop_ns=5 * MS)
    sync.add("a", 100 * MS, IMAGE)
    assert sync.add("a", 100 * MS, IMAGE) == []
    assert sync.add("a", 50 * MS, IMAGE) == []
    assert (sync.dropped["a"]["duplicate"], sync.dropped["a"]["out_of_order"]) == (1, 1)
    assert len(sync.add("b", 101 * MS, IMAGE)) == 1


def test_queue_is_bounded_while_waiting_for_a_camera():
    sync = ApproximateSync(["a", "b"], slop_ns=MS, queue_size=4)
    for t in range(10):
        sync.add("a", t * 100 * MS, IMAGE)
    assert sync.dropped["a"]["overflow"] == 6
    (matched,) = sync.add("b", 900 * MS, IMAGE)  # only the newest four were kept; 600-800 ms never match
    assert matched["a"][0] == 900 * MS and sync.dropped["a"]["unmatched"] == 3


def feed(stream: FrameStream, frames: int, cameras=CAMERAS, start: int = 0, jitter_ms: int = 3):
    """10 Hz frames of `cameras`, each camera a few ms apart; now = stamp."""
    windows = []
    for t in range(start, start + frames):
        for i, camera in enumerate(cameras):
            stamp = t * 100 * MS + i * jitter_ms * MS
            windows += stream.add(camera, stamp, IMAGE, now_ns=stamp)
    return windows


def test_windows_of_t_frames_every_stride_sets():
    stream = FrameStream(StreamConfig(CAMERAS, frames=4, stride=2, slop_s=0.01))
    windows = feed(stream, 10)
    # sets 0..9: windows end at sets 3, 5, 7, 9
    assert [w.stamps_ns[0][-1] // (100 * MS) for w in windows] == [3, 5, 7, 9]
    first = windows[0]
    assert first.cameras == CAMERAS and first.num_frames == 4
    assert first.stamps_ns[1] == [t * 100 * MS + 3 * MS for t in range(4)]


def test_stride_larger_than_window_skips_sets():
    windows = feed(FrameStream(StreamConfig(["a"], frames=2, stride=3)), 9, cameras=["a"])
    assert [w.stamps_ns[0] for w in windows] == [[0, 100 * MS], [300 * MS, 400 * MS], [600 * MS, 700 * MS]]


def test_a_stale_camera_is_left_out_with_continue_and_waited_for_with_wait():
    for policy in ("continue", "wait"):
        stream = FrameStream(StreamConfig(CAMERAS, frames=2, stride=2, stale_after_s=0.5, on_stale=policy))
        assert len(feed(stream, 4)) == 2
        windows = feed(stream, 20, cameras=["front", "front_right"], start=4)  # front_left stops
        assert stream.stale_cameras(now_ns=2300 * MS) == ["front_left"]
        if policy == "wait":
            assert windows == []
        else:
            assert windows and all(w.cameras == ["front", "front_right"] for w in windows)
        # the camera comes back: windows hold all three cameras again
        back = feed(stream, 6, start=24)
        assert back and back[-1].cameras == CAMERAS
        assert stream.stale_cameras(now_ns=2900 * MS) == []


def test_a_camera_never_seen_is_stale_from_the_start():
    stream = FrameStream(StreamConfig(["a", "b"], frames=1, stride=1, stale_after_s=1.0), start_ns=0)
    assert stream.stale_cameras(now_ns=500 * MS) == []
    assert stream.stale_cameras(now_ns=1500 * MS) == ["a", "b"]
    assert len(stream.add("a", 1600 * MS, IMAGE, now_ns=1600 * MS)) == 1  # b is stale: a alone


def test_unknown_camera_and_bad_settings_raise():
    stream = FrameStream(StreamConfig(["a"]))
    with pytest.raises(InputError, match="'rear' is not one of"):
        stream.add("rear", 0, IMAGE, 0)
    with pytest.raises(InputError, match="at least 1"):
        FrameStream(StreamConfig(["a"], frames=0))
