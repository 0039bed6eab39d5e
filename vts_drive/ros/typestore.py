"""The ROS 2 message definitions every bag and conversion here uses (Humble, unchanged since)."""
from __future__ import annotations

from rosbags.typesys import Stores, get_typestore

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)


def header(stamp_ns: int, frame_id: str) -> object:
    """A std_msgs/Header stamped stamp_ns."""
    Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return TYPESTORE.types["std_msgs/msg/Header"](stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def stamp_to_ns(stamp: object) -> int:
    """Nanoseconds of a builtin_interfaces/Time from any binding (rosbags, DDS, rclpy)."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec
