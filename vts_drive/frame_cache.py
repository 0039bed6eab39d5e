"""Per-frame results reused by every overlapping window of a stream.

Windows of a stream overlap (stride < T), so most of a window's frames were
already seen by the previous one. Each frame's keyframe probability and its
visual tokens are kept under (camera, stamp, content fingerprint) and reused;
after each window the cache keeps only that window's frames, so it never holds
more than one window. Keys are exact, so frames that arrive late or out of
order are simply looked up (or computed) by their own stamp, and two
recordings with the same stamps (two bags both starting at 0) never mix.

It also remembers each camera's newest frame and its results: the stream's real
previous frame for a later window's oldest frame, whatever the stride between
windows. The keyframe CNN scores that frame against it, and when the CNN sees no
change the frame takes its tokens instead of being encoded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from vts_drive.window import FrameWindow

FrameKey = tuple[str, int, bytes]  # (camera, stamp in ns, fingerprint)


def frame_key(camera: str, stamp_ns: int, image: np.ndarray) -> FrameKey:
    """A strided pixel sample is enough to tell frames apart and costs microseconds."""
    sample = np.ascontiguousarray(image[::16, ::16])
    fingerprint = hashlib.blake2b(sample.tobytes() + str(image.shape).encode(), digest_size=8).digest()
    return camera, stamp_ns, fingerprint


@dataclass
class FrameFeatures:
    tokens: torch.Tensor | None = None  # [N, D]; None until the frame is encoded
    saliency: torch.Tensor | None = None  # [N]
    keyframe_probability: float | None = None


class FrameCache:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.frames: dict[FrameKey, FrameFeatures] = {}
        self.hits = 0  # frames whose tokens were reused
        self.misses = 0  # frames encoded
        self.scored = 0  # frames the keyframe CNN ran on
        self.newest: dict[str, tuple[int, np.ndarray, FrameFeatures]] = {}  # camera -> its newest frame seen

    def get(self, key: FrameKey) -> FrameFeatures:
        """The entry for a frame, created empty if the frame is new."""
        entry = self.frames.get(key)
        if entry is None:
            entry = FrameFeatures()
            if self.enabled:
                self.frames[key] = entry
        return entry

    def count(self, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1

    def clear(self) -> None:
        """Forget everything: the next window starts a new stream."""
        self.frames.clear()
        self.newest.clear()

    def remember_newest(self, window: FrameWindow, entries: list[FrameFeatures]) -> None:
        """Keep each camera's newest frame of `window` (`entries`: its frames' results, camera-major)."""
        for c, (camera, stamps, images) in enumerate(zip(window.cameras, window.stamps_ns, window.images)):
            if camera not in self.newest or stamps[-1] > self.newest[camera][0]:
                self.newest[camera] = (stamps[-1], images[-1], entries[(c + 1) * window.num_frames - 1])

    def frame_before(self, camera: str, stamp_ns: int) -> tuple[np.ndarray, FrameFeatures] | None:
        """The camera's newest frame seen, (image, results), if it is older than `stamp_ns`: None
        when the stream starts here (nothing seen yet, or stamps went back, as when a new
        recording begins)."""
        seen = self.newest.get(camera)
        return seen[1:] if seen is not None and seen[0] < stamp_ns else None

    def keep_only(self, keys: set[FrameKey]) -> None:
        """Drop every frame outside the newest window."""
        for key in [k for k in self.frames if k not in keys]:
            del self.frames[key]
