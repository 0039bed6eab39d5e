"""rosbag2 I/O and replay on real bags written here (mcap and sqlite3, Image and CompressedImage)."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from vts_drive.cli import main as cli_main
from vts_drive.errors import InputError
from vts_drive.report import validate_report
from vts_drive.results_file import read_reports
from vts_drive.ros.bag_reader import CameraBag
from vts_drive.ros.bag_writer import BagWriter
from vts_drive.ros.replay import replay
from vts_drive.ros.stream import StreamConfig
from vts_drive.ros.typestore import stamp_to_ns
from vts_drive.synth.generate import SynthConfig, generate_dataset

MS = 1_000_000
START_NS = 1_700_000_000_000_000_000
CAMERAS = ["front", "front_left", "front_right"]
SETTINGS = StreamConfig(cameras=[], frames=2, stride=2, slop_s=0.02)


def write_camera_bag(
    path: Path, storage: str = "mcap", frames: int = 6, compressed: bool = False, seed: int = 0
) -> Path:
    """Three 10 Hz cameras, a few ms apart, plus a text topic that replay must ignore."""
    rng = np.random.default_rng(seed)
    suffix = "/compressed" if compressed else ""
    with BagWriter(path, storage=storage) as bag:
        for t in range(frames):
            for i, camera in enumerate(CAMERAS):
                stamp = START_NS + t * 100 * MS + i * 4 * MS
                bag.add_image(
                    f"/cam_{camera}/image_raw{suffix}",
                    stamp,
                    camera,
                    rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
                    compressed=compressed,
                )
            bag.add_string("/notes", START_NS + t * 100 * MS, f"frame {t}")
    return path


def files_digest(path: Path) -> dict:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir())}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_writer_is_deterministic_and_readable(tmp_path, storage):
    write_camera_bag(tmp_path / "a" / "bag", storage)
    write_camera_bag(tmp_path / "b" / "bag", storage)
    assert files_digest(tmp_path / "a" / "bag") == files_digest(tmp_path / "b" / "bag")
    with AnyReader([tmp_path / "a" / "bag"]) as reader:
        topics = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        connection, log_time, data = next(reader.messages())
        msg = reader.deserialize(data, connection.msgtype)
    assert topics["/cam_front/image_raw"] == ("sensor_msgs/msg/Image", 6) and topics["/notes"][1] == 6
    assert log_time == START_NS and (msg.header.stamp.sec, msg.header.stamp.nanosec) == divmod(
        START_NS, 10**9
    )
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.header.frame_id) == (
        "rgb8",
        24,
        32,
        96,
        "front",
    )


def test_bag_writer_refuses_an_existing_path_and_a_topic_changing_type(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(InputError, match="already exists"):
        BagWriter(tmp_path / "taken")
    with pytest.raises(InputError, match="storage 'rosbag1'"):
        BagWriter(tmp_path / "new", storage="rosbag1")
    with pytest.raises(InputError, match="holds std_msgs/msg/String"):
        with BagWriter(tmp_path / "mixed") as bag:
            bag.add_string("/x", 0, "text")
            bag.add_image("/x", 1, "f", np.zeros((2, 2, 3), np.uint8))


@pytest.mark.parametrize("storage, compressed", [("mcap", False), ("sqlite3", False), ("mcap", True)])
def test_replay_writes_one_valid_report_per_window(tmp_path, tiny_pipeline, storage, compressed):
    bag = write_camera_bag(tmp_path / "bag", storage, compressed=compressed)
    out = tmp_path / "results.jsonl"
    summary = replay([bag], tiny_pipeline, out, SETTINGS)
    reports = read_reports(out)
    assert summary.described == len(reports) == 3 and summary.resumed == 0
    for report in reports:
        validate_report(report)
        assert report["cameras"] == CAMERAS and report["frames_per_camera"] == 2
    # windows end at sets 1, 3, 5; a window's stamp is its newest frame (front_right, 8 ms after front)
    assert [r["stamp"] for r in reports] == [(START_NS + t * 100 * MS + 8 * MS) / 1e9 for t in (1, 3, 5)]


def test_results_bag_holds_cameras_and_reports(tmp_path, tiny_pipeline):
    bag = write_camera_bag(tmp_path / "bag", "sqlite3")
    out, out_bag = tmp_path / "results.jsonl", tmp_path / "results_bag"
    replay([bag], tiny_pipeline, out, SETTINGS, out_bag=out_bag)
    assert not (tmp_path / "results_bag.partial").exists()
    with AnyReader([out_bag]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        risk = [
            reader.deserialize(d, c.msgtype).data
            for c, _, d in reader.messages()
            if c.topic == "/vts_drive/risk_qa"
        ]
        times = [t for _, t, _ in reader.messages()]
    assert counts == {
        "/cam_front/image_raw": 6,
        "/cam_front_left/image_raw": 6,
        "/cam_front_right/image_raw": 6,
        "/vts_drive/scene_description": 3,
        "/vts_drive/risk_qa": 3,
        "/vts_drive/risk_detections": 3,
        "/vts_drive/overlay": 3,
    }
    assert risk == out.read_text().splitlines()[1:] and times == sorted(times)  # line 1: the header
    with pytest.raises(InputError, match="already exists"):
        replay([bag], tiny_pipeline, tmp_path / "again.jsonl", SETTINGS, out_bag=out_bag)


class Killed(Exception):
    pass


class KilledAfter:
    """The real pipeline, interrupted after `n` windows like a process killed mid-replay."""

    def __init__(self, pipeline, n: int) -> None:
        self.pipeline, self.left = pipeline, n

    def __getattr__(self, name: str):
        return getattr(self.pipeline, name)

    def describe(self, window):
        if self.left == 0:
            raise Killed
        self.left -= 1
        return self.pipeline.describe(window)


def test_killed_replay_resumes_without_duplicates(tmp_path, tiny_pipeline):
    bags = [
        write_camera_bag(tmp_path / "one", frames=8, seed=1),
        write_camera_bag(tmp_path / "two", "sqlite3", seed=2),
    ]
    out = tmp_path / "results.jsonl"
    with pytest.raises(Killed):
        replay(bags, KilledAfter(tiny_pipeline, 5), out, SETTINGS)
    with out.open("a") as results:
        results.write('{"schema": "vts_drive.report/1", "stamp": 17')  # the line being written when killed
    summary = replay(bags, tiny_pipeline, out, SETTINGS, out_bag=tmp_path / "bags")
    reports = read_reports(out)
    assert (summary.resumed, summary.described, len(reports)) == (5, 2, 7)  # 4 windows + 3 windows
    stamps = [report["stamp"] for report in reports]
    assert stamps[:4] == sorted(set(stamps[:4])) and stamps[4:] == sorted(set(stamps[4:]))
    assert sorted(p.name for p in (tmp_path / "bags").iterdir()) == ["one", "two"]
    again = replay(bags, tiny_pipeline, out, SETTINGS)
    assert (again.resumed, again.described, len(read_reports(out))) == (7, 0, 7)


def test_resuming_from_another_replays_results_is_refused(tmp_path, tiny_pipeline):
    out = tmp_path / "results.jsonl"
    replay([write_camera_bag(tmp_path / "bag")], tiny_pipeline, out, SETTINGS)
    other = StreamConfig(cameras=[], frames=3, stride=3, slop_s=0.02)
    with pytest.raises(
        InputError, match="holds reports of another run .*windows.frames: 2 in the file, 3 now"
    ):
        replay([tmp_path / "bag"], tiny_pipeline, out, other)
    out.write_text("not json\n")
    with pytest.raises(InputError, match="line 1 is not a JSON report"):
        read_reports(out)


def test_bad_images_in_a_bag_are_skipped_and_counted(tmp_path, tiny_pipeline):
    bag_path = write_camera_bag(tmp_path / "bag", frames=4)
    broken = tmp_path / "broken"
    with CameraBag(bag_path) as source, BagWriter(broken) as writer:
        for connection, log_time, data in source.raw_messages():
            if connection.topic == "/cam_front_left/image_raw" and log_time >= START_NS + 200 * MS:
                data = data[:-10]  # step x height no longer matches the data
            writer.add_serialized(connection.topic, connection.msgtype, log_time, data)
    summary = replay([broken], tiny_pipeline, tmp_path / "out.jsonl", SETTINGS)
    assert summary.bad_images == {"/cam_front_left/image_raw": 2}
    assert summary.described == 1  # sets 2-3 lack front_left, which is not stale yet (1 s): they wait


def test_missing_corrupt_and_topicless_bags_raise_clear_errors(tmp_path, tiny_pipeline):
    out = tmp_path / "out.jsonl"
    with pytest.raises(InputError, match="does not exist"):
        replay([tmp_path / "nowhere"], tiny_pipeline, out, SETTINGS)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "metadata.yaml").write_text("rosbag2_bagfile_information: [broken")
    with pytest.raises(InputError, match="cannot be read"):
        replay([corrupt], tiny_pipeline, out, SETTINGS)
    bag = write_camera_bag(tmp_path / "bag", frames=1)
    with pytest.raises(
        InputError,
        match=r"no topic /cam_rear/image_raw; it has: /cam_front/image_raw \(sensor_msgs/msg/Image\)",
    ):
        replay([bag], tiny_pipeline, out, SETTINGS, topics=["/cam_rear/image_raw"])
    with pytest.raises(InputError, match=r"/notes \(std_msgs/msg/String\) are not camera images"):
        replay([bag], tiny_pipeline, out, SETTINGS, topics=["/notes"])
    assert not out.exists()
    both = tmp_path / "both"
    with CameraBag(bag) as source, BagWriter(both) as writer:
        for connection, log_time, data in source.raw_messages():
            writer.add_serialized(connection.topic, connection.msgtype, log_time, data)
        writer.add_image(
            "/cam_front/image_raw/compressed",
            START_NS,
            "front",
            np.zeros((8, 8, 3), np.uint8),
            compressed=True,
        )
    with pytest.raises(InputError, match="image_raw, /cam_front/image_raw/compressed are all camera 'front'"):
        replay([both], tiny_pipeline, out, SETTINGS)
    assert not out.exists()
    with pytest.raises(InputError, match="share folder names"):
        replay([bag, bag], tiny_pipeline, out, SETTINGS, out_bag=tmp_path / "bags")
    with pytest.raises(InputError, match="is not a file"):
        replay([bag], tiny_pipeline, tmp_path, SETTINGS)


def test_truncated_mcap_raises_input_error(tmp_path, tiny_pipeline):
    bag = write_camera_bag(tmp_path / "bag", frames=6)
    data_file = bag / "bag.mcap"
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    with pytest.raises(InputError, match=f"bag {bag}"):
        replay([bag], tiny_pipeline, tmp_path / "out.jsonl", SETTINGS)


def test_cli_replay_and_its_exit_code_for_bad_input(tmp_path, tiny_model_dir, capsys):
    bag = write_camera_bag(tmp_path / "bag", "sqlite3", frames=4)
    out = tmp_path / "results.jsonl"
    args = [
        "replay",
        str(bag),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--frames",
        "2",
        "--stride",
        "2",
        "--max-new-tokens",
        "4",
        "--topics",
        "/cam_front/image_raw",
        "/cam_front_left/image_raw",
    ]
    assert cli_main(args) == 0
    assert [report["cameras"] for report in read_reports(out)] == [["front", "front_left"]] * 2
    assert cli_main(args) == 0 and "0 window(s) described, 2 already in" in capsys.readouterr().err
    assert (
        cli_main(["replay", str(tmp_path / "missing"), "--model", str(tiny_model_dir), "--out", str(out)])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def synthdrive_bag(folder: Path) -> Path:
    """One synthdrive scene as a rosbag2 bag: /cam_<camera>/image_raw, frame_id cam_<camera>, 192 x 128."""
    generate_dataset(folder, SynthConfig(scenes=1, seed=3, frames=6, formats=("bags",)))
    return folder / "bags" / "scene_00000"


def boxes_of(array) -> list[tuple[str, list[float]]]:
    """(class, [x1, y1, x2, y2] pixels) of each Detection2D, from its center and size."""
    boxes = []
    for detection in array.detections:
        center, bbox = detection.bbox.center.position, detection.bbox
        boxes.append(
            (
                detection.results[0].hypothesis.class_id,
                [
                    center.x - bbox.size_x / 2,
                    center.y - bbox.size_y / 2,
                    center.x + bbox.size_x / 2,
                    center.y + bbox.size_y / 2,
                ],
            )
        )
    return boxes


def test_replay_of_a_synthdrive_bag_writes_the_reports_boxes_as_detections(tmp_path):
    """The shipped model names and boxes the risk; the results bag read back with rosbags (types from the
    bag itself) and with the mcap library gives each report's box, in pixels of its camera's frame."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    from vts_drive.pipeline import Pipeline

    bag, out, out_bag = (
        synthdrive_bag(tmp_path / "synth"),
        tmp_path / "results.jsonl",
        tmp_path / "results_bag",
    )
    replay([bag], Pipeline.load("synthdrive-tiny"), out, SETTINGS, out_bag=out_bag)
    reports = read_reports(out)
    expected = [
        [(r["risk"]["object"], [v * size for v, size in zip(r["risk"]["bbox"], (192, 128, 192, 128))])]
        if r["risk"]["bbox"] and r["risk"]["camera"] in r["cameras"]
        else []
        for r in reports
    ]
    assert sum(map(len, expected)) >= 2  # the shipped model boxes most risks: the comparison is not vacuous

    with AnyReader(
        [out_bag]
    ) as reader:  # no typestore given: vision_msgs comes from the bag's own definitions
        by_topic = {}
        for connection, log_time, data in reader.messages():
            by_topic.setdefault(connection.topic, []).append(
                (log_time, reader.deserialize(data, connection.msgtype))
            )
    detections = [msg for _, msg in by_topic["/vts_drive/risk_detections"]]
    assert [boxes_of(msg) for msg in detections] == [
        [(name, pytest.approx(box, abs=1e-9)) for name, box in boxes] for boxes in expected
    ]
    for report, msg, (overlay_time, overlay) in zip(reports, detections, by_topic["/vts_drive/overlay"]):
        camera = (
            report["risk"]["camera"]
            if report["risk"]["camera"] in report["cameras"]
            else report["cameras"][0]
        )
        assert msg.header.frame_id == overlay.header.frame_id == f"cam_{camera}"
        assert msg.header.stamp == overlay.header.stamp and overlay_time == stamp_to_ns(overlay.header.stamp)
        assert (overlay.width, overlay.height, overlay.encoding) == (192, 128, "rgb8")
        assert report["stamp"] == stamp_to_ns(msg.header.stamp) / 1e9  # synthdrive's cameras share stamps

    (mcap_file,) = out_bag.glob("*.mcap")
    with mcap_file.open("rb") as stream:
        decoded = [
            (schema.name, msg)
            for schema, _, _, msg in make_reader(
                stream, decoder_factories=[DecoderFactory()]
            ).iter_decoded_messages(topics=["/vts_drive/risk_detections"])
        ]
    assert {name for name, _ in decoded} == {"vision_msgs/msg/Detection2DArray"}
    assert [boxes_of(msg) for _, msg in decoded] == [boxes_of(msg) for msg in detections]


def write_image_transport_bag(path: Path) -> Path:
    """Three cameras as image_transport's compressed topics: /camera/<name>/compressed, all ending in the same word."""
    rng = np.random.default_rng(5)
    with BagWriter(path) as bag:
        for t in range(4):
            for i, camera in enumerate(["front", "left", "right"]):
                bag.add_image(
                    f"/camera/{camera}/compressed",
                    START_NS + t * 100 * MS + i * MS,
                    f"{camera}_optical",
                    rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
                    compressed=True,
                )
    return path


def test_image_transport_topics_name_their_cameras_or_take_the_names_given(tmp_path, tiny_model_dir, capsys):
    bag = write_image_transport_bag(tmp_path / "bag")
    base = [
        "replay",
        str(bag),
        "--model",
        str(tiny_model_dir),
        "--frames",
        "2",
        "--stride",
        "2",
        "--max-new-tokens",
        "4",
    ]
    assert (
        cli_main([*base, "--out", str(tmp_path / "derived.jsonl"), "--out-bag", str(tmp_path / "derived")])
        == 0
    )
    assert [r["cameras"] for r in read_reports(tmp_path / "derived.jsonl")] == [
        ["front", "left", "right"]
    ] * 2
    with AnyReader([tmp_path / "derived"]) as reader:
        frames = {
            reader.deserialize(d, c.msgtype).header.frame_id
            for c, _, d in reader.messages()
            if c.topic == "/vts_drive/risk_detections"
        }
    assert frames <= {"front_optical", "left_optical", "right_optical"} and frames

    named = ["--topics", "ahead=/camera/front/compressed", "/camera/left/compressed"]
    assert cli_main([*base, "--out", str(tmp_path / "named.jsonl"), *named]) == 0
    assert [r["cameras"] for r in read_reports(tmp_path / "named.jsonl")] == [["ahead", "left"]] * 2
    capsys.readouterr()
    clash = ["--topics", "left=/camera/front/compressed", "/camera/left/compressed"]
    assert cli_main([*base, "--out", str(tmp_path / "clash.jsonl"), *clash]) == 2
    assert (
        "--topics: /camera/front/compressed, /camera/left/compressed are all camera 'left'"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "clash.jsonl").exists()


def test_rate_paces_messages_by_their_log_times(monkeypatch):
    """The clock is frozen, so each wait is exactly the message's due time at the given rate."""
    from vts_drive.ros import replay as replay_module

    sleeps = []
    monkeypatch.setattr(replay_module.time, "monotonic", lambda: 50.0)
    monkeypatch.setattr(replay_module.time, "sleep", sleeps.append)
    pace = replay_module._Pace(rate=2.0)
    for log_time in (START_NS, START_NS + 100 * MS, START_NS + 300 * MS):
        pace.wait(log_time)
    assert sleeps == pytest.approx([0.0, 0.05, 0.15])
    replay_module._Pace(rate=None).wait(START_NS)
    assert len(sleeps) == 3
