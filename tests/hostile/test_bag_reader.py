"""Attacks on the bag reader: a rosbag2 folder under a ROS 1 name, a message whose bytes do not decode."""
from pathlib import Path

import numpy as np

from vts_drive.errors import InputError
from vts_drive.ros.bag_reader import CameraBag
from vts_drive.ros.bag_writer import BagWriter
from vts_drive.ros.images import message_to_rgb

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
    assert isinstance(messages[1], InputError) and "topic /cam_front/image_raw at 100000000 ns" in str(messages[1])
    assert [np.array_equal(message_to_rgb(msg), RGB) for msg in (messages[0], messages[2])] == [True, True]
