"""Read a synthdrive dataset's native form (D/synth) back: scenes, frames, label maps, truth."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from vts_drive.errors import InputError
from vts_drive.inputs import read_image
from vts_drive.synth.generate import EPOCH_NS, FORMAT_VERSION
from vts_drive.synth.scene import Scene
from vts_drive.synth.truth import FrameTruth, window_qa
from vts_drive.window import FrameWindow


class SynthScene:
    def __init__(self, folder: Path, fps: float) -> None:
        self.folder = folder
        self.fps = fps
        path = folder / "scene.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"{path} is missing or not valid JSON: {error}") from None
        self.scene = Scene.from_dict(record["scene"])
        self.truth = [FrameTruth(**{**t, "qa": [tuple(q) for q in t["qa"]]}) for t in record["truth"]]
        self.keyframes: dict[str, list[bool]] = record["keyframes"]
        self.visible: list[dict[str, list[int]]] = record["visible"]  # per frame: each camera's instances

    @property
    def scene_id(self) -> str:
        return self.scene.scene_id

    @property
    def frames(self) -> int:
        return self.scene.frames

    def qa(self, end: int, frames: int) -> list[tuple[str, str, str]]:
        """(question, answer, paraphrase) of the `frames`-frame window ending at frame `end`: the
        end frame's present-tense questions, then those about the window (with 2 frames or more)."""
        return self.truth[end].qa + window_qa(self.scene, self.visible, end - frames + 1, end)

    def image(self, camera: str, t: int) -> np.ndarray:
        return read_image(self.folder / camera / f"{t:02d}.jpg")

    def labels(self, camera: str, t: int) -> np.ndarray:
        path = self.folder / camera / f"{t:02d}_labels.png"
        labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if labels is None:
            raise InputError(f"label map {path} is missing or corrupt")
        return labels

    def stamp_ns(self, t: int) -> int:
        return EPOCH_NS + round(t / self.fps * 1e9)

    def window(self, end: int, frames: int, cameras: list[str]) -> FrameWindow:
        """The `frames` frames of each camera ending at frame `end` (the window's "now")."""
        if not frames - 1 <= end < self.frames:
            raise InputError(
                f"scene {self.scene_id} has {self.frames} frames: no {frames}-frame window ends at {end}"
            )
        times = range(end - frames + 1, end + 1)
        images = [[self.image(camera, t) for t in times] for camera in cameras]
        return FrameWindow(list(cameras), images, [[self.stamp_ns(t) for t in times] for _ in cameras])


class SynthDataset:
    def __init__(self, root: Path, max_scenes: int | None = None) -> None:
        """`max_scenes`: read only the first scenes (a training subset)."""
        root = Path(root)
        native = root / "synth" if (root / "synth" / "manifest.json").is_file() else root
        manifest_path = native / "manifest.json"
        if not manifest_path.is_file():
            raise InputError(
                f"{root} is not a synthdrive dataset: {root / 'synth' / 'manifest.json'} is missing (run `vts-drive synth`)"
            )
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT_VERSION:
            raise InputError(
                f"{manifest_path} has format {manifest.get('format')!r}; this version reads {FORMAT_VERSION}"
            )
        self.root = native
        self.cameras: list[str] = manifest["cameras"]
        self.frames: int = manifest["frames"]
        self.fps: float = manifest["fps"]
        self.image_size: tuple[int, int] = tuple(manifest["image_size"])
        self.classes: list[str] = manifest["classes"]
        self.scene_ids: list[str] = manifest["scenes"][:max_scenes]

    def __len__(self) -> int:
        return len(self.scene_ids)

    def scene(self, index: int) -> SynthScene:
        return SynthScene(self.root / self.scene_ids[index], self.fps)

    def check_cameras(self, cameras: list[str]) -> None:
        missing = [c for c in cameras if c not in self.cameras]
        if missing:
            raise InputError(
                f"{self.root} has no camera(s) {', '.join(missing)}; it has {', '.join(self.cameras)}"
            )

    @cached_property
    def scenes(self) -> list[SynthScene]:
        return [self.scene(i) for i in range(len(self))]
