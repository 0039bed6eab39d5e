"""End to end over DDS on loopback: a camera publisher, `vts-drive node --transport dds` with the tiny
model and a subscriber, each its own process, speaking the ROS 2 wire format on a domain of their own.

The publisher and subscriber are this file run as a script (`publish` / `subscribe`), standing in for
ROS 2 nodes: the same topics, type names, CDR and QoS that rclpy nodes use.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vts_drive.report import validate_report

CAMERAS = ["front", "front_left", "front_right"]
LONG_QUESTION = "why " * 200
LOOPBACK_CONFIG = """<CycloneDDS><Domain id="any">
  <General><Interfaces><NetworkInterface name="lo"/></Interfaces><AllowMulticast>false</AllowMulticast></General>
  <Discovery><ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>20</MaxAutoParticipantIndex>
    <Peers><Peer address="127.0.0.1"/></Peers></Discovery>
</Domain></CycloneDDS>"""


def publish(domain: int, seconds: float) -> None:
    """Three cameras at 10 Hz, best effort (ROS sensor_data); every 4th front_left frame is malformed."""
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.topic import Topic

    from vts_drive.ros import msgs
    from vts_drive.ros.dds_transport import SENSOR_DATA_QOS

    participant = DomainParticipant(domain)
    writers = {
        camera: DataWriter(
            participant, Topic(participant, f"rt/cam_{camera}/image_raw", msgs.Image_), qos=SENSOR_DATA_QOS
        )
        for camera in CAMERAS
    }
    rng = np.random.default_rng(0)
    end, frame = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        stamp = time.time_ns()
        for camera, writer in writers.items():
            msg = msgs.image_message(stamp, camera, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
            if camera == "front_left" and frame % 4 == 3:
                msg.step += 3  # no longer matches the data
            writer.write(msg)
        frame += 1
        time.sleep(0.1)


def subscribe(domain: int, seconds: float) -> None:
    """Collect reports, descriptions, diagnostics, answers, risk detections and overlays (a reader of
    ~/overlay is what makes the node draw them); ask two questions once reports flow.
    Prints one JSON object and exits when it has all it waits for (diagnostics counting the
    malformed frames included) or time is up."""
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    from vts_drive.ros import msgs
    from vts_drive.ros.dds_transport import RELIABLE_QOS
    from vts_drive.ros.typestore import stamp_to_ns

    participant = DomainParticipant(domain)

    def reader(topic, data_type):
        return DataReader(participant, Topic(participant, topic, data_type), qos=RELIABLE_QOS)

    readers = {
        "reports": reader("rt/vts_drive/risk_qa", msgs.String_),
        "descriptions": reader("rt/vts_drive/scene_description", msgs.String_),
        "answers": reader("rt/vts_drive/answer", msgs.String_),
        "diagnostics": reader("rt/diagnostics", msgs.DiagnosticArray_),
        "detections": reader("rt/vts_drive/risk_detections", msgs.Detection2DArray_),
        "overlays": reader("rt/vts_drive/overlay", msgs.Image_),
    }
    questions = DataWriter(
        participant, Topic(participant, "rt/vts_drive/question", msgs.String_), qos=RELIABLE_QOS
    )
    got = {name: [] for name in readers}
    asked = False
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for name, r in readers.items():
            for msg in r.take(N=16):
                if name == "diagnostics":
                    got[name].append(
                        [
                            {
                                "name": s.name,
                                "level": s.level,
                                "values": {kv.key: kv.value for kv in s.values},
                            }
                            for s in msg.status
                        ]
                    )
                elif name == "detections":
                    got[name].append(
                        {
                            "frame_id": msg.header.frame_id,
                            "stamp": stamp_to_ns(msg.header.stamp),
                            "classes": [d.results[0].hypothesis.class_id for d in msg.detections],
                        }
                    )
                elif name == "overlays":
                    got[name].append(
                        {
                            "frame_id": msg.header.frame_id,
                            "stamp": stamp_to_ns(msg.header.stamp),
                            "size": [msg.width, msg.height],
                            "encoding": msg.encoding,
                        }
                    )
                elif hasattr(msg, "data"):
                    got[name].append(msg.data)
        if got["reports"] and not asked and questions.get_publication_matched_status().current_count:
            questions.write(msgs.String_(data="Is anyone crossing?"))
            questions.write(msgs.String_(data=LONG_QUESTION))
            asked = True
        if (
            len(got["reports"]) >= 2
            and len(got["answers"]) >= 2
            and len(got["detections"]) >= 2
            and got["overlays"]
            and got["diagnostics"]
            and _saw_bad_frames(got["diagnostics"][-1])
        ):
            break
        time.sleep(0.05)
    print(json.dumps(got))


def _saw_bad_frames(statuses: list[dict]) -> bool:
    return any(
        s["name"] == "vts_drive: camera front_left" and int(s["values"]["bad_images"]) > 0 for s in statuses
    )


def test_node_over_dds_reports_answers_and_diagnoses(tmp_path, tiny_model_dir):
    config = tmp_path / "cyclonedds.xml"
    config.write_text(LOOPBACK_CONFIG)
    env = {**os.environ, "CYCLONEDDS_URI": config.as_uri(), "PYTHONUNBUFFERED": "1"}
    domain = str(random.Random(os.getpid() ^ time.time_ns()).randrange(1, 200))  # unique per run
    params = tmp_path / "params.yaml"
    params.write_text(
        "vts_drive:\n  ros__parameters:\n"
        f"    model: {tiny_model_dir}\n    frames_per_window: 2\n    window_stride: 2\n"
        "    max_new_tokens: 4\n    diagnostics_period_s: 0.5\n    max_question_chars: 200\n"
    )
    vts_drive = Path(sys.executable).with_name("vts-drive")
    node = subprocess.Popen(
        [str(vts_drive), "node", "--transport", "dds", "--params", str(params), "--domain-id", domain],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    publisher = subprocess.Popen([sys.executable, __file__, "publish", domain, "150"], env=env)
    try:
        subscriber = subprocess.run(
            [sys.executable, __file__, "subscribe", domain, "150"],
            env=env,
            capture_output=True,
            text=True,
            timeout=200,
        )
    finally:
        publisher.kill()
        node.send_signal(signal.SIGTERM)
        node_log, _ = node.communicate(timeout=60)
    assert subscriber.returncode == 0, subscriber.stderr
    got = json.loads(subscriber.stdout)
    assert len(got["reports"]) >= 2, node_log

    reports = [json.loads(text) for text in got["reports"]]
    for report in reports:
        validate_report(report)
        assert report["cameras"] == CAMERAS and report["frames_per_camera"] == 2
    assert (
        got["descriptions"][: len(reports)] == [r["description"] for r in reports][: len(got["descriptions"])]
    )

    answers = {a["question"][:10]: a for a in map(json.loads, got["answers"])}
    assert answers["Is anyone "]["error"] is None and isinstance(answers["Is anyone "]["answer"], str)
    assert (
        answers[LONG_QUESTION[:10]]["error"]
        == f"question is {len(LONG_QUESTION.strip())} characters, the limit is 200"
    )

    # each report's detection array sits on its risk camera's frame (the publisher stamps all cameras alike)
    for report, detection in zip(reports, got["detections"]):
        camera = report["risk"]["camera"] if report["risk"]["camera"] in CAMERAS else "front"
        assert (detection["frame_id"], detection["stamp"] / 1e9) == (camera, report["stamp"])
    overlay = got["overlays"][0]
    assert (overlay["size"], overlay["encoding"]) == ([32, 32], "rgb8")
    assert (overlay["frame_id"], overlay["stamp"]) in {(d["frame_id"], d["stamp"]) for d in got["detections"]}

    statuses = {s["name"]: s for s in got["diagnostics"][-1]}
    assert statuses["vts_drive: pipeline"]["values"]["mode"] == "dense"
    assert {f"vts_drive: camera {c}" for c in CAMERAS} <= set(statuses)
    assert _saw_bad_frames(got["diagnostics"][-1])

    assert node.returncode == 0, node_log
    assert "stopped after" in node_log


def test_a_domain_that_cannot_be_joined_is_an_input_error():
    from vts_drive.errors import InputError
    from vts_drive.ros.dds_transport import DdsTransport
    from vts_drive.ros.params import NodeParams

    with pytest.raises(InputError, match="DDS domain 300: cannot join"):
        DdsTransport(NodeParams(), domain_id=300)


if __name__ == "__main__":
    {"publish": publish, "subscribe": subscribe}[sys.argv[1]](int(sys.argv[2]), float(sys.argv[3]))
