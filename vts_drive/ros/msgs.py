"""The ROS 2 message types the node speaks, as Cyclone DDS IDL structs.

ROS 2 maps a message `pkg/msg/Name` to the DDS type `pkg::msg::dds_::Name_`
and a topic `/a/b` to the DDS topic `rt/a/b`; samples are plain CDR. Field
order and types follow the .msg definitions (sensor_msgs, std_msgs,
diagnostic_msgs, builtin_interfaces, geometry_msgs, vision_msgs 4.x), so the
bytes match what rclpy and rosbag2 produce.

cyclonedds would turn every byte of an image into a Python int, so the two
image types encode and decode through rosbags' CDR codec instead (numpy
arrays, the same bytes); their `data` is bytes or a uint8 array.

No `from __future__ import annotations` here: cyclonedds reads the field
annotations as objects.
"""

import dataclasses
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
from cyclonedds.idl import IdlStruct, types

from vts_drive.ros import typestore
from vts_drive.ros.detections import message_types
from vts_drive.ros.images import rgb_to_image_fields, rgb_to_jpeg


@dataclass
class Time_(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: types.int32 = 0
    nanosec: types.uint32 = 0


@dataclass
class Header_(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time_ = field(default_factory=Time_)
    frame_id: str = ""


def _rosbags_serialize(self, buffer=None, endianness=None, use_version_2=None) -> bytes:
    """IdlStruct.serialize through rosbags, for a struct with `ros_type`, a header and uint8[] data."""
    values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    values["header"] = typestore.header(typestore.stamp_to_ns(self.header.stamp), self.header.frame_id)
    values["data"] = (
        np.frombuffer(self.data, np.uint8)
        if isinstance(self.data, bytes)
        else np.asarray(self.data, np.uint8)
    )
    return bytes(
        typestore.TYPESTORE.serialize_cdr(typestore.TYPESTORE.types[self.ros_type](**values), self.ros_type)
    )


def _rosbags_deserialize(cls, data: bytes, has_header: bool = True, use_version_2=None):
    """IdlStruct.deserialize through rosbags; `data` comes back as a uint8 array."""
    msg = typestore.TYPESTORE.deserialize_cdr(data, cls.ros_type)
    values = {f.name: getattr(msg, f.name) for f in dataclasses.fields(cls)}
    values["header"] = header(typestore.stamp_to_ns(msg.header.stamp), msg.header.frame_id)
    return cls(**values)


@dataclass
class Image_(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    header: Header_ = field(default_factory=Header_)
    height: types.uint32 = 0
    width: types.uint32 = 0
    encoding: str = ""
    is_bigendian: types.uint8 = 0
    step: types.uint32 = 0
    data: types.sequence[types.uint8] = b""

    ros_type = "sensor_msgs/msg/Image"
    serialize = _rosbags_serialize
    deserialize = classmethod(_rosbags_deserialize)


@dataclass
class CompressedImage_(IdlStruct, typename="sensor_msgs::msg::dds_::CompressedImage_"):
    header: Header_ = field(default_factory=Header_)
    format: str = ""
    data: types.sequence[types.uint8] = b""

    ros_type = "sensor_msgs/msg/CompressedImage"
    serialize = _rosbags_serialize
    deserialize = classmethod(_rosbags_deserialize)


@dataclass
class String_(IdlStruct, typename="std_msgs::msg::dds_::String_"):
    data: str = ""


@dataclass
class KeyValue_(IdlStruct, typename="diagnostic_msgs::msg::dds_::KeyValue_"):
    key: str = ""
    value: str = ""


@dataclass
class DiagnosticStatus_(IdlStruct, typename="diagnostic_msgs::msg::dds_::DiagnosticStatus_"):
    level: types.byte = 0
    name: str = ""
    message: str = ""
    hardware_id: str = ""
    values: types.sequence[KeyValue_] = field(default_factory=list)


@dataclass
class DiagnosticArray_(IdlStruct, typename="diagnostic_msgs::msg::dds_::DiagnosticArray_"):
    header: Header_ = field(default_factory=Header_)
    status: types.sequence[DiagnosticStatus_] = field(default_factory=list)


# The constructors vts_drive.ros.diagnostics fills, as every binding names them.
DDS_DIAGNOSTIC_TYPES = SimpleNamespace(
    Time=Time_,
    Header=Header_,
    KeyValue=KeyValue_,
    DiagnosticStatus=DiagnosticStatus_,
    DiagnosticArray=DiagnosticArray_,
    level=int,
)


@dataclass
class Point_(IdlStruct, typename="geometry_msgs::msg::dds_::Point_"):
    x: types.float64 = 0.0
    y: types.float64 = 0.0
    z: types.float64 = 0.0


@dataclass
class Quaternion_(IdlStruct, typename="geometry_msgs::msg::dds_::Quaternion_"):
    x: types.float64 = 0.0
    y: types.float64 = 0.0
    z: types.float64 = 0.0
    w: types.float64 = 1.0


@dataclass
class Pose_(IdlStruct, typename="geometry_msgs::msg::dds_::Pose_"):
    position: Point_ = field(default_factory=Point_)
    orientation: Quaternion_ = field(default_factory=Quaternion_)


@dataclass
class PoseWithCovariance_(IdlStruct, typename="geometry_msgs::msg::dds_::PoseWithCovariance_"):
    pose: Pose_ = field(default_factory=Pose_)
    covariance: types.array[types.float64, 36] = field(default_factory=lambda: [0.0] * 36)


@dataclass
class Point2D_(IdlStruct, typename="vision_msgs::msg::dds_::Point2D_"):
    x: types.float64 = 0.0
    y: types.float64 = 0.0


@dataclass
class Pose2D_(IdlStruct, typename="vision_msgs::msg::dds_::Pose2D_"):
    position: Point2D_ = field(default_factory=Point2D_)
    theta: types.float64 = 0.0


@dataclass
class BoundingBox2D_(IdlStruct, typename="vision_msgs::msg::dds_::BoundingBox2D_"):
    center: Pose2D_ = field(default_factory=Pose2D_)
    size_x: types.float64 = 0.0
    size_y: types.float64 = 0.0


@dataclass
class ObjectHypothesis_(IdlStruct, typename="vision_msgs::msg::dds_::ObjectHypothesis_"):
    class_id: str = ""
    score: types.float64 = 0.0


@dataclass
class ObjectHypothesisWithPose_(IdlStruct, typename="vision_msgs::msg::dds_::ObjectHypothesisWithPose_"):
    hypothesis: ObjectHypothesis_ = field(default_factory=ObjectHypothesis_)
    pose: PoseWithCovariance_ = field(default_factory=PoseWithCovariance_)


@dataclass
class Detection2D_(IdlStruct, typename="vision_msgs::msg::dds_::Detection2D_"):
    header: Header_ = field(default_factory=Header_)
    results: types.sequence[ObjectHypothesisWithPose_] = field(default_factory=list)
    bbox: BoundingBox2D_ = field(default_factory=BoundingBox2D_)
    id: str = ""


@dataclass
class Detection2DArray_(IdlStruct, typename="vision_msgs::msg::dds_::Detection2DArray_"):
    header: Header_ = field(default_factory=Header_)
    detections: types.sequence[Detection2D_] = field(default_factory=list)


def ros_type_name(dds_type: type) -> str:
    """sensor_msgs::msg::dds_::Image_ -> sensor_msgs/msg/Image"""
    package, _, _, name = dds_type.__idl_typename__.split("::")
    return f"{package}/msg/{name.removesuffix('_')}"


# The constructors vts_drive.ros.detections fills, by ROS type name.
DDS_DETECTION_TYPES = message_types(
    {
        ros_type_name(struct): struct
        for struct in (
            Time_,
            Header_,
            Point_,
            Quaternion_,
            Pose_,
            PoseWithCovariance_,
            Point2D_,
            Pose2D_,
            BoundingBox2D_,
            ObjectHypothesis_,
            ObjectHypothesisWithPose_,
            Detection2D_,
            Detection2DArray_,
        )
    }.__getitem__
)


def dds_topic(ros_topic: str) -> str:
    """The DDS topic name ROS 2 uses for a fully qualified ROS topic."""
    return "rt" + ros_topic


def header(stamp_ns: int, frame_id: str) -> Header_:
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return Header_(stamp=Time_(sec=sec, nanosec=nanosec), frame_id=frame_id)


def image_message(stamp_ns: int, frame_id: str, rgb: np.ndarray) -> Image_:
    """An rgb8 Image of an RGB uint8 array [H, W, 3]."""
    fields = rgb_to_image_fields(rgb)
    fields["data"] = fields["data"].tobytes()
    return Image_(header=header(stamp_ns, frame_id), **fields)


def compressed_image_message(stamp_ns: int, frame_id: str, rgb: np.ndarray) -> CompressedImage_:
    """A jpeg CompressedImage of an RGB uint8 array [H, W, 3]."""
    return CompressedImage_(
        header=header(stamp_ns, frame_id), format="rgb8; jpeg compressed bgr8", data=rgb_to_jpeg(rgb)
    )
