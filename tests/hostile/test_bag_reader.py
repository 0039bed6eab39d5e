"""Attacks on the bag reader: a rosbag2 folder under a ROS 1 name, a message whose bytes do not decode,
a broken frame that shares its stamp with the good one the replay uses (and draws its overlay on)."""

from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader

from vts_drive.errors import InputError
from vts_drive.ros.bag_reader import CameraBag
from vts_drive.ros.bag_writer import BagWriter
from vts_drive.ros.images import message_to_rgb
from vts_drive.ros.replay import replay
from vts_drive.ros.stream import StreamConfig
from vts_drive.ros.typestore import TYPESTORE, header, stamp_to_ns

MS = 1_000_000
RGB = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)


def write_bag(path: Path, frames: int = 3) -> Path:
    with BagWriter(path) as bag:
        for t in range(frames):
            bag.add_image("/cam_front/image_raw", t * 100 * MS, "front", RGB)
    return path


def test_a_rosbag2_folder_named_like_a_ros1_bag_is_read(tmp_path):
    bag = write_bag(tmp_path / "drive.bag")
    assert (bag / "metadata.yaml").is_file()
    with CameraBag(bag) as source:
        messages = list(source.messages())
    assert source.topics == ["/cam_front/image_raw"]
    assert [log_time for _, log_time, _ in messages] == [0, 100 * MS, 200 * MS]
    assert all(np.array_equal(message_to_rgb(msg), RGB) for _, _, msg in messages)


def test_an_image_whose_encoding_is_not_utf8_comes_as_an_input_error_in_its_place(tmp_path):
    good = write_bag(tmp_path / "good")
    broken = tmp_path / "broken"
    with CameraBag(good) as source, BagWriter(broken) as writer:
        for connection, log_time, data in source.raw_messages():
            if log_time == 100 * MS:
                data = bytes(data).replace(b"rgb8", b"rg\xff8", 1)
            writer.add_serialized(connection.topic, connection.msgtype, log_time, data)
    with CameraBag(broken) as source:
        messages = [msg for _, _, msg in source.messages()]
    assert isinstance(messages[1], InputError) and "topic /cam_front/image_raw at 100000000 ns" in str(
        messages[1]
    )
    assert [np.array_equal(message_to_rgb(msg), RGB) for msg in (messages[0], messages[2])] == [True, True]


def test_a_broken_frame_before_a_good_one_of_the_same_stamp_does_not_stop_the_results_bag(
    tmp_path, tiny_pipeline
):
    """Replay skips the broken frame and windows the good one; the results bag draws the overlay on the good one."""
    with BagWriter(tmp_path / "bag") as bag:
        bag.add_image("/cam_front/image_raw", 0, "front", RGB)
        broken = TYPESTORE.types["sensor_msgs/msg/Image"](
            header=header(100 * MS, "front"),
            height=6,
            width=8,
            encoding="rgb8",
            is_bigendian=0,
            step=24,
            data=RGB.reshape(-1)[:10],
        )
        bag.add_serialized(
            "/cam_front/image_raw",
            "sensor_msgs/msg/Image",
            100 * MS,
            bytes(TYPESTORE.serialize_cdr(broken, "sensor_msgs/msg/Image")),
        )  # deserializes, does not decode
        bag.add_image("/cam_front/image_raw", 100 * MS, "front", RGB)
    settings = StreamConfig(cameras=[], frames=2, stride=1)
    summary = replay(
        [tmp_path / "bag"], tiny_pipeline, tmp_path / "out.jsonl", settings, out_bag=tmp_path / "results"
    )
    assert (summary.described, summary.bad_images["/cam_front/image_raw"]) == (1, 1)
    with AnyReader([tmp_path / "results"]) as reader:
        overlays = [
            reader.deserialize(d, c.msgtype)
            for c, _, d in reader.messages()
            if c.topic == "/vts_drive/overlay"
        ]
    assert [stamp_to_ns(o.header.stamp) for o in overlays] == [100 * MS]
