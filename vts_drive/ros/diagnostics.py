"""Diagnostic statuses, and their diagnostic_msgs/DiagnosticArray in any message binding.

rclpy, the DDS types in msgs.py and rosbags all build messages from keyword
arguments with the .msg field names, so one function fills them all; only
the `byte` level differs (bytes of length 1 in rclpy, int elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vts_drive.ros import RosMessage

OK, WARN, ERROR, STALE = 0, 1, 2, 3


@dataclass
class Status:
    name: str
    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)
    hardware_id: str = ""


def to_diagnostic_array(statuses: list[Status], stamp_ns: int, types: Any) -> RosMessage:
    """A DiagnosticArray built with `types`: a namespace of Time, Header, KeyValue,
    DiagnosticStatus, DiagnosticArray constructors and `level` (int -> the binding's byte)."""
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return types.DiagnosticArray(
        header=types.Header(stamp=types.Time(sec=sec, nanosec=nanosec), frame_id=""),
        status=[
            types.DiagnosticStatus(
                level=types.level(status.level),
                name=status.name,
                message=status.message,
                hardware_id=status.hardware_id,
                values=[types.KeyValue(key=key, value=str(value)) for key, value in status.values.items()],
            )
            for status in statuses
        ],
    )
