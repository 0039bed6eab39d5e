"""Attacks on the node: every sample it can receive, and every parameter it can be given.

The node must never stop perceiving: a stamp jump resets the camera (WARN on /diagnostics), a sample that
does not decode is counted and dropped, every question gets an answer or a rejection, parameters are
coerced to their declared types, and raw YUV frames decode.

Tests of the core's queueing use GatedPipeline (tests/test_ros_node_core.py), a stand-in whose
describe/ask wait at a gate the test opens; the DDS tests speak the ROS 2 wire format over Cyclone DDS on
loopback, in this process or, for the last test, between the real `vts-drive node` and this file run as a
script (`drive`), standing in for ROS 2 nodes.
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from test_ros_dds import LOOPBACK_CONFIG
from test_ros_node_core import CAMERAS, IMAGE, MS, GatedPipeline, Recorder, make_core, send_sets, wait_until
from vts_drive.errors import InputError
from vts_drive.ros import msgs
from vts_drive.ros.diagnostics import OK, WARN
from vts_drive.ros.images import message_to_rgb

DAY_NS = 86_400 * 1_000_000_000
EPOCH_NS = 1_700_000_000 * 1_000_000_000  # stamps of a clock that has not been reset
BURST = [f"question {i}?" for i in range(22)]


def camera_statuses(core) -> dict:
    return {s.name.removeprefix("vts_drive: camera "): s for s in core.diagnostics()[1:]}


class RecordingPipeline(GatedPipeline):
    """GatedPipeline that also keeps the stamps of every window it describes."""

    def __init__(self) -> None:
        super().__init__()
        self.windows: list[list[list[int]]] = []
        self.gate.set()

    def describe(self, window):
        self.windows.append(window.stamps_ns)
        return super().describe(window)


# -- stamp jumps


def test_a_frame_stamped_a_day_ahead_resets_its_camera_and_windows_go_on():
    pipeline = RecordingPipeline()
    core, out = make_core(pipeline, window_queue_size=100)
    send_sets(core, 4)
    core.on_image("front", 350 * MS + DAY_NS, IMAGE)  # one frame from a clock a day ahead
    send_sets(core, 4, start=4)
    wait_until(lambda: len(out.reports) == 8)
    core.stop()
    assert [json.loads(r)["stamp"] for r in out.reports] == [t / 10 for t in range(8)]
    front = camera_statuses(core)["front"]
    assert front.level == WARN and front.values["stamp_jumps"] == "2"  # a day ahead, then back
    assert "stamp jumped" in front.message
    assert camera_statuses(core)["front_left"].level == OK


def test_a_clock_reset_to_zero_resets_the_cameras_and_no_window_spans_it():
    pipeline = RecordingPipeline()
    core, out = make_core(pipeline, window_queue_size=100, frames_per_window=2, window_stride=1)
    for t in range(4):
        for camera in CAMERAS:
            core.on_image(camera, EPOCH_NS + t * 100 * MS, IMAGE)
    send_sets(core, 4)  # every camera's clock starts again at 0 (a simulator restart, a bag played in a loop)
    wait_until(lambda: len(out.reports) == 6)
    core.stop()
    assert [json.loads(r)["stamp"] for r in out.reports][-3:] == [0.1, 0.2, 0.3]
    for stamps in pipeline.windows:  # every window holds frames of one clock, oldest first
        assert all(row == sorted(row) for row in stamps)
        assert max(map(max, stamps)) - min(map(min, stamps)) < DAY_NS
    assert {camera: s.values["stamp_jumps"] for camera, s in camera_statuses(core).items()} == dict.fromkeys(
        CAMERAS, "1"
    )
    assert {s.level for s in camera_statuses(core).values()} == {WARN}


def test_the_stamp_jump_bound_is_a_parameter():
    from vts_drive.ros.params import params_from_dict, read_params_file

    assert params_from_dict({"max_stamp_jump_s": 3}).stream_config().max_stamp_jump_s == 3.0
    with pytest.raises(InputError, match="max_stamp_jump_s"):
        params_from_dict({"max_stamp_jump_s": 0.0})
    shipped = read_params_file(Path(__file__).resolve().parents[2] / "launch" / "params.yaml")
    assert shipped["max_stamp_jump_s"] > 0


# -- samples that do not decode, and a reply to every question


@pytest.fixture
def dds_domain(tmp_path, monkeypatch) -> int:
    """A DDS domain of this test's own, on loopback."""
    config = tmp_path / "cyclonedds.xml"
    config.write_text(LOOPBACK_CONFIG)
    monkeypatch.setenv("CYCLONEDDS_URI", config.as_uri())
    return random.Random(os.getpid() ^ time.time_ns()).randrange(1, 200)


class Spinner:
    """DdsTransport.spin in a thread that can be paused (stopped and started again)."""

    def __init__(self, transport, core) -> None:
        self.transport, self.core = transport, core
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> None:
        self.stop.clear()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.transport.spin(self.core, self.stop)
        except BaseException as error:  # the attack's outcome: kept for the assertion
            self.error = error

    def pause(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def alive(self) -> bool:
        return self.thread.is_alive()


@contextmanager
def node_on_dds(domain: int, pipeline, **params):
    """A NodeCore fed by a DdsTransport, and a participant with writers to its topics."""
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.topic import Topic

    from vts_drive.ros.dds_transport import RELIABLE_QOS, DdsTransport
    from vts_drive.ros.node_core import NodeCore
    from vts_drive.ros.params import NodeParams

    node_params = NodeParams(
        frames_per_window=1, window_stride=1, diagnostics_period_s=60.0, input_qos="reliable", **params
    )
    recorder = Recorder()
    core = NodeCore(pipeline, node_params, recorder.outputs)
    transport = DdsTransport(node_params, domain)
    peer = DomainParticipant(domain)

    def writer(topic: str, data_type):
        return DataWriter(peer, Topic(peer, msgs.dds_topic(topic), data_type), qos=RELIABLE_QOS)

    writers = SimpleNamespace(
        cameras={camera: writer(f"/cam_{camera}/image_raw", msgs.Image_) for camera in CAMERAS},
        question=writer("/vts_drive/question", msgs.String_),
    )
    spinner = Spinner(transport, core)
    core.start()
    spinner.start()
    try:
        yield core, recorder, writers, spinner
    finally:
        if spinner.alive():
            spinner.pause()
        core.stop()
        transport.close()
        peer.__del__()


def write_set(writers, t: int) -> None:
    for camera, writer in writers.cameras.items():
        writer.write(msgs.image_message(t * 100 * MS, camera, IMAGE))


def with_bytes(msg, raw: bytes):
    """The message, written as `raw` instead of its own CDR bytes (how a broken publisher's bytes arrive)."""
    msg.serialize = lambda **_: raw
    return msg


def non_utf8_image(camera: str, stamp_ns: int):
    msg = msgs.image_message(stamp_ns, camera, IMAGE)
    return with_bytes(msg, msg.serialize().replace(b"rgb8", b"rg\xff8", 1))


def non_utf8_question():
    msg = msgs.String_(data="is it ok?")
    return with_bytes(msg, msg.serialize().replace(b"ok", b"o\xff"))


def test_samples_that_are_not_utf8_are_counted_and_dropped_and_the_node_goes_on(dds_domain):
    pipeline = GatedPipeline()
    pipeline.gate.set()
    with node_on_dds(dds_domain, pipeline, window_queue_size=100) as (core, out, writers, spinner):
        write_set(writers, 0)
        wait_until(lambda: len(out.reports) == 1)
        writers.cameras["front"].write(non_utf8_image("front", 50 * MS))
        writers.question.write(non_utf8_question())
        write_set(writers, 1)
        wait_until(lambda: len(out.reports) == 2 and out.answers or spinner.error is not None)
        assert spinner.error is None and spinner.alive()
        (answer,) = out.answers
        assert answer["question"] is None and answer["answer"] is None
        assert "question does not decode" in answer["error"] and "utf-8" in answer["error"]
        statuses = {s.name: s for s in core.diagnostics()}
        front = statuses["vts_drive: camera front"]
        assert front.values["bad_images"] == "1" and front.level == WARN
        assert statuses["vts_drive: pipeline"].values["bad_questions"] == "1"
        assert core.bad_images == {"front": 1}


def test_a_burst_of_questions_gets_an_answer_or_a_rejection_for_every_question(dds_domain):
    from cyclonedds.util import duration

    pipeline = GatedPipeline()
    with node_on_dds(dds_domain, pipeline, question_queue_size=8) as (core, out, writers, spinner):
        write_set(writers, 0)
        wait_until(lambda: core._latest is not None and not core._windows)  # the worker waits at the gate
        spinner.pause()  # the burst arrives while the node is busy elsewhere
        for question in BURST:
            writers.question.write(msgs.String_(data=question))
        assert writers.question.wait_for_acks(duration(seconds=10))  # all 22 are in the node's reader
        spinner.start()
        wait_until(lambda: len(out.answers) == 14)
        pipeline.gate.set()
        wait_until(lambda: len(out.answers) == 22)
    assert sorted(a["question"] for a in out.answers) == sorted(BURST)
    answered = [a for a in out.answers if a["error"] is None]
    assert [a["question"] for a in answered] == BURST[:8]
    assert all(a["answer"] == f"answer to {a['question']}" for a in answered)
    assert {a["error"] for a in out.answers if a["error"]} == {"question queue is full (8 waiting)"}


def test_a_question_left_when_the_node_stops_or_the_model_fails_is_rejected_with_the_reason():
    class FailingAsk(GatedPipeline):
        def ask(self, window, questions):
            raise RuntimeError("model failure")

    pipeline = FailingAsk()
    core, out = make_core(pipeline)
    send_sets(core, 1)
    wait_until(lambda: not core._windows)
    core.on_question("first?")
    core.on_question("second?")
    pipeline.gate.set()
    wait_until(lambda: out.answers)
    core.stop()
    assert out.answers[0] == {
        "question": "first?",
        "answer": None,
        "stamp": None,
        "error": "the model failed to answer: RuntimeError: model failure",
    }
    assert len(out.answers) == 2 and out.answers[1]["question"] == "second?" and out.answers[1]["error"]


def test_a_message_that_raises_anything_is_counted_and_dropped():
    pipeline = GatedPipeline()
    core, _ = make_core(pipeline)
    header = msgs.header(0, "front")
    core.on_message(
        "front", SimpleNamespace(header=header, height=8, width=8, encoding="rgb8", step=24, data=None)
    )
    core.on_message("front", SimpleNamespace(header=None, format="jpeg", data=b""))
    core.on_message("front", object())
    core.stop()
    assert core.bad_images == {"front": 3}


# -- parameters from rclpy


class StandInRclpyNode:
    """Stands in for rclpy.node.Node, which cannot be installed here: declare_parameter follows rclpy's rule
    (a value given to the node of another type than the declared one raises InvalidParameterTypeException,
    unless the descriptor allows dynamic typing) and returns the value given, or else the default."""

    class InvalidParameterTypeException(Exception):
        pass

    def __init__(self, overrides: dict) -> None:
        self.overrides = overrides
        self.declared: dict[str, object] = {}

    def declare_parameter(self, name: str, value: object, descriptor):
        given = self.overrides.get(name, value)
        if not descriptor.dynamic_typing and type(given) is not type(value):
            raise self.InvalidParameterTypeException(
                f"{name}: expected {type(value).__name__}, got {given!r}"
            )
        self.declared[name] = descriptor
        return SimpleNamespace(name=name, value=given)


def descriptor(**fields):
    """rcl_interfaces/ParameterDescriptor's fields (name, type, description, additional_constraints,
    read_only, dynamic_typing, ...), as keyword arguments like rclpy's message class takes them."""
    return SimpleNamespace(**{"dynamic_typing": False, **fields})


def test_a_launch_file_integer_for_a_float_parameter_is_coerced(capsys):
    from vts_drive.cli import main
    from vts_drive.config import setting_keys
    from vts_drive.ros.params import node_fields, params_from_ros_node

    node = StandInRclpyNode({"sync_slop_s": 1, "stale_after_s": 2, "mode": "vts"})
    params = params_from_ros_node(node, descriptor, source="node /vts_drive")
    assert (params.sync_slop_s, params.stale_after_s, params.mode) == (1.0, 2.0, "vts")
    assert isinstance(params.sync_slop_s, float)
    assert set(node.declared) == set(node_fields()) | set(setting_keys())
    with pytest.raises(InputError, match=r"node /vts_drive: parameter sync_slop_s must be float, got 'fast'"):
        params_from_ros_node(StandInRclpyNode({"sync_slop_s": "fast"}), descriptor, source="node /vts_drive")
    with pytest.raises(InputError, match=r"parameter frames_per_window must be int, got 2.5"):
        params_from_ros_node(
            StandInRclpyNode({"frames_per_window": 2.5}), descriptor, source="node /vts_drive"
        )
    assert main(["node", "--param", "sync_slop_s=fast"]) == 2
    assert "parameter sync_slop_s must be float, got 'fast'" in capsys.readouterr().err


# -- raw YUV encodings


def yuv_layouts(rgb: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
    """`rgb` in each raw YUV layout, packed by hand from its I420 planes: encoding -> (rows [rows, step], step)."""
    height, width = rgb.shape[:2]
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    y = i420[:height]
    u = i420[height : height + height // 4].reshape(height // 2, width // 2)
    v = i420[height + height // 4 :].reshape(height // 2, width // 2)
    u_rows, v_rows = u.repeat(2, axis=0), v.repeat(2, axis=0)  # 4:2:2 keeps chroma on every row
    uyvy = np.stack([u_rows, y[:, 0::2], v_rows, y[:, 1::2]], axis=-1).reshape(height, 2 * width)
    yuyv = np.stack([y[:, 0::2], u_rows, y[:, 1::2], v_rows], axis=-1).reshape(height, 2 * width)
    nv12 = np.vstack([y, np.stack([u, v], axis=-1).reshape(height // 2, width)])
    nv21 = np.vstack([y, np.stack([v, u], axis=-1).reshape(height // 2, width)])
    return {
        "uyvy": (uyvy, 2 * width),
        "yuv422": (uyvy, 2 * width),
        "yuyv": (yuyv, 2 * width),
        "yuv422_yuy2": (yuyv, 2 * width),
        "nv12": (nv12, width),
        "nv21": (nv21, width),
    }


RGB = (
    np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8).repeat(2, 0).repeat(2, 1)
)  # [8, 12, 3]


@pytest.mark.parametrize("encoding", ["uyvy", "yuv422", "yuyv", "yuv422_yuy2", "nv12", "nv21"])
def test_raw_yuv_frames_decode_to_the_image_they_show(encoding):
    """2 x 2 blocks of one colour, so chroma subsampling loses nothing; a wrong layout is off by hundreds."""
    rows, step = yuv_layouts(RGB)[encoding]
    msg = msgs.Image_(
        header=msgs.header(0, "front"), height=8, width=12, encoding=encoding, step=step, data=rows.tobytes()
    )
    decoded = message_to_rgb(msgs.Image_.deserialize(msg.serialize()))
    assert decoded.shape == RGB.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - RGB).max() <= 2


@pytest.mark.parametrize(
    "encoding, width, height, problem",
    [
        ("uyvy", 5, 4, "width 5 must be even"),
        ("nv12", 6, 3, "height 3 must be even"),
        ("nv12", 6, 4, "expected 36 bytes"),
    ],
)
def test_raw_yuv_frames_that_do_not_fit_their_layout_raise(encoding, width, height, problem):
    step = 2 * width if encoding == "uyvy" else width
    msg = SimpleNamespace(
        height=height, width=width, encoding=encoding, step=step, data=b"\0" * step * height
    )
    with pytest.raises(InputError, match=problem):
        message_to_rgb(msg)


# -- every attack on one node, over DDS between processes


def drive(domain: int, seconds: float) -> None:
    """Cameras, questions and a listener in one process; prints what it heard as JSON.

    Good frames (three cameras, 10 Hz) until a report comes; then every attack at once: a front frame
    stamped a day ahead, a front frame whose encoding is not UTF-8, a question that is not UTF-8 and a
    burst of 22 questions; good frames until a report newer than the attack; then every camera's clock
    starts again at 0. Done when a report of the new clock, an answer to each of the 23 questions and
    diagnostics counting the attack have come, or time is up."""
    from cyclonedds.core import Policy, Qos
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic
    from cyclonedds.util import duration

    from vts_drive.ros.dds_transport import RELIABLE_QOS

    participant = DomainParticipant(domain)
    keep_all = Qos(
        Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100)), Policy.History.KeepAll
    )

    def topic(name, data_type):
        return Topic(participant, msgs.dds_topic(name), data_type)

    cameras = {
        c: DataWriter(participant, topic(f"/cam_{c}/image_raw", msgs.Image_), qos=RELIABLE_QOS)
        for c in CAMERAS
    }
    questions = DataWriter(participant, topic("/vts_drive/question", msgs.String_), qos=RELIABLE_QOS)
    readers = {
        "reports": DataReader(participant, topic("/vts_drive/risk_qa", msgs.String_), qos=keep_all),
        "answers": DataReader(participant, topic("/vts_drive/answer", msgs.String_), qos=keep_all),
        "diagnostics": DataReader(
            participant, topic("/diagnostics", msgs.DiagnosticArray_), qos=RELIABLE_QOS
        ),
    }
    got = {name: [] for name in readers}
    rng = np.random.default_rng(0)
    attack_ns = restart_ns = None  # wall times of the attack and of the clock restart
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = time.time_ns()
        stamp = now if restart_ns is None else now - restart_ns
        for camera, writer in cameras.items():
            writer.write(msgs.image_message(stamp, camera, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
        for name, reader in readers.items():
            for msg in reader.take(N=64):
                if name == "diagnostics":
                    got[name] = [
                        {"name": s.name, "level": s.level, "values": {kv.key: kv.value for kv in s.values}}
                        for s in msg.status
                    ]
                elif hasattr(msg, "data"):
                    got[name].append(json.loads(msg.data))
        stamps = [report["stamp"] for report in got["reports"]]
        if attack_ns is None and stamps and questions.get_publication_matched_status().current_count:
            attack_ns = time.time_ns()
            cameras["front"].write(msgs.image_message(attack_ns + DAY_NS, "front", IMAGE))
            cameras["front"].write(non_utf8_image("front", attack_ns + 10 * MS))
            questions.write(non_utf8_question())
            for question in BURST:
                questions.write(msgs.String_(data=question))
        elif restart_ns is None and attack_ns is not None and any(s > attack_ns / 1e9 for s in stamps):
            restart_ns = time.time_ns()
        if (
            restart_ns is not None
            and any(s < 1e6 for s in stamps)
            and len(got["answers"]) >= 23
            and _counted(got)
        ):
            break
        time.sleep(0.1)
    print(json.dumps({**got, "attack_s": attack_ns and attack_ns / 1e9}))


def _counted(got: dict) -> bool:
    """The last diagnostics count the attack: on front three stamp jumps (a day ahead, back, the clock restart)
    or more and one bad frame; one bad question."""
    statuses = {s["name"]: s["values"] for s in got["diagnostics"]}
    front, pipeline = statuses.get("vts_drive: camera front", {}), statuses.get("vts_drive: pipeline", {})
    counts = [
        int(values.get(name, 0))
        for values, name in [(front, "stamp_jumps"), (front, "bad_images"), (pipeline, "bad_questions")]
    ]
    return counts[0] >= 3 and counts[1:] == [1, 1]


def test_the_node_survives_every_attack_and_answers_every_question(tmp_path, tiny_model_dir):
    config = tmp_path / "cyclonedds.xml"
    config.write_text(LOOPBACK_CONFIG)
    tests = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "CYCLONEDDS_URI": config.as_uri(),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])),
    }
    domain = str(random.Random(os.getpid() ^ time.time_ns()).randrange(1, 200))
    params = tmp_path / "params.yaml"
    params.write_text(
        "vts_drive:\n  ros__parameters:\n"
        f"    model: {tiny_model_dir}\n    frames_per_window: 2\n    window_stride: 2\n    input_qos: reliable\n"
        "    max_new_tokens: 4\n    diagnostics_period_s: 0.5\n"
    )
    vts_drive = Path(sys.executable).with_name("vts-drive")
    node = subprocess.Popen(
        [str(vts_drive), "node", "--transport", "dds", "--params", str(params), "--domain-id", domain],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        run = subprocess.run(
            [sys.executable, __file__, "drive", domain, "150"],
            env=env,
            capture_output=True,
            text=True,
            timeout=200,
        )
    finally:
        node.send_signal(signal.SIGTERM)
        node_log, _ = node.communicate(timeout=60)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert node.returncode == 0, node_log

    attack_s = got["attack_s"]
    stamps = [report["stamp"] for report in got["reports"]]
    assert attack_s is not None, node_log
    assert any(s > attack_s for s in stamps), f"no report after the attack: {node_log}"
    assert any(s < 1e6 for s in stamps), f"no report after the clock restarted: {node_log}"

    answers = got["answers"]
    assert sorted(a["question"] for a in answers if a["question"] is not None) == sorted(BURST)
    assert all((a["answer"] is None) != (a["error"] is None) for a in answers)  # an answer or a reason
    (undecodable,) = [a for a in answers if a["question"] is None]
    assert "question does not decode" in undecodable["error"]

    statuses = {s["name"]: s for s in got["diagnostics"]}
    assert statuses["vts_drive: camera front"]["level"] == WARN
    assert _counted(got)


if __name__ == "__main__":
    {"drive": drive}[sys.argv[1]](int(sys.argv[2]), float(sys.argv[3]))
