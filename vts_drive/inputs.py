"""Camera frames from disk: one folder per camera, or one video file per camera.

Windows are read lazily, so a corrupt frame spoils only its own window: the
caller catches the InputError, counts the window as skipped, and goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vts_drive.errors import InputError
from vts_drive.image_bytes import check_pixel_count, decode_image
from vts_drive.window import FrameWindow

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def read_image(path: Path) -> np.ndarray:
    """An RGB uint8 image [H, W, 3], or InputError naming the file (too many pixels included)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {path} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"image {path} is empty (0 bytes)")
    return decode_image(np.fromfile(path, dtype=np.uint8), f"image {path}")


def camera_folders(root: Path) -> dict[str, list[Path]]:
    """root/<camera>/<frames sorted by file name> -> {camera: frame paths}."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist")
    cameras = {
        folder.name: sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for folder in sorted(root.iterdir())
        if folder.is_dir()
    }
    if not cameras:
        raise InputError(f"{root} has no camera subfolders (expected {root}/<camera>/<frames>)")
    empty = [name for name, frames in cameras.items() if not frames]
    if empty:
        raise InputError(f"camera folder(s) {', '.join(str(root / n) for n in empty)} hold no images")
    counts = {name: len(frames) for name, frames in cameras.items()}
    if len(set(counts.values())) != 1:
        raise InputError(f"camera folders in {root} hold different numbers of frames: {counts}")
    return cameras


def read_video(path: Path) -> list[np.ndarray]:
    """All frames of a video as RGB arrays, or InputError naming the file (frames with too many
    pixels included: the size the stream declares is checked before a frame is decoded)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"video {path} does not exist")
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        width, height = (
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        check_pixel_count(width, height, f"video {path}")
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise InputError(f"video {path} cannot be decoded (no frames read)")
    return frames


@dataclass
class PendingWindow:
    """A window that has not been read yet; `load()` reads and checks its frames."""

    index: int
    first_frame: int
    load: Callable[[], FrameWindow]


def sliding_starts(total: int, frames: int, stride: int) -> range:
    if frames < 1 or stride < 1:
        raise InputError(f"--frames and --stride must be positive, got {frames} and {stride}")
    if total < frames:
        raise InputError(f"need at least {frames} frames per camera for one window, found {total}")
    return range(0, total - frames + 1, stride)


def sliding_windows(
    names: list[str],
    read_frame: Callable[[str, int], np.ndarray],
    total: int,
    frames: int,
    stride: int,
    fps: float,
) -> Iterator[PendingWindow]:
    """Windows of `frames` frames every `stride` frames; frame i of a camera is stamped i / fps."""

    def loader(start: int) -> Callable[[], FrameWindow]:
        def load() -> FrameWindow:
            images = [[read_frame(name, start + t) for t in range(frames)] for name in names]
            stamps = [[round((start + t) / fps * 1e9) for t in range(frames)] for _ in names]
            return FrameWindow(names, images, stamps)

        return load

    for index, start in enumerate(sliding_starts(total, frames, stride)):
        yield PendingWindow(index, start, loader(start))


def windows_from_folders(root: Path, frames: int, stride: int, fps: float) -> Iterator[PendingWindow]:
    cameras = camera_folders(root)
    names = list(cameras)
    total = len(cameras[names[0]])
    return sliding_windows(names, lambda name, i: read_image(cameras[name][i]), total, frames, stride, fps)


def windows_from_videos(
    videos: dict[str, Path], frames: int, stride: int, fps: float
) -> Iterator[PendingWindow]:
    """Videos are decoded whole up front (seeking in compressed video is unreliable)."""
    decoded = {name: read_video(path) for name, path in videos.items()}
    total = min(len(v) for v in decoded.values())
    return sliding_windows(list(decoded), lambda name, i: decoded[name][i], total, frames, stride, fps)


def parse_video_args(items: list[str]) -> dict[str, Path]:
    """['front=a.mp4', 'front_left=b.mp4'] -> {camera: path}."""
    videos: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--video takes CAMERA=FILE, got {item!r}")
        if name in videos:
            raise InputError(f"camera {name!r} given twice in --video")
        videos[name] = Path(path)
    return videos
