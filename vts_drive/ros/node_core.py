"""The node without ROS: frames in, reports, answers and diagnostics out.

Transports (rclpy, DDS) call on_message / on_image / on_question from their
receive threads and hand in the functions that publish. Each report also goes
out as its risk box (detections.py) and, while someone subscribes to it, as
the risk camera's frame with the report drawn on it (overlay.py). Receiving only syncs
frames and queues windows; one worker thread runs the pipeline. When the
pipeline falls behind, the oldest queued window is dropped and counted, so
receivers never block and memory stays bounded.

No sample stops the node: a frame that does not decode is counted and dropped,
and every question gets one reply on ~/answer, its answer or the reason it has
none (rejected, not decodable, the model failed, the node stopped).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vts_drive.errors import InputError
from vts_drive.ros import RosMessage
from vts_drive.ros.detections import RiskDetection, risk_detection
from vts_drive.ros.diagnostics import OK, STALE, WARN, Status
from vts_drive.ros.images import message_to_rgb
from vts_drive.ros.overlay import draw_overlay
from vts_drive.ros.params import NODE_NAME, NodeParams
from vts_drive.ros.stream import FrameStream
from vts_drive.ros.sync import DROP_REASONS
from vts_drive.ros.typestore import stamp_to_ns
from vts_drive.window import FrameWindow

log = logging.getLogger("vts_drive.node")


@dataclass
class Outputs:
    """What the transport publishes: text on ~/scene_description, report JSON on ~/risk_qa,
    answer JSON on ~/answer, statuses on /diagnostics, the risk box on ~/risk_detections, and
    on ~/overlay the frame drawn on (RGB [H, W, 3]) with its detection (stamp, frame_id);
    overlay_wanted says whether ~/overlay has subscribers, since drawing costs a frame copy."""

    description: Callable[[str], None]
    report: Callable[[str], None]
    answer: Callable[[str], None]
    diagnostics: Callable[[list[Status]], None]
    detections: Callable[[RiskDetection], None]
    overlay: Callable[[np.ndarray, RiskDetection], None]
    overlay_wanted: Callable[[], bool]


class NodeCore:
    def __init__(
        self,
        pipeline,
        params: NodeParams,
        outputs: Outputs,
        node_name: str = NODE_NAME,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.pipeline = pipeline  # describe(window) -> SceneReport, ask(window, questions) -> list[str]
        self.params = params
        self.outputs = outputs
        self.node_name = node_name
        self.clock_ns = clock_ns
        self.stream = FrameStream(params.stream_config(), start_ns=clock_ns())
        self.counts: Counter[str] = Counter()  # windows_described, windows_dropped, questions_answered, ...
        self.bad_images: Counter[str] = Counter()  # camera -> frames whose message did not decode
        self.frame_ids: dict[str, str] = {}  # camera -> header frame_id of its newest frame
        self.last_timings_ms: dict[str, float] = {}
        self._latest: FrameWindow | None = None  # newest window assembled, what questions are asked about
        self._windows: deque[tuple[FrameWindow, int]] = deque()  # (window, enqueued at clock_ns)
        self._questions: deque[str] = deque()
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name="vts_drive-worker", daemon=True),
            threading.Thread(target=self._publish_diagnostics, name="vts_drive-diagnostics", daemon=True),
        ]

    # -- inputs, called from receive threads; none of them waits for the pipeline

    def on_message(self, camera: str, msg: RosMessage) -> None:
        """A sensor_msgs Image or CompressedImage of any binding; bad ones are dropped and counted."""
        try:
            rgb = message_to_rgb(msg)
            stamp_ns, frame_id = stamp_to_ns(msg.header.stamp), str(msg.header.frame_id)
        except Exception as error:  # whatever the sample holds, the receive thread goes on
            self.on_bad_image(camera, error)
            return
        self.on_image(camera, stamp_ns, rgb, frame_id)

    def on_bad_image(self, camera: str, error: Exception) -> None:
        """A camera sample that did not decode (here or in the transport): counted and dropped."""
        with self._lock:
            self.bad_images[camera] += 1
        log.warning("camera %s: frame dropped: %s", camera, _describe_error(error))

    def on_image(self, camera: str, stamp_ns: int, rgb: np.ndarray, frame_id: str = "") -> None:
        with self._lock:
            self.frame_ids[camera] = frame_id
            for window in self.stream.add(camera, stamp_ns, rgb, self.clock_ns()):
                self._latest = window
                if len(self._windows) >= self.params.window_queue_size:
                    self._windows.popleft()
                    self.counts["windows_dropped"] += 1
                self._windows.append((window, self.clock_ns()))
            self._lock.notify()

    def on_question(self, text: str) -> None:
        """Queue a free-form question about the latest window, or answer at once with the reason it is rejected."""
        question = text.strip()
        limit = self.params.max_question_chars
        with self._lock:
            if not question:
                reason = "question is empty"
            elif len(question) > limit:
                reason = f"question is {len(question)} characters, the limit is {limit}"
                question = question[:limit] + "..."
            elif self._latest is None:
                reason = "no camera window has been received yet"
            elif len(self._questions) >= self.params.question_queue_size:
                reason = f"question queue is full ({self.params.question_queue_size} waiting)"
            else:
                self._questions.append(question)
                self._lock.notify()
                return
            self.counts["questions_rejected"] += 1
        self._reply(question, error=reason)

    def on_bad_question(self, error: Exception) -> None:
        """A question sample the transport could not decode (not UTF-8, say): rejected, its text unknown."""
        with self._lock:
            self.counts["bad_questions"] += 1
            self.counts["questions_rejected"] += 1
        self._reply(None, error=f"question does not decode: {_describe_error(error)}")

    def _reply(
        self,
        question: str | None,
        answer: str | None = None,
        stamp_ns: int | None = None,
        error: str | None = None,
    ) -> None:
        """Publish the one reply a question gets on ~/answer; a failing publisher is logged, not raised."""
        stamp = None if stamp_ns is None else stamp_ns / 1e9
        try:
            self.outputs.answer(
                json.dumps({"question": question, "answer": answer, "stamp": stamp, "error": error})
            )
        except Exception:
            log.exception("publishing the reply to %r failed", question)

    # -- lifecycle

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the window being described, if any; queued windows are abandoned and
        queued questions rejected."""
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout_s)
        with self._lock:
            left, self._questions = list(self._questions), deque()
        for question in left:
            self._reply(question, error="the node stopped before answering")

    # -- the worker

    def _next_job(self) -> tuple[str, tuple] | None:
        with self._lock:
            while not self._stopping.is_set() and not self._windows and not self._questions:
                self._lock.wait()
            if self._stopping.is_set():
                return None
            if self._questions:  # cheap, and someone is waiting for the answer
                return "question", (self._questions.popleft(), self._latest)
            return "window", self._windows.popleft()

    def _work(self) -> None:
        while (job := self._next_job()) is not None:
            kind, payload = job
            try:
                if kind == "question":
                    self._answer(*payload)
                else:
                    self._describe(*payload)
            except Exception as error:  # a bad window or a model error must not stop the node
                self.counts["errors"] += 1
                log.exception("%s failed", kind)
                if kind == "question":
                    self._reply(payload[0], error=f"the model failed to answer: {_describe_error(error)}")

    def _describe(self, window: FrameWindow, enqueued_ns: int) -> None:
        queue_wait_ms = (self.clock_ns() - enqueued_ns) / 1e6
        report = self.pipeline.describe(window)
        self.last_timings_ms = {"queue_wait": round(queue_wait_ms, 3), **report.timings_ms}
        self.counts["windows_described"] += 1
        self.outputs.description(report.description)
        self.outputs.report(report.to_json())
        with self._lock:
            frame_ids = dict(self.frame_ids)
        detection = risk_detection(report.to_dict(), window, frame_ids)
        self.outputs.detections(detection)
        if self.outputs.overlay_wanted():
            frame = window.images[window.cameras.index(detection.camera)][-1]
            self.outputs.overlay(draw_overlay(frame, detection), detection)

    def _answer(self, question: str, window: FrameWindow) -> None:
        (answer,) = self.pipeline.ask(window, [question])
        self.counts["questions_answered"] += 1
        self._reply(question, answer, window.stamp_ns)

    # -- diagnostics

    def diagnostics(self) -> list[Status]:
        """One status for the pipeline and one per camera (STALE when it has gone quiet)."""
        now = self.clock_ns()
        with self._lock:
            stale = self.stream.stale_cameras(now)
            queued, questions = len(self._windows), len(self._questions)
            counts, timings = dict(self.counts), dict(self.last_timings_ms)
        dropped = counts.get("windows_dropped", 0)
        pipeline = Status(
            name=f"{self.node_name}: pipeline",
            level=WARN if dropped or counts.get("errors") else OK,
            message=f"mode {self.params.mode}, {counts.get('windows_described', 0)} windows described, {dropped} dropped",
            hardware_id=self.node_name,
            values={
                "mode": self.params.mode,
                "model": getattr(self.pipeline, "model_name", ""),
                "backend": self.params.backend,
                "device": self.params.device,
                **{
                    name: str(counts.get(name, 0))
                    for name in (
                        "windows_described",
                        "windows_dropped",
                        "questions_answered",
                        "questions_rejected",
                        "bad_questions",
                        "errors",
                    )
                },
                "windows_queued": str(queued),
                "questions_queued": str(questions),
                "stale_cameras": ",".join(stale),
                **{f"latency_ms.{stage}": f"{ms:.1f}" for stage, ms in timings.items()},
            },
        )
        return [pipeline] + [
            self._camera_status(camera, camera in stale, now) for camera in self.stream.sync.cameras
        ]

    def _camera_status(self, camera: str, stale: bool, now_ns: int) -> Status:
        """STALE when silent; WARN once its stamps jumped or a frame did not decode; else OK."""
        seen = self.stream.last_seen_ns.get(camera)
        age = "never" if seen is None else f"{(now_ns - seen) / 1e9:.2f}"
        sync = self.stream.sync
        jumps, bad = sync.jumps[camera], self.bad_images[camera]
        last_jump = " to ".join(f"{stamp / 1e9:.3f} s" for stamp in sync.last_jump.get(camera, ()))
        problems = [f"no frame for {age} s"] if stale else []
        if jumps:
            problems.append(f"stamp jumped {jumps} time(s), last from {last_jump}")
        if bad:
            problems.append(f"{bad} frame(s) did not decode")
        return Status(
            name=f"{self.node_name}: camera {camera}",
            level=STALE if stale else WARN if problems else OK,
            message="; ".join(problems) or "ok",
            hardware_id=camera,
            values={
                "frames_received": str(self.stream.received[camera]),
                "seconds_since_last_frame": age,
                "last_stamp_ns": str(self.stream.last_stamp_ns.get(camera, "")),
                "bad_images": str(bad),
                "stamp_jumps": str(jumps),
                "last_stamp_jump": last_jump,
                **{f"dropped_{reason}": str(sync.dropped[camera][reason]) for reason in DROP_REASONS},
            },
        )

    def _publish_diagnostics(self) -> None:
        while not self._stopping.wait(self.params.diagnostics_period_s):
            try:
                self.outputs.diagnostics(self.diagnostics())
            except Exception:  # a failed publish must not end the diagnostics for good
                log.exception("publishing diagnostics failed")


def _describe_error(error: Exception) -> str:
    """An InputError's message as it is; any other error with its type, which its message may not name."""
    return str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
