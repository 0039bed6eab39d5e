"""DRAMA: integrated_output_v2.json, its clips, the ordered split, and scoring.

Each entry names a clip's annotated key frame (`s3_fileUrl`), the clip's video
(`s3_instructionReference`, mp4 or gif), whether it holds a risk (`Risk`), the risk caption
(`Caption`) and the important object's box (`geometry`: [x, y] points, 0 and 2 opposite
corners). As the common loaders do, entries with Risk "No", no usable caption ("N/A", empty,
missing) or no usable box are skipped and counted; the rest are split 70/15/15 in file order
(no official split exists), or by a split file listing the `s3_fileUrl`s to use. The box is clipped
to the key frame; one with no area inside it is skipped with the other unusable geometries.

Every file an entry names must lie inside the annotation file's folder once symlinks and `..` are
resolved: an entry that points outside it is an InputError naming the entry and the path, since
a file full of such entries would otherwise have the loader read any file on the machine.

A sample's window is the front camera's last `frames` frames ending at the key frame: the
frame images beside the key frame when the clip folder holds enough of them, else the clip
video's frames with its last frame replaced by the key frame (the clip ends there). A clip
shorter than the window repeats its first frame.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from vts_drive.errors import InputError
from vts_drive.eval.files import finite_number, inside_folder, read_utf8
from vts_drive.eval.metrics import caption_metrics, localisation_metrics
from vts_drive.inputs import read_image, read_video
from vts_drive.window import FrameWindow

ANNOTATIONS = "integrated_output_v2.json"
SPLITS = ("train", "val", "test", "all")
SPLIT_SHARES = (0.70, 0.15)  # train, val; test is the rest
FRAME_PERIOD_NS = 100_000_000  # stamps for a clip's frames; only their order matters


@dataclass
class DramaSample:
    key: str  # the entry's s3_fileUrl (made unique with "#n" if repeated)
    image: Path  # the annotated key frame
    video: Path | None  # the clip, when it is on disk
    box: list[float]  # [x1, y1, x2, y2] in key frame pixels, inside the key frame
    caption: str

    def truth_box(self) -> list[float]:
        """The box normalised to the key frame's size."""
        width, height = image_size(self.image)
        x1, y1, x2, y2 = self.box
        return [x1 / width, y1 / height, x2 / width, y2 / height]

    def window(self, frames: int) -> FrameWindow:
        prefix = re.sub(r"\d+$", "", self.image.stem)  # frame_000042 -> frame_
        names = sorted(
            p for p in self.image.parent.glob(f"{prefix}*{self.image.suffix}") if p.name <= self.image.name
        )[-frames:]
        siblings = [inside_folder(self.image.parent, p, f"DRAMA sample {self.key!r}") for p in names]
        if len(siblings) >= frames or self.video is None:
            images = [read_image(p) for p in siblings]
        else:
            images = read_video(self.video)[-frames:-1] + [read_image(self.image)]
        images = [images[0]] * (frames - len(images)) + images
        return FrameWindow(["front"], [images], [[t * FRAME_PERIOD_NS for t in range(frames)]])


@dataclass
class DramaSet:
    samples: list[DramaSample]
    entries: int  # entries in the annotation file
    skipped: Counter = field(default_factory=Counter)  # reason -> count


def annotation_path(data: Path) -> Path:
    data = Path(data)
    path = data / ANNOTATIONS if data.is_dir() else data
    if not path.is_file():
        raise InputError(f"{path} does not exist: DRAMA needs {ANNOTATIONS} (give its folder or the file)")
    return path


def find_file(root: Path, reference: str, what: str) -> Path | None:
    """A path or URL from the annotations, found under `root`: the longest trailing part of it
    that exists there (URLs point at the original bucket, relative paths at the dataset root),
    resolved; InputError naming `what` when the file found lies outside `root`."""
    parts = PurePosixPath(urlparse(reference).path if "://" in reference else reference).parts
    for start in range(len(parts)):
        candidate = root.joinpath(*parts[start:])
        if candidate.is_file():
            return inside_folder(root, candidate, what)
    return None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of a key frame, from its header."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, Image.DecompressionBombError) as error:
        raise InputError(f"key frame {path} cannot be read: {error}") from None


def clip_box(box: list[float], width: int, height: int) -> list[float] | None:
    """The part of [x1, y1, x2, y2] inside a width x height image; None when none of its area is."""
    x1, y1, x2, y2 = max(box[0], 0.0), max(box[1], 0.0), min(box[2], float(width)), min(box[3], float(height))
    return [x1, y1, x2, y2] if x2 > x1 and y2 > y1 else None


def entry_box(geometry) -> list[float] | None:
    """[x1, y1, x2, y2] from the geometry's opposite corners 0 and 2; None when unusable."""
    try:
        (ax, ay), (bx, by) = geometry[0][:2], geometry[2][:2]
        x1, y1, x2, y2 = float(min(ax, bx)), float(min(ay, by)), float(max(ax, bx)), float(max(ay, by))
    except (TypeError, IndexError, ValueError, KeyError):
        return None
    return [x1, y1, x2, y2] if x2 > x1 and y2 > y1 else None


def skip_reason(entry) -> str | None:
    if not isinstance(entry, dict):
        return "malformed"
    if not isinstance(entry.get("s3_fileUrl"), str):
        return "no_key_frame"
    if str(entry.get("Risk", "")).strip().lower() == "no":
        return "risk_no"
    caption = entry.get("Caption")
    if not isinstance(caption, str) or caption.strip().upper() in ("", "N/A", "NA"):
        return "caption_na"
    if entry_box(entry.get("geometry")) is None:
        return "no_geometry"
    return None


def split_entries(entries: list[dict], split: str) -> list[dict]:
    """The ordered 70/15/15 split, `all`, or the entries a split file lists (by s3_fileUrl)."""
    if split in SPLITS:
        if split == "all":
            return entries
        train = int(len(entries) * SPLIT_SHARES[0])
        val = train + int(len(entries) * SPLIT_SHARES[1])
        return {"train": entries[:train], "val": entries[train:val], "test": entries[val:]}[split]
    path = Path(split)
    if not path.is_file():
        raise InputError(
            f"--split {split!r} is neither one of {', '.join(SPLITS)} nor an existing split file"
        )
    wanted = [
        line.strip() for line in read_utf8(path).splitlines() if line.strip() and not line.startswith("#")
    ]
    chosen = {entry["s3_fileUrl"]: entry for entry in entries}
    unknown = [key for key in wanted if key not in chosen]
    if unknown:
        raise InputError(
            f"split file {path}: {len(unknown)} key frame(s) are not usable entries of the annotations, e.g. {unknown[0]!r}"
        )
    return [chosen[key] for key in wanted]


def load_drama(data: Path, split: str = "test") -> DramaSet:
    path = annotation_path(data)
    try:
        entries = json.loads(read_utf8(path))
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not readable JSON: {error}") from None
    if not isinstance(entries, list):
        raise InputError(
            f"{path} must hold a JSON list of annotation entries, found {type(entries).__name__}"
        )
    skipped: Counter = Counter()
    usable = []
    for entry in entries:
        reason = skip_reason(entry)
        if reason:
            skipped[reason] += 1
        else:
            usable.append(entry)
    samples, seen = [], Counter()
    for entry in split_entries(usable, split):
        key_frame, clip = entry["s3_fileUrl"], entry.get("s3_instructionReference")
        where = f"{path} entry {key_frame!r}"
        image = find_file(path.parent, key_frame, f"{where}: s3_fileUrl {key_frame!r}")
        if image is None:
            skipped["missing_key_frame"] += 1
            continue
        video = (
            find_file(path.parent, clip, f"{where}: s3_instructionReference {clip!r}")
            if isinstance(clip, str)
            else None
        )
        try:
            box = clip_box(entry_box(entry["geometry"]), *image_size(image))
        except InputError:
            skipped["unreadable_key_frame"] += 1
            continue
        if box is None:
            skipped["no_geometry"] += 1
            continue
        key = key_frame + (f"#{seen[key_frame]}" if seen[key_frame] else "")
        seen[key_frame] += 1
        samples.append(DramaSample(key, image, video, box, entry["Caption"].strip()))
    return DramaSet(samples, len(entries), skipped)


def score_drama(samples: list[DramaSample], predictions: dict[str, dict]) -> dict[str, float | int | None]:
    """Captions and boxes of the samples that have a prediction ({key: {"caption", "bbox"}})."""
    answered = [s for s in samples if s.key in predictions]
    metrics: dict[str, float | int | None] = {"n": len(answered)}
    metrics.update(
        localisation_metrics(
            [predictions[s.key].get("bbox") for s in answered], [s.truth_box() for s in answered]
        )
    )
    metrics.update(
        caption_metrics(
            [predictions[s.key].get("caption") or "" for s in answered], [[s.caption] for s in answered]
        )
    )
    return metrics


def prediction_problem(record) -> str | None:
    """What makes a predictions line unusable for scoring, or None when it is usable."""
    if not isinstance(record, dict):
        return 'not a JSON object {"key": ..., "caption": ..., "bbox": ...}'
    if not isinstance(record.get("key"), str):
        return '"key" must be a string, the entry\'s s3_fileUrl'
    if not isinstance(record.get("caption"), str | None):
        return '"caption" must be a string or null'
    bbox = record.get("bbox")
    if bbox is None:
        return None
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(finite_number(v) for v in bbox)):
        return f'"bbox" must be null or four finite numbers [x1, y1, x2, y2], found {json.dumps(bbox)[:80]}'
    if bbox[0] > bbox[2] or bbox[1] > bbox[3]:
        return f'"bbox" {bbox} needs x1 <= x2 and y1 <= y2 (corners top left, then bottom right)'
    return None


def read_predictions(path: Path) -> dict[str, dict]:
    """{key: record} from a DRAMA predictions JSONL ({"key": s3_fileUrl, "caption": ..., "bbox": [x1, y1, x2, y2] or null}),
    every line checked: a line that cannot be scored, or repeats a key, is an InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"predictions file {path} does not exist")
    predictions, line_of = {}, {}
    for number, line in enumerate(read_utf8(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"predictions file {path} line {number} is not JSON: {error}") from None
        problem = prediction_problem(record)
        if problem:
            raise InputError(f"predictions file {path} line {number}: {problem}")
        key = record["key"]
        if key in line_of:
            raise InputError(
                f"predictions file {path} line {number} repeats the key of line {line_of[key]}: {key!r}"
            )
        predictions[key], line_of[key] = record, number
    return predictions
