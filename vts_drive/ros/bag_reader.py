"""Camera images from a rosbag2 bag (mcap or sqlite3), read with rosbags.

A missing or corrupt bag, or a requested topic the bag lacks, raises
InputError naming the bag and listing the topics it has. A folder holding
metadata.yaml is read as rosbag2 whatever its name (rosbags would take one
named *.bag for a ROS 1 bag file).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader as Rosbag2Reader
from rosbags.rosbag2 import ReaderError

from vts_drive.errors import InputError
from vts_drive.ros import RosMessage
from vts_drive.ros.typestore import TYPESTORE

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
BAG_ERRORS = (AnyReaderError, ReaderError, OSError, ValueError, KeyError, AssertionError)


class CameraBag:
    """One bag's image topics; `with CameraBag(path, topics) as bag: for topic, log_time_ns, msg in bag.messages(): ...`"""

    def __init__(self, path: str | Path, topics: list[str] | None = None) -> None:
        """topics: the camera topics to read; None: every Image and CompressedImage topic, by name."""
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"bag {self.path} does not exist")
        self.requested = topics
        self.topics: list[str] = []
        self._reader: AnyReader | None = None
        self._connections: list[Connection] = []

    def __enter__(self) -> CameraBag:
        try:
            self._reader = AnyReader([self.path], default_typestore=TYPESTORE)
            if not self._reader.is2 and (self.path / "metadata.yaml").is_file():  # named *.bag, yet rosbag2
                self._reader.is2, self._reader.readers = True, [Rosbag2Reader(self.path)]
            self._reader.open()
        except BAG_ERRORS as error:
            raise InputError(
                f"bag {self.path} cannot be read (not a rosbag2 bag, or corrupt): {error}"
            ) from None
        self._select_topics()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reader is not None and self._reader.stack is not None:
            self._reader.close()

    @property
    def reader(self) -> AnyReader:
        """The open bag's reader (the bag is opened by `with`)."""
        if self._reader is None:
            raise RuntimeError(f"bag {self.path} is not open: read it inside `with`")
        return self._reader

    def _select_topics(self) -> None:
        available = {c.topic: c.msgtype for c in self.reader.connections}
        listing = ", ".join(f"{topic} ({msgtype})" for topic, msgtype in sorted(available.items())) or "none"
        if self.requested is None:
            self.topics = sorted(topic for topic, msgtype in available.items() if msgtype in IMAGE_TYPES)
            if not self.topics:
                raise InputError(f"bag {self.path} has no Image or CompressedImage topics; it has: {listing}")
        else:
            missing = [topic for topic in self.requested if topic not in available]
            if missing:
                raise InputError(f"bag {self.path} has no topic {', '.join(missing)}; it has: {listing}")
            wrong = [
                f"{topic} ({available[topic]})"
                for topic in self.requested
                if available[topic] not in IMAGE_TYPES
            ]
            if wrong:
                raise InputError(
                    f"bag {self.path}: {', '.join(wrong)} are not camera images (Image or CompressedImage)"
                )
            self.topics = list(self.requested)
        self._connections = [c for c in self.reader.connections if c.topic in self.topics]

    @property
    def message_count(self) -> int:
        return sum(c.msgcount for c in self._connections)

    def raw_messages(self) -> Iterator[tuple[Connection, int, bytes]]:
        """(connection, log time ns, CDR bytes) of the camera topics, in log-time order."""
        try:
            yield from self.reader.messages(connections=self._connections)
        except BAG_ERRORS as error:
            raise InputError(f"bag {self.path} is corrupt: {error}") from None

    def messages(self) -> Iterator[tuple[str, int, RosMessage | InputError]]:
        """(topic, log time ns, message) in log-time order; a message that does not deserialize
        comes as an InputError in its place, for the caller to count and skip."""
        for connection, log_time_ns, data in self.raw_messages():
            yield connection.topic, log_time_ns, self.deserialize(connection, log_time_ns, data)

    def deserialize(self, connection: Connection, log_time_ns: int, data: bytes) -> RosMessage | InputError:
        """One message of raw_messages(), or an InputError naming it when it does not deserialize."""
        try:
            return self.reader.deserialize(data, connection.msgtype)
        except BAG_ERRORS as error:
            return InputError(f"bag {self.path} topic {connection.topic} at {log_time_ns} ns: {error}")
