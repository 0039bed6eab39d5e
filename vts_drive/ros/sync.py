"""Approximate-time synchronisation of camera frames by stamp.

Each camera's frames queue in stamp order. Whenever every required camera has
a frame queued, the queue heads are compared: if they lie within `slop` of
each other they form a set; otherwise the oldest head can never match (every
other camera has moved past it by more than slop) and is dropped. This is
message_filters' ApproximateTime idea reduced to its greedy core, which is
enough for cameras running at the same rate.

A camera whose stamp jumps from its newest one by more than `max_jump_ns`,
forward or back (a frame from a clock a day ahead, a clock reset to 0, a bag
played in a loop), is reset: its queue is dropped and its stamps start again
from the new one. Without that, one frame stamped in the future would make
every later frame of its camera out of order forever.
"""

from __future__ import annotations

import logging
from collections import Counter, deque

import numpy as np

Frame = tuple[int, np.ndarray]  # (stamp_ns, RGB uint8 [H, W, 3])

DROP_REASONS = ("out_of_order", "duplicate", "unmatched", "overflow", "stamp_jump")
MAX_JUMP_S = 5.0  # default bound on a stamp jump; well above any camera's frame interval

log = logging.getLogger("vts_drive.sync")


class ApproximateSync:
    """Frames in (any camera, any order), synchronised sets {camera: frame} out."""

    def __init__(
        self,
        cameras: list[str],
        slop_ns: int,
        queue_size: int = 16,
        max_jump_ns: int = round(MAX_JUMP_S * 1e9),
    ) -> None:
        self.cameras = list(cameras)
        self.slop_ns = slop_ns
        self.max_jump_ns = max_jump_ns
        self.queue_size = queue_size
        self.required = list(cameras)
        self.dropped: dict[str, Counter[str]] = {
            camera: Counter() for camera in cameras
        }  # camera -> reason -> frames
        self.jumps: Counter[str] = Counter()  # camera -> resets for a stamp jump
        self.last_jump: dict[
            str, tuple[int, int]
        ] = {}  # camera -> (stamp before, stamp after) of its latest jump
        self._queues: dict[str, deque[Frame]] = {camera: deque() for camera in cameras}
        self._newest: dict[str, int] = {}  # camera -> newest stamp accepted

    def add(self, camera: str, stamp_ns: int, image: np.ndarray) -> list[dict[str, Frame]]:
        """Queue one frame; returns the sets it completes (usually none or one)."""
        newest = self._newest.get(camera)
        if newest is not None and abs(stamp_ns - newest) > self.max_jump_ns:
            self._reset(camera, newest, stamp_ns)
        elif newest is not None and stamp_ns <= newest:
            self.dropped[camera]["duplicate" if stamp_ns == newest else "out_of_order"] += 1
            return []
        self._newest[camera] = stamp_ns
        queue = self._queues[camera]
        queue.append((stamp_ns, image))
        if len(queue) > self.queue_size:
            queue.popleft()
            self.dropped[camera]["overflow"] += 1
        return self._match()

    def _reset(self, camera: str, newest_ns: int, stamp_ns: int) -> None:
        """Start the camera afresh at stamp_ns: its queued frames belong to the clock it left."""
        self.dropped[camera]["stamp_jump"] += len(self._queues[camera])
        self._queues[camera].clear()
        self.jumps[camera] += 1
        self.last_jump[camera] = (newest_ns, stamp_ns)
        log.warning(
            "camera %s: stamp jumped from %.3f s to %.3f s; its frames start again from there",
            camera,
            newest_ns / 1e9,
            stamp_ns / 1e9,
        )

    def set_required(self, cameras: list[str]) -> list[dict[str, Frame]]:
        """Sync only these cameras from now on; frames queued for the others are dropped."""
        self.required = [camera for camera in self.cameras if camera in cameras]
        for camera in self.cameras:
            if camera not in self.required:
                self.dropped[camera]["unmatched"] += len(self._queues[camera])
                self._queues[camera].clear()
        return self._match()

    def _match(self) -> list[dict[str, Frame]]:
        sets = []
        while self.required and all(self._queues[camera] for camera in self.required):
            heads = {camera: self._queues[camera][0][0] for camera in self.required}
            oldest = min(heads, key=lambda camera: heads[camera])
            if max(heads.values()) - heads[oldest] <= self.slop_ns:
                sets.append({camera: self._queues[camera].popleft() for camera in self.required})
            else:
                self._queues[oldest].popleft()
                self.dropped[oldest]["unmatched"] += 1
        return sets
