"""The unit of work: C cameras x T frames, synchronised by stamp."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vts_drive.errors import InputError


@dataclass
class FrameWindow:
    """Frames of several cameras over the same stretch of time.

    images[c][t] is an RGB uint8 array [H, W, 3] of camera `cameras[c]` at
    stamps_ns[c][t]. Cameras may differ in resolution; all cameras hold the
    same number of frames T, oldest first.
    """

    cameras: list[str]
    images: list[list[np.ndarray]]
    stamps_ns: list[list[int]]

    def __post_init__(self) -> None:
        if not self.cameras:
            raise InputError("window has no cameras")
        if len(self.images) != len(self.cameras) or len(self.stamps_ns) != len(self.cameras):
            raise InputError(
                f"window has {len(self.cameras)} camera names but {len(self.images)} image lists "
                f"and {len(self.stamps_ns)} stamp lists"
            )
        counts = {name: len(frames) for name, frames in zip(self.cameras, self.images)}
        if len(set(counts.values())) != 1 or 0 in counts.values():
            raise InputError(f"cameras must hold the same, non-zero number of frames, got {counts}")
        for name, frames, stamps in zip(self.cameras, self.images, self.stamps_ns):
            if len(stamps) != len(frames):
                raise InputError(f"camera {name!r}: {len(frames)} frames but {len(stamps)} stamps")
            for t, image in enumerate(frames):
                if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                    raise InputError(
                        f"camera {name!r} frame {t}: expected an RGB uint8 image [H, W, 3], "
                        f"got {image.dtype} {image.shape}"
                    )

    @property
    def num_frames(self) -> int:
        return len(self.images[0])

    @property
    def stamp_ns(self) -> int:
        """The window's stamp: its newest frame."""
        return max(stamps[-1] for stamps in self.stamps_ns)

    def newest_frames(self) -> FrameWindow:
        """The same cameras with their newest frame only."""
        return FrameWindow(
            list(self.cameras),
            [frames[-1:] for frames in self.images],
            [stamps[-1:] for stamps in self.stamps_ns],
        )

    def image_size(self, camera: str) -> tuple[int, int]:
        """(width, height) of a camera's images, the frame a normalised box refers to."""
        height, width = self.images[self.cameras.index(camera)][-1].shape[:2]
        return width, height
