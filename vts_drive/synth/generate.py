"""Write a synthdrive dataset: the native form and the DRAMA, LingoQA and rosbag2 exports.

    D/synth/manifest.json, D/synth/<scene>/scene.json, <camera>/<t>.jpg, <camera>/<t>_labels.png
    D/drama/integrated_output_v2.json, D/drama/clips/<scene>/frame_<t>.png + clip.mp4
        (paths in the JSON are relative to D/drama/)
    D/lingoqa/val.parquet, D/lingoqa/images/val/<scene>/0.jpg .. 4.jpg
        (paths in the parquet are relative to D/lingoqa/)
    D/bags/<scene>/  rosbag2, /cam_<camera>/image_raw (or .../compressed)
The same seed gives the same bytes: every random draw comes from a generator
seeded by (seed, scene index), and stamps come from the scene clock.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from vts_drive.errors import InputError
from vts_drive.synth.camera import cameras as make_cameras
from vts_drive.synth.render import CLASSES, render
from vts_drive.synth.scene import sample_scene
from vts_drive.synth.truth import frame_truth, keyframe_labels, visible_ids, visible_objects, window_qa

FORMAT_VERSION = "synthdrive/2"  # 2: temporal questions, ego speed changes, roadside posts
FORMATS = ("synth", "drama", "lingoqa", "bags")
EPOCH_NS = 1_700_000_000_000_000_000  # the scene clock's zero, a fixed instant
LINGOQA_FRAMES = 5


@dataclass
class SynthConfig:
    scenes: int
    seed: int = 0
    cameras: list[str] = field(default_factory=lambda: ["front", "front_left", "front_right"])
    frames: int = 8
    fps: float = 4.0
    image_size: tuple[int, int] = (192, 128)  # width, height
    storage: str = "mcap"
    compressed: bool = False
    formats: tuple[str, ...] = FORMATS

    def check(self) -> None:
        if self.scenes < 1:
            raise InputError(f"--scenes must be at least 1, got {self.scenes}")
        if self.frames < 2:
            raise InputError(f"--frames must be at least 2, got {self.frames}")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise InputError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
        if ("drama" in self.formats or "lingoqa" in self.formats) and "front" not in self.cameras:
            raise InputError(
                "the DRAMA and LingoQA exports use the front camera: add front to --cameras or drop those formats"
            )
        if "lingoqa" in self.formats and self.frames < LINGOQA_FRAMES:
            raise InputError(
                f"the LingoQA export needs at least {LINGOQA_FRAMES} frames per scene, got --frames {self.frames}"
            )
        if self.storage not in ("mcap", "sqlite3"):
            raise InputError(f"--storage must be mcap or sqlite3, got {self.storage!r}")
        make_cameras(self.cameras, *self.image_size)


def prepare_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(
                f"output folder {out} is not empty; pass --overwrite to replace its synthdrive data"
            )
        for name in FORMATS:
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def encode(path: Path, image: np.ndarray, rgb: bool = True) -> None:
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if rgb else image
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buffer = cv2.imencode(path.suffix, data, params)
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    path.write_bytes(buffer.tobytes())


def generate_dataset(out: Path, config: SynthConfig, overwrite: bool = False, workers: int = 1) -> None:
    """Scenes are independent (each draws from its own seeded generators), so `workers`
    processes render and write them in parallel; the bytes are those of a single process."""
    config.check()
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    out = Path(out)
    prepare_output(out, overwrite)
    drama, lingoqa, scene_ids = [], [], []
    write = partial(write_scene, out, config)
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        written = (
            pool.map(write, range(config.scenes), chunksize=4) if pool else map(write, range(config.scenes))
        )
        for scene_id, drama_entry, lingoqa_rows in tqdm(
            written, total=config.scenes, desc="synthdrive", unit="scene"
        ):
            scene_ids.append(scene_id)
            if drama_entry is not None:
                drama.append(drama_entry)
            lingoqa += lingoqa_rows
    if "synth" in config.formats:
        manifest = {
            "format": FORMAT_VERSION,
            "seed": config.seed,
            "cameras": config.cameras,
            "frames": config.frames,
            "fps": config.fps,
            "image_size": list(config.image_size),
            "classes": CLASSES,
            "scenes": scene_ids,
        }
        (out / "synth" / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if "drama" in config.formats:
        (out / "drama" / "integrated_output_v2.json").write_text(json.dumps(drama, indent=1) + "\n")
    if "lingoqa" in config.formats:
        write_parquet(out / "lingoqa" / "val.parquet", lingoqa)


def write_scene(out: Path, config: SynthConfig, index: int) -> tuple[str, dict | None, list[dict]]:
    """Sample, render and write scene `index` in every requested form -> (scene id, its DRAMA
    entry, its LingoQA rows), which the caller collects in scene order."""
    width, height = config.image_size
    cameras = make_cameras(config.cameras, width, height)
    min_pixels = max(6, round(12 * width * height / (192 * 128)))
    scene = sample_scene(
        np.random.default_rng([config.seed, index]), f"scene_{index:05d}", config.frames, config.fps
    )
    weather = np.random.default_rng([config.seed, index, 1])
    frames = {c.name: [render(scene, c, t, weather) for t in range(config.frames)] for c in cameras}
    views = [
        {name: visible_objects(frames[name][t].instances, min_pixels) for name in frames}
        for t in range(config.frames)
    ]
    truths = [frame_truth(scene, t, views[t], config.image_size) for t in range(config.frames)]
    keyframes = {name: keyframe_labels(views, truths, name, scene) for name in frames}
    visible = [visible_ids(view) for view in views]
    drama_entry, lingoqa_rows = None, []
    if "synth" in config.formats:
        write_native(out / "synth" / scene.scene_id, scene, frames, truths, keyframes, visible)
    if "drama" in config.formats:
        drama_entry = write_drama_clip(out / "drama", scene, frames["front"], truths[-1], config.fps)
    if "lingoqa" in config.formats:
        segment_qa = truths[-1].qa + window_qa(
            scene, visible, config.frames - LINGOQA_FRAMES, config.frames - 1
        )
        lingoqa_rows = write_lingoqa_segment(out / "lingoqa", scene, frames["front"], segment_qa)
    if "bags" in config.formats:
        write_bag(out / "bags" / scene.scene_id, scene, frames, config)
    return scene.scene_id, drama_entry, lingoqa_rows


def write_native(folder: Path, scene, frames, truths, keyframes, visible) -> None:
    for camera, camera_frames in frames.items():
        (folder / camera).mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(camera_frames):
            encode(folder / camera / f"{t:02d}.jpg", frame.rgb)
            encode(folder / camera / f"{t:02d}_labels.png", frame.labels, rgb=False)
    record = {
        "scene": scene.to_dict(),
        "truth": [asdict(t) for t in truths],
        "keyframes": keyframes,
        "visible": visible,
    }
    (folder / "scene.json").write_text(json.dumps(record, indent=1) + "\n")


def write_drama_clip(root: Path, scene, front, truth, fps: float) -> dict:
    clip = root / "clips" / scene.scene_id
    clip.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(front):
        encode(clip / f"frame_{t:06d}.png", frame.rgb)
    height, width = front[0].rgb.shape[:2]
    video = cv2.VideoWriter(str(clip / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in front:
        video.write(cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
    video.release()
    geometry = []
    if truth.risk_box is not None:
        x1, y1, x2, y2 = (round(v * s) for v, s in zip(truth.risk_box, (width, height, width, height)))
        geometry = [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]
    return {
        "s3_fileUrl": f"clips/{scene.scene_id}/frame_{len(front) - 1:06d}.png",
        "s3_instructionReference": f"clips/{scene.scene_id}/clip.mp4",
        "Risk": "Yes" if truth.risk_object else "No",
        "Caption": truth.risk_caption or "N/A",
        "geometry": geometry,
        "Suggestions (to the ego car)": f"the ego car should {truth.action}",
        "Intention of Ego-vehicle": "go straight",
    }


def write_lingoqa_segment(root: Path, scene, front, qa: list[tuple[str, str, str]]) -> list[dict]:
    """The segment's last frames and its questions: the newest frame's and those about the segment."""
    folder = root / "images" / "val" / scene.scene_id
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i, frame in enumerate(front[-LINGOQA_FRAMES:]):
        encode(folder / f"{i}.jpg", frame.rgb)
        images.append(f"images/val/{scene.scene_id}/{i}.jpg")
    rows = []
    for number, (question, answer, paraphrase) in enumerate(qa):
        question_id = f"{scene.scene_id}_q{number}"
        for reference in (answer, paraphrase):
            rows.append(
                {
                    "question_id": question_id,
                    "segment_id": scene.scene_id,
                    "images": images,
                    "question": question,
                    "answer": reference,
                }
            )
    return rows


def write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            name: [row[name] for row in rows]
            for name in ("question_id", "segment_id", "images", "question", "answer")
        }
    )
    pq.write_table(table, path)


def write_bag(path: Path, scene, frames, config: SynthConfig) -> None:
    from vts_drive.ros.bag_writer import BagWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "/compressed" if config.compressed else ""
    with BagWriter(path, storage=config.storage) as bag:
        for t in range(config.frames):
            stamp = EPOCH_NS + round(scene.time(t) * 1e9)
            for camera, camera_frames in frames.items():
                bag.add_image(
                    f"/cam_{camera}/image_raw{suffix}",
                    stamp,
                    f"cam_{camera}",
                    camera_frames[t].rgb,
                    compressed=config.compressed,
                )
