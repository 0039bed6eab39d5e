"""The node core: receiving never waits for inference, bounded queues, questions, bad frames, diagnostics.

Tests of the core's own queueing use GatedPipeline, a stand-in whose describe/ask
wait until the test opens a gate, so "inference is behind" is a state the test
controls; the last test runs the real Pipeline (tiny checkpoint).
"""

import json
import threading
import time

import numpy as np

from vts_drive.report import QA, Risk, SceneReport, validate_report
from vts_drive.ros import msgs
from vts_drive.ros.diagnostics import OK, STALE, WARN
from vts_drive.ros.node_core import NodeCore, Outputs
from vts_drive.ros.params import NodeParams

MS = 1_000_000
CAMERAS = ["front", "front_left", "front_right"]
IMAGE = np.zeros((8, 8, 3), np.uint8)


class GatedPipeline:
    """Stand-in pipeline: answers only once `gate` is set, records what it was asked."""

    model_name = "gated-stand-in"

    def __init__(self, fail_first: bool = False, risk: Risk | None = None) -> None:
        self.gate = threading.Event()
        self.fail_first = fail_first
        self.risk = risk or Risk(present=False, object=None, camera=None, bbox=None, caption="", raw="none")
        self.described: list[int] = []

    def describe(self, window):
        self.gate.wait()
        if self.fail_first and not self.described:
            self.described.append(-1)
            raise RuntimeError("model failure")
        self.described.append(window.stamp_ns)
        return SceneReport(
            window.stamp_ns / 1e9,
            window.cameras,
            window.num_frames,
            "dense",
            self.model_name,
            f"window {window.stamp_ns}",
            self.risk,
            [QA("q?", "a")],
            {"vision": 1.5, "total": 3.0},
            {},
        )

    def ask(self, window, questions):
        self.gate.wait()
        return [f"answer to {q}" for q in questions]


class Recorder:
    """Records what the core publishes; `overlay_subscribers` says whether ~/overlay has any."""

    def __init__(self) -> None:
        self.descriptions, self.reports, self.answers, self.diagnostics = [], [], [], []
        self.detections, self.overlays = [], []
        self.overlay_subscribers = False
        self.outputs = Outputs(
            self.descriptions.append,
            self.reports.append,
            lambda text: self.answers.append(json.loads(text)),
            self.diagnostics.append,
            self.detections.append,
            lambda rgb, detection: self.overlays.append((rgb, detection)),
            lambda: self.overlay_subscribers,
        )


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def wait_until(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def make_core(pipeline, clock=None, **params):
    recorder = Recorder()
    values = {"frames_per_window": 1, "window_stride": 1, "diagnostics_period_s": 60.0, **params}
    core = NodeCore(pipeline, NodeParams(**values), recorder.outputs, clock_ns=clock or time.monotonic_ns)
    core.start()
    return core, recorder


def send_sets(core, count: int, start: int = 0, clock: Clock | None = None, cameras=CAMERAS):
    for t in range(start, start + count):
        if clock is not None:
            clock.now = t * 100 * MS
        for camera in cameras:
            core.on_image(camera, t * 100 * MS, IMAGE)


def test_when_inference_falls_behind_the_oldest_windows_are_dropped():
    pipeline = GatedPipeline()
    core, out = make_core(pipeline, window_queue_size=2)
    send_sets(core, 1)
    wait_until(lambda: not core._windows)  # the worker holds window 0, waiting at the gate
    feeder = threading.Thread(target=send_sets, args=(core, 11, 1))
    feeder.start()
    feeder.join(timeout=30)
    assert not feeder.is_alive(), "receiving blocked on the pipeline"
    assert core.counts["windows_dropped"] == 9  # 12 windows: 1 in describe, 2 queued, 9 dropped
    pipeline.gate.set()
    wait_until(lambda: len(out.reports) == 3)
    core.stop()
    # the window in flight, then the two newest: the oldest queued ones were dropped
    assert pipeline.described == [0, 1000 * MS, 1100 * MS]
    assert [json.loads(r)["stamp"] for r in out.reports] == [0.0, 1.0, 1.1]
    assert out.descriptions == ["window 0", f"window {1000 * MS}", f"window {1100 * MS}"]


def test_questions_are_bounded_answered_in_order_or_rejected_with_a_reason():
    pipeline = GatedPipeline()
    core, out = make_core(pipeline, question_queue_size=3, max_question_chars=20)
    core.on_question("before any window?")
    assert out.answers[-1]["error"] == "no camera window has been received yet"
    send_sets(core, 1)
    wait_until(lambda: not core._windows)  # the worker holds the window, waiting at the gate
    for i in range(5):
        core.on_question(f"question {i}?")
    core.on_question("x" * 21)
    core.on_question("   ")
    rejected = [a for a in out.answers if a["error"]]
    assert [a["error"] for a in rejected[1:]] == ["question queue is full (3 waiting)"] * 2 + [
        "question is 21 characters, the limit is 20",
        "question is empty",
    ]
    assert rejected[3]["question"] == "x" * 20 + "..." and all(a["answer"] is None for a in rejected)
    pipeline.gate.set()
    wait_until(lambda: core.counts["questions_answered"] == 3)
    core.stop()
    answered = [a for a in out.answers if not a["error"]]
    assert [a["question"] for a in answered] == ["question 0?", "question 1?", "question 2?"]
    assert answered[0] == {
        "question": "question 0?",
        "answer": "answer to question 0?",
        "stamp": 0.0,
        "error": None,
    }
    assert core.counts["questions_rejected"] == 5


def test_bad_images_are_dropped_and_counted_and_a_failing_window_does_not_stop_the_node():
    pipeline = GatedPipeline(fail_first=True)
    pipeline.gate.set()
    core, out = make_core(pipeline, window_queue_size=10)
    good = msgs.image_message(0, "front", IMAGE)
    core.on_message(
        "front", msgs.Image_(header=good.header, height=8, width=8, encoding="rgb8", step=24, data=b"\0" * 10)
    )
    core.on_message(
        "front",
        msgs.Image_(header=good.header, height=8, width=8, encoding="16UC1", step=16, data=b"\0" * 128),
    )
    core.on_message(
        "front_left", msgs.CompressedImage_(header=good.header, format="jpeg", data=b"not a jpeg")
    )
    for t in range(3):
        for camera in CAMERAS:
            core.on_message(camera, msgs.image_message(t * 100 * MS, camera, IMAGE))
    core.on_message("front", msgs.image_message(0, "front", IMAGE))  # out of order
    wait_until(lambda: len(out.reports) == 2)
    core.stop()
    assert core.counts["errors"] == 1 and core.bad_images == {"front": 2, "front_left": 1}
    statuses = {s.name: s for s in core.diagnostics()}
    front = statuses["vts_drive: camera front"].values
    assert (front["bad_images"], front["dropped_out_of_order"], front["frames_received"]) == ("2", "1", "4")
    assert (
        statuses["vts_drive: pipeline"].level == WARN
        and statuses["vts_drive: pipeline"].values["errors"] == "1"
    )


def test_diagnostics_show_a_stale_camera_latency_and_mode():
    pipeline = GatedPipeline()
    pipeline.gate.set()
    clock = Clock()
    core, out = make_core(pipeline, clock=clock, stale_after_s=1.0, settings={"mode": "vts"})
    send_sets(core, 5, clock=clock)
    send_sets(core, 20, start=5, clock=clock, cameras=["front", "front_right"])
    wait_until(lambda: not core._windows and len(out.reports) >= 2)
    core.stop()
    statuses = {s.name: s for s in core.diagnostics()}
    assert statuses["vts_drive: camera front_left"].level == STALE
    assert statuses["vts_drive: camera front_left"].message == "no frame for 2.00 s"
    assert statuses["vts_drive: camera front"].level == OK
    pipeline_status = statuses["vts_drive: pipeline"].values
    assert pipeline_status["mode"] == "vts" and pipeline_status["stale_cameras"] == "front_left"
    assert pipeline_status["latency_ms.vision"] == "1.5" and "latency_ms.queue_wait" in pipeline_status
    assert json.loads(out.reports[-1])["cameras"] == ["front", "front_right"]  # continued without it


def test_diagnostics_are_published_periodically_and_stop_stops_the_threads():
    core, out = make_core(GatedPipeline(), diagnostics_period_s=0.05)
    wait_until(lambda: len(out.diagnostics) >= 2)
    core.stop()
    assert not any(thread.is_alive() for thread in core._threads)
    assert [s.name for s in out.diagnostics[0]][:2] == ["vts_drive: pipeline", "vts_drive: camera front"]


def test_each_report_gives_its_risk_box_and_an_overlay_only_while_someone_subscribes():
    risk = Risk(
        present=True,
        object="cyclist",
        camera="front_left",
        bbox=[0.25, 0.5, 0.75, 1.0],
        caption="crossing",
        raw="object: cyclist; ...",
    )
    pipeline = GatedPipeline(risk=risk)
    pipeline.gate.set()
    core, out = make_core(pipeline, window_queue_size=10)
    wide = np.full((20, 40, 3), 7, np.uint8)  # front_left is 40 x 20, the others 8 x 8
    for t in range(2):
        for i, camera in enumerate(CAMERAS):
            image = wide if camera == "front_left" else IMAGE
            core.on_message(camera, msgs.image_message(t * 100 * MS + i * MS, f"{camera}_optical", image))
        wait_until(lambda t=t: len(out.detections) == t + 1)
        out.overlay_subscribers = True  # someone subscribes after the first report
    wait_until(lambda: len(out.overlays) == 1)
    core.stop()
    first, second = out.detections
    assert (second.camera, second.frame_id, second.stamp_ns) == (
        "front_left",
        "front_left_optical",
        100 * MS + MS,
    )
    assert (second.width, second.height, second.box, second.object) == (
        40,
        20,
        (10.0, 10.0, 30.0, 20.0),
        "cyclist",
    )
    assert first.stamp_ns == MS
    ((rgb, drawn),) = out.overlays  # none while nobody subscribed
    assert drawn == second and rgb.shape == wide.shape and not np.array_equal(rgb, wide)
    assert np.array_equal(wide, np.full((20, 40, 3), 7, np.uint8))  # the frame in the window is not drawn on


def test_real_pipeline_reports_and_answers(tiny_pipeline):
    core, out = make_core(tiny_pipeline, frames_per_window=2, window_stride=2)
    rng = np.random.default_rng(0)
    for t in range(2):
        for camera in CAMERAS:
            core.on_message(
                camera, msgs.image_message(t * 100 * MS, camera, rng.integers(0, 256, (32, 32, 3), np.uint8))
            )
    wait_until(lambda: len(out.reports) == 1, timeout_s=120)
    core.on_question("Is the road clear?")
    wait_until(lambda: len(out.answers) == 1, timeout_s=120)
    core.stop()
    report = json.loads(out.reports[0])
    validate_report(report)
    assert report["cameras"] == CAMERAS and report["frames_per_camera"] == 2 and report["stamp"] == 0.1
    assert out.descriptions == [report["description"]]
    assert out.answers[0]["question"] == "Is the road clear?" and isinstance(out.answers[0]["answer"], str)
    assert out.answers[0]["stamp"] == 0.1 and out.answers[0]["error"] is None
