"""The DDS types speak the ROS 2 wire format: names, field layout and CDR bytes equal rosbags' (rosbag2's) own."""

import dataclasses
import typing

import numpy as np
import pytest
from cyclonedds.idl import IdlStruct

from vts_drive.ros import msgs
from vts_drive.ros.diagnostics import ERROR, OK, STALE, Status, to_diagnostic_array
from vts_drive.ros.typestore import TYPESTORE, header

RGB = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
STAMP_NS = 1_700_000_000_123_456_789
DDS_TYPES = [
    msgs.Time_,
    msgs.Header_,
    msgs.Image_,
    msgs.CompressedImage_,
    msgs.String_,
    msgs.KeyValue_,
    msgs.DiagnosticStatus_,
    msgs.DiagnosticArray_,
    msgs.Point_,
    msgs.Quaternion_,
    msgs.Pose_,
    msgs.PoseWithCovariance_,
    msgs.Point2D_,
    msgs.Pose2D_,
    msgs.BoundingBox2D_,
    msgs.ObjectHypothesis_,
    msgs.ObjectHypothesisWithPose_,
    msgs.Detection2D_,
    msgs.Detection2DArray_,
]


@pytest.mark.parametrize("dds_type", DDS_TYPES, ids=lambda t: t.__name__)
def test_type_names_and_fields_follow_the_msg_definitions(dds_type):
    typename = dds_type.__idl_typename__
    assert typename.split("::")[1:3] == ["msg", "dds_"] and typename.endswith("_")
    _, ros_fields = TYPESTORE.fielddefs[msgs.ros_type_name(dds_type)]
    hints = typing.get_type_hints(dds_type)
    assert [name for name, _ in ros_fields] == [f.name for f in dataclasses.fields(dds_type)]
    for name, (kind, detail) in ros_fields:
        if kind.name == "NAME":  # a nested message: its DDS struct
            assert issubclass(hints[name], IdlStruct) and msgs.ros_type_name(hints[name]) == detail


def rosbags_cdr(msgtype: str, **fields) -> bytes:
    return bytes(TYPESTORE.serialize_cdr(TYPESTORE.types[msgtype](**fields), msgtype))


def test_image_bytes_equal_rosbag2s():
    dds = msgs.image_message(STAMP_NS, "front", RGB)
    reference = rosbags_cdr(
        "sensor_msgs/msg/Image",
        header=header(STAMP_NS, "front"),
        height=5,
        width=7,
        encoding="rgb8",
        is_bigendian=0,
        step=21,
        data=RGB.reshape(-1),
    )
    assert dds.serialize() == reference
    # cyclonedds' own encoder of the declared IDL layout agrees too (it is what the type info describes)
    assert msgs.Image_.__idl__.serialize(dataclasses.replace(dds, data=list(dds.data))) == reference
    back = msgs.Image_.deserialize(reference)
    assert back.header == msgs.header(STAMP_NS, "front") and np.array_equal(
        np.asarray(back.data), RGB.reshape(-1)
    )


def test_compressed_image_bytes_equal_rosbag2s():
    dds = msgs.compressed_image_message(STAMP_NS, "front_left", RGB)
    reference = rosbags_cdr(
        "sensor_msgs/msg/CompressedImage",
        header=header(STAMP_NS, "front_left"),
        format=dds.format,
        data=np.frombuffer(dds.data, np.uint8),
    )
    assert dds.serialize() == reference
    assert msgs.CompressedImage_.__idl__.serialize(dataclasses.replace(dds, data=list(dds.data))) == reference


@pytest.mark.parametrize("text", ["", "hello", "ünïcödé ✓", "x" * 1001])
def test_string_bytes_equal_rosbag2s(text):
    assert msgs.String_(data=text).serialize() == rosbags_cdr("std_msgs/msg/String", data=text)
    assert msgs.String_.deserialize(rosbags_cdr("std_msgs/msg/String", data=text)).data == text


STATUSES = [
    Status(
        "vts_drive: pipeline",
        OK,
        "mode dense",
        {"windows_described": "3", "latency_ms.total": "12.5"},
        "vts_drive",
    ),
    Status("vts_drive: camera front_left", STALE, "no frame for 2.00 s", {}, "front_left"),
    Status("vts_drive: x", ERROR, "", {"k": "v"}),
]


def test_diagnostic_array_bytes_equal_rosbag2s():
    """One conversion fills both bindings; the two encode to the same bytes."""
    rosbags_types = type(
        "RosbagsTypes",
        (),
        {
            "Time": TYPESTORE.types["builtin_interfaces/msg/Time"],
            "Header": TYPESTORE.types["std_msgs/msg/Header"],
            "KeyValue": TYPESTORE.types["diagnostic_msgs/msg/KeyValue"],
            "DiagnosticStatus": TYPESTORE.types["diagnostic_msgs/msg/DiagnosticStatus"],
            "DiagnosticArray": TYPESTORE.types["diagnostic_msgs/msg/DiagnosticArray"],
            "level": staticmethod(int),
        },
    )
    reference = to_diagnostic_array(STATUSES, STAMP_NS, rosbags_types)
    dds = to_diagnostic_array(STATUSES, STAMP_NS, msgs.DDS_DIAGNOSTIC_TYPES)
    assert dds.serialize() == bytes(TYPESTORE.serialize_cdr(reference, "diagnostic_msgs/msg/DiagnosticArray"))
    back = msgs.DiagnosticArray_.deserialize(dds.serialize())
    assert [(s.name, s.level) for s in back.status] == [(s.name, s.level) for s in STATUSES]
    assert [(kv.key, kv.value) for kv in back.status[0].values] == list(STATUSES[0].values.items())
    assert (back.header.stamp.sec, back.header.stamp.nanosec) == divmod(STAMP_NS, 1_000_000_000)


def test_ros_topics_map_to_dds_topics():
    assert msgs.dds_topic("/vts_drive/risk_qa") == "rt/vts_drive/risk_qa"
