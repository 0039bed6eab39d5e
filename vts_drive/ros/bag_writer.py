"""Write rosbag2 bags (mcap or sqlite3) of camera images, text and risk detections.

The same input always gives the same bytes: header stamps and log times both
come from the caller's stamp, and connections are created in the order topics
first appear. Bags use metadata version 8, the newest whose QoS field Humble's
rosbag2 still parses.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import numpy as np
from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer

from vts_drive.errors import InputError
from vts_drive.ros import RosMessage
from vts_drive.ros.detections import RiskDetection, message_types, to_detection_array
from vts_drive.ros.images import rgb_to_image_fields, rgb_to_jpeg
from vts_drive.ros.typestore import TYPESTORE, header

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"
DETECTION_ARRAY = "vision_msgs/msg/Detection2DArray"
DETECTION_TYPES = message_types(TYPESTORE.types.__getitem__)


class BagWriter:
    """A new rosbag2 bag, used as a context manager; topics are added as they are written."""

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        path = Path(path)
        if storage not in STORAGES:
            raise InputError(f"bag storage {storage!r}: expected one of {sorted(STORAGES)}")
        if path.exists():
            raise InputError(f"bag {path}: already exists; a bag is only written to a new path")
        self.path = path
        self._writer = Writer(path, version=8, storage_plugin=STORAGES[storage])
        self._connections: dict[str, Connection] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._writer.__exit__(exc_type, exc, tb)

    def add_image(
        self,
        topic: str,
        stamp_ns: int,
        frame_id: str,
        rgb: np.ndarray,
        compressed: bool = False,
        log_time_ns: int | None = None,
    ) -> None:
        """An RGB uint8 image [H, W, 3]: sensor_msgs/Image rgb8, or CompressedImage jpeg; logged at
        log_time_ns (None: its stamp)."""
        log_time_ns = stamp_ns if log_time_ns is None else log_time_ns
        if compressed:
            message = TYPESTORE.types[COMPRESSED_IMAGE](
                header=header(stamp_ns, frame_id),
                format="rgb8; jpeg compressed bgr8",
                data=np.frombuffer(rgb_to_jpeg(rgb), np.uint8),
            )
            self._write(topic, COMPRESSED_IMAGE, log_time_ns, message)
        else:
            message = TYPESTORE.types[IMAGE](header=header(stamp_ns, frame_id), **rgb_to_image_fields(rgb))
            self._write(topic, IMAGE, log_time_ns, message)

    def add_string(self, topic: str, stamp_ns: int, text: str) -> None:
        """A std_msgs/String logged at stamp_ns."""
        self._write(topic, STRING, stamp_ns, TYPESTORE.types[STRING](data=text))

    def add_detections(self, topic: str, log_time_ns: int, detection: RiskDetection) -> None:
        """A vision_msgs/Detection2DArray of the detection (stamped as its frame), logged at log_time_ns."""
        self._write(topic, DETECTION_ARRAY, log_time_ns, to_detection_array(detection, DETECTION_TYPES))

    def add_serialized(self, topic: str, msgtype: str, log_time_ns: int, data: bytes) -> None:
        """A message already in CDR (copied from another bag), logged at log_time_ns."""
        self._writer.write(self._connection(topic, msgtype), log_time_ns, data)

    def _write(self, topic: str, msgtype: str, log_time_ns: int, message: RosMessage) -> None:
        self._writer.write(
            self._connection(topic, msgtype), log_time_ns, TYPESTORE.serialize_cdr(message, msgtype)
        )

    def _connection(self, topic: str, msgtype: str) -> Connection:
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            self._connections[topic] = connection
        elif connection.msgtype != msgtype:
            raise InputError(f"bag topic {topic}: holds {connection.msgtype}, cannot add {msgtype}")
        return connection
