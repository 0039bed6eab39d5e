"""synthdrive scenes as benchmark windows: each window carries the truth of the frame it ends on.

Windows slide through each scene at a stride, so consecutive windows of a scene
overlap the way a live stream's do (and the frame cache sees realistic reuse).
"""

from __future__ import annotations

from pathlib import Path

from vts_drive.bench import BenchWindow, WindowTruth
from vts_drive.errors import InputError
from vts_drive.synth.dataset import SynthDataset, SynthScene
from vts_drive.synth.truth import question_kind


def window_ends(scene_frames: int, frames: int, stride: int) -> list[int]:
    """End frames of the windows of one scene, the last frame always included."""
    if frames > scene_frames:
        raise InputError(f"windows of {frames} frames do not fit scenes of {scene_frames} frames")
    ends = list(range(scene_frames - 1, frames - 2, -max(stride, 1)))
    return sorted(ends)


def scene_window(scene: SynthScene, end: int, frames: int, cameras: list[str]) -> BenchWindow:
    truth, qa = scene.truth[end], scene.qa(end, frames)
    return BenchWindow(
        window=scene.window(end, frames, cameras),
        questions=[question for question, _, _ in qa],
        truth=WindowTruth(
            answers=[answer for _, answer, _ in qa],
            risk_bbox=truth.risk_box,
            risk_caption=truth.risk_caption,
            risk_object=truth.risk_object,
            kinds=[question_kind(question) for question, _, _ in qa],
        ),
    )


def synth_bench_windows(
    data: Path, cameras: list[str], frames: int, stride: int, limit: int
) -> list[BenchWindow]:
    """Up to `limit` windows, scene after scene, each scene's windows `stride` frames apart."""
    dataset = SynthDataset(data)
    dataset.check_cameras(cameras)
    windows: list[BenchWindow] = []
    for index in range(len(dataset)):
        scene = dataset.scene(index)
        for end in window_ends(scene.frames, frames, stride):
            if len(windows) == limit:
                return windows
            windows.append(scene_window(scene, end, frames, cameras))
    return windows
