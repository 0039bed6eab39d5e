"""The ROS 2 message definitions every bag and conversion here uses (Humble, unchanged since).

rosbags ships the core packages; vision_msgs is not among them, so its types the
node publishes are registered here from their .msg text (vision_msgs 4.x, the
ros2 branch: Humble and later, where BoundingBox2D's center is a
vision_msgs/Pose2D with a Point2D position).
"""

from __future__ import annotations

from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from vts_drive.ros import RosMessage

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)

VISION_MSGS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": "ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n",
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nObjectHypothesisWithPose[] results\nBoundingBox2D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nDetection2D[] detections\n",
}
for _name, _text in VISION_MSGS.items():
    TYPESTORE.register(get_types_from_msg(_text, _name))


def header(stamp_ns: int, frame_id: str) -> RosMessage:
    """A std_msgs/Header stamped stamp_ns."""
    Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return TYPESTORE.types["std_msgs/msg/Header"](stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def stamp_to_ns(stamp: RosMessage) -> int:
    """Nanoseconds of a builtin_interfaces/Time from any binding (rosbags, DDS, rclpy)."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec
