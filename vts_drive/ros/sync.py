"""Approximate-time synchronisation of camera frames by stamp.

Each camera's frames queue in stamp order. Whenever every required camera has
a frame queued, the queue heads are compared: if they lie within `slop` of
each other they form a set; otherwise the oldest head can never match (every
other camera has moved past it by more than slop) and is dropped. This is
message_filters' ApproximateTime idea reduced to its greedy core, which is
enough for cameras running at the same rate.
"""
from __future__ import annotations

from collections import Counter, deque

import numpy as np

Frame = tuple[int, np.ndarray]  # (stamp_ns, RGB uint8 [H, W, 3])

DROP_REASONS = ("out_of_order", "duplicate", "unmatched", "overflow")


class ApproximateSync:
    """Frames in (any camera, any order), synchronised sets {camera: frame} out."""

    def __init__(self, cameras: list[str], slop_ns: int, queue_size: int = 16) -> None:
        self.cameras = list(cameras)
        self.slop_ns = slop_ns
        self.queue_size = queue_size
        self.required = list(cameras)
        self.dropped = {camera: Counter() for camera in cameras}  # camera -> reason -> frames
        self._queues: dict[str, deque[Frame]] = {camera: deque() for camera in cameras}
        self._newest: dict[str, int] = {}  # camera -> newest stamp accepted

    def add(self, camera: str, stamp_ns: int, image: np.ndarray) -> list[dict[str, Frame]]:
        """Queue one frame; returns the sets it completes (usually none or one)."""
        newest = self._newest.get(camera)
        if newest is not None and stamp_ns <= newest:
            self.dropped[camera]["duplicate" if stamp_ns == newest else "out_of_order"] += 1
            return []
        self._newest[camera] = stamp_ns
        queue = self._queues[camera]
        queue.append((stamp_ns, image))
        if len(queue) > self.queue_size:
            queue.popleft()
            self.dropped[camera]["overflow"] += 1
        return self._match()

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
            oldest = min(heads, key=heads.get)
            if max(heads.values()) - heads[oldest] <= self.slop_ns:
                sets.append({camera: self._queues[camera].popleft() for camera in self.required})
            else:
                self._queues[oldest].popleft()
                self.dropped[oldest]["unmatched"] += 1
        return sets
