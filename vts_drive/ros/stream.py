"""Camera frames in, FrameWindows out: synchronisation, stale cameras, windows of T at a stride.

The node (any transport) and bag replay both feed frames through this one
class. Time comes from the caller (`now_ns`): the receive clock in the node,
the bag's log time in replay, so staleness means the same thing in both.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from vts_drive.errors import InputError
from vts_drive.ros.sync import MAX_JUMP_S, ApproximateSync, Frame
from vts_drive.window import FrameWindow

STALE_POLICIES = ("continue", "wait")


@dataclass
class StreamConfig:
    cameras: list[str]
    frames: int = 4  # T: frames per camera per window
    stride: int = 2  # synchronised sets between window starts
    slop_s: float = 0.05  # largest stamp spread within one synchronised set
    max_stamp_jump_s: float = MAX_JUMP_S  # a camera whose stamp jumps further, forward or back, starts afresh
    stale_after_s: float = 1.0  # a camera silent this long is stale
    on_stale: str = "continue"  # continue: windows of the other cameras; wait: no windows until it is back
    queue_size: int = 16  # frames queued per camera while waiting for the others

    def check(self) -> None:
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise InputError(f"cameras must be distinct and at least one, got {self.cameras}")
        if self.frames < 1 or self.stride < 1:
            raise InputError(
                f"frames per window ({self.frames}) and window stride ({self.stride}) must be at least 1"
            )
        if self.slop_s < 0 or self.stale_after_s <= 0:
            raise InputError(
                f"sync slop ({self.slop_s} s) must be >= 0 and stale timeout ({self.stale_after_s} s) > 0"
            )
        if self.max_stamp_jump_s <= 0:
            raise InputError(
                f"max_stamp_jump_s: the largest stamp jump must be > 0 s, got {self.max_stamp_jump_s}"
            )
        if self.on_stale not in STALE_POLICIES:
            raise InputError(
                f"stale camera policy {self.on_stale!r}: expected one of {', '.join(STALE_POLICIES)}"
            )
        if self.queue_size < 1:
            raise InputError(f"camera queue size must be at least 1, got {self.queue_size}")


class FrameStream:
    """Frames of the configured cameras in, windows out; not thread-safe (the node holds a lock)."""

    def __init__(self, config: StreamConfig, start_ns: int | None = None) -> None:
        """start_ns: when listening began (cameras never seen are stale counted from it);
        None: from the first frame."""
        config.check()
        self.config = config
        self.sync = ApproximateSync(
            config.cameras,
            round(config.slop_s * 1e9),
            config.queue_size,
            round(config.max_stamp_jump_s * 1e9),
        )
        self.received: Counter[str] = Counter()  # camera -> frames handed in
        self.last_seen_ns: dict[str, int] = {}  # camera -> now_ns of its newest frame
        self.last_stamp_ns: dict[str, int] = {}  # camera -> stamp of its newest frame
        self._start_ns = start_ns
        self._history: deque[dict[str, Frame]] = deque(maxlen=config.frames)
        self._since_window: int | None = None  # sets since the last window; None: none since (re)start

    def add(self, camera: str, stamp_ns: int, image: np.ndarray, now_ns: int) -> list[FrameWindow]:
        """One camera frame; returns the windows it completes."""
        if camera not in self.sync.cameras:
            raise InputError(f"camera {camera!r} is not one of {self.sync.cameras}")
        if self._start_ns is None:
            self._start_ns = now_ns
        self.received[camera] += 1
        self.last_seen_ns[camera] = now_ns
        self.last_stamp_ns[camera] = stamp_ns
        sets = []
        if self.config.on_stale == "continue":
            live = [c for c in self.sync.cameras if c not in self.stale_cameras(now_ns)]
            if live != self.sync.required:
                sets += self.sync.set_required(live)
        sets += self.sync.add(camera, stamp_ns, image)
        return [window for frames in sets if (window := self._push(frames)) is not None]

    def stale_cameras(self, now_ns: int) -> list[str]:
        """Cameras silent for longer than stale_after_s (one never seen: since start_ns or the first frame)."""
        if self._start_ns is None:
            return []
        limit = round(self.config.stale_after_s * 1e9)
        return [c for c in self.sync.cameras if now_ns - self.last_seen_ns.get(c, self._start_ns) > limit]

    def _push(self, frames: dict[str, Frame]) -> FrameWindow | None:
        """Append a synchronised set; a change of cameras or a stamp jump starts the windows afresh
        (no window mixes cameras or clocks)."""
        if self._history and (
            list(self._history[-1]) != list(frames) or self._jumped(self._history[-1], frames)
        ):
            self._history.clear()
            self._since_window = None
        self._history.append(frames)
        if self._since_window is not None:
            self._since_window += 1
        if len(self._history) < self.config.frames:
            return None
        if self._since_window is not None and self._since_window < self.config.stride:
            return None
        self._since_window = 0
        cameras = list(frames)
        return FrameWindow(
            cameras=cameras,
            images=[[s[c][1] for s in self._history] for c in cameras],
            stamps_ns=[[s[c][0] for s in self._history] for c in cameras],
        )

    def _jumped(self, previous: dict[str, Frame], frames: dict[str, Frame]) -> bool:
        """Whether the set's stamps are not after the previous set's, or too far after them to share a window."""
        step_ns = max(stamp for stamp, _ in frames.values()) - max(stamp for stamp, _ in previous.values())
        return not 0 < step_ns <= self.config.max_stamp_jump_s * 1e9
