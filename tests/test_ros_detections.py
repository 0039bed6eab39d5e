"""~/risk_detections and ~/overlay: a report's box in pixels of its camera's frame, as
vision_msgs/Detection2DArray in every binding, checked against CDR bytes written out by hand."""

import struct

import numpy as np
import pytest

from vts_drive.ros import msgs
from vts_drive.ros.detections import RiskDetection, message_types, risk_detection, to_detection_array
from vts_drive.ros.overlay import BOX_COLOUR, draw_overlay
from vts_drive.ros.typestore import TYPESTORE
from vts_drive.window import FrameWindow

ROSBAGS_TYPES = message_types(TYPESTORE.types.__getitem__)
STAMP_NS = 1_700_000_000_123_456_789
CAR = RiskDetection(
    camera="front",
    stamp_ns=STAMP_NS,
    frame_id="cam_front",
    width=192,
    height=128,
    present=True,
    object="car",
    caption="a car cuts in",
    box=(85.0, 30.0, 116.0, 50.5),
)


def window() -> FrameWindow:
    """front 64 x 48, front_left 32 x 16; two frames each, the newest 100 ms after the oldest."""
    sizes = {"front": (48, 64), "front_left": (16, 32)}
    images = [[np.zeros((*size, 3), np.uint8)] * 2 for size in sizes.values()]
    stamps = [[1000 + i, 100_001_000 + i] for i in range(len(sizes))]
    return FrameWindow(list(sizes), images, stamps)


def report(present=True, camera="front_left", bbox=(0.25, 0.5, 0.75, 1.0), object="pedestrian") -> dict:
    return {
        "risk": {
            "present": present,
            "object": object if present else None,
            "camera": camera if present else None,
            "bbox": list(bbox) if bbox else None,
            "caption": "crossing" if present else "",
            "raw": "...",
        }
    }


def test_the_box_is_placed_in_pixels_on_the_risk_cameras_newest_frame():
    detection = risk_detection(report(), window(), {"front": "cam_front", "front_left": "cam_front_left"})
    assert detection == RiskDetection(
        camera="front_left",
        stamp_ns=100_001_001,
        frame_id="cam_front_left",
        width=32,
        height=16,
        present=True,
        object="pedestrian",
        caption="crossing",
        box=(8.0, 8.0, 24.0, 16.0),
    )


@pytest.mark.parametrize(
    "risk, why",
    [
        (report(present=False), "no risk"),
        (report(bbox=None), "a risk without a well-formed box"),
        (report(camera="rear"), "a camera the window does not have"),
    ],
)
def test_without_a_box_on_a_window_camera_the_detection_has_no_box_and_sits_on_the_first_camera(risk, why):
    detection = risk_detection(risk, window(), {})
    assert detection.box is None, why
    expected_camera = "front_left" if risk["risk"]["camera"] == "front_left" else "front"
    assert (detection.camera, detection.frame_id) == (expected_camera, "")
    assert (
        to_detection_array(detection, msgs.DDS_DETECTION_TYPES).detections == []
    )  # an empty array clears a viewer


def handwritten_cdr() -> bytes:
    """CAR's Detection2DArray, written field by field from the CDR rules rather than by any serializer:
    encapsulation header 00 01 00 00 (CDR, little endian), then each field aligned to its own size
    (4 for int32/uint32 and string lengths, 8 for float64) counted from the end of the header;
    strings are a uint32 length that counts the NUL, the bytes, the NUL; sequences a uint32 count."""
    sec, nanosec = divmod(STAMP_NS, 1_000_000_000)
    header = struct.pack("<iiI", sec, nanosec, 10) + b"cam_front\0"  # 12 + 10 = 22 bytes
    body = b""
    body += header + b"\0\0"  # offset 22 -> 24
    body += struct.pack("<I", 1)  # detections: 1                                    -> 28
    body += header + b"\0\0"  # Detection2D.header                                  -> 52
    body += struct.pack("<I", 1)  # results: 1                                       -> 56
    body += struct.pack("<I", 4) + b"car\0"  # hypothesis.class_id                   -> 64
    body += struct.pack("<d", 0.0)  # hypothesis.score (64 is 8-aligned)              -> 72
    body += struct.pack("<3d", 0.0, 0.0, 0.0)  # pose.pose.position                  -> 96
    body += struct.pack("<4d", 0.0, 0.0, 0.0, 1.0)  # pose.pose.orientation          -> 128
    body += struct.pack("<36d", *[0.0] * 36)  # pose.covariance                       -> 416
    body += struct.pack("<3d", 100.5, 40.25, 0.0)  # bbox.center.position x, y; theta -> 440
    body += struct.pack("<2d", 31.0, 20.5)  # bbox.size_x, size_y                      -> 456
    body += struct.pack("<I", 1) + b"\0"  # id: ""                                     -> 461
    assert len(body) == 461
    return b"\x00\x01\x00\x00" + body


def test_dds_and_rosbag2_bytes_equal_the_handwritten_wire_layout():
    expected = handwritten_cdr()
    dds = to_detection_array(CAR, msgs.DDS_DETECTION_TYPES)
    assert dds.serialize() == expected
    assert (
        bytes(
            TYPESTORE.serialize_cdr(
                to_detection_array(CAR, ROSBAGS_TYPES), "vision_msgs/msg/Detection2DArray"
            )
        )
        == expected
    )
    back = msgs.Detection2DArray_.deserialize(expected)
    (detection,) = back.detections
    assert (back.header.frame_id, detection.results[0].hypothesis.class_id) == ("cam_front", "car")
    assert (detection.bbox.center.position.x, detection.bbox.size_y) == (100.5, 20.5)


def test_an_empty_array_has_the_handwritten_layout_too():
    expected = b"\x00\x01\x00\x00" + struct.pack("<iiI", 5, 0, 1) + b"\0" + b"\0\0\0" + struct.pack("<I", 0)
    empty = RiskDetection("front", 5_000_000_000, "", 8, 8, False, None, "", None)
    assert to_detection_array(empty, msgs.DDS_DETECTION_TYPES).serialize() == expected


def test_overlay_draws_box_and_caption_on_a_copy_of_the_same_size():
    frame = np.full((128, 192, 3), 200, np.uint8)
    drawn = draw_overlay(frame, CAR)
    assert drawn.shape == frame.shape and np.all(frame == 200)
    assert tuple(drawn[40, 85]) == BOX_COLOUR  # the box's left edge
    assert np.all(drawn[40, 95:105] == 200)  # its inside stays clear
    assert drawn[-3:].mean() < 120  # the caption band darkens the bottom rows
    no_risk = draw_overlay(frame, RiskDetection("front", 0, "", 192, 128, False, None, "", None))
    assert not np.any(np.all(no_risk == BOX_COLOUR, axis=-1)) and no_risk[-3:].mean() < 120


def test_a_long_caption_takes_at_most_a_third_of_the_frame():
    frame = np.full((96, 128, 3), 200, np.uint8)
    drawn = draw_overlay(frame, RiskDetection("front", 0, "", 128, 96, True, "car", "word " * 200, None))
    assert np.all(drawn[: 96 - 96 // 3 - 1] == 200)
