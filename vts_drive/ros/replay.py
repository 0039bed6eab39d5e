"""Replay rosbag2 bags through the pipeline: one report per window, appended as JSON Lines.

Bags are replayed one after another, each as its own stream (frames synced by
header stamp, windows as in the node). Reports are appended as windows
finish to a results file (results_file.py) whose header names the bags, the
model and the settings; a rerun after a crash or kill resumes only a file of
the same source, checks the finished lines against the windows it forms again
and describes only the rest, so nothing is lost, written twice or mixed. With
an output bag, each input bag is copied with the reports on
/vts_drive/scene_description and /vts_drive/risk_qa, their risk boxes on
/vts_drive/risk_detections and the risk camera's frame with the report drawn
on /vts_drive/overlay, beside its cameras: what the node publishes, for rviz
and Foxglove.

Cameras are named from their topics (cameras.py) or explicitly, `NAME=TOPIC`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vts_drive.errors import InputError
from vts_drive.eval.runner import folder_identity
from vts_drive.results_file import ResultsFile, pipeline_source
from vts_drive.ros.bag_reader import CameraBag
from vts_drive.ros.bag_writer import BagWriter
from vts_drive.ros.cameras import camera_names, parse_camera_topic
from vts_drive.ros.detections import RiskDetection, risk_detection
from vts_drive.ros.images import message_to_rgb
from vts_drive.ros.overlay import draw_overlay
from vts_drive.ros.params import output_topic
from vts_drive.ros.stream import FrameStream, StreamConfig
from vts_drive.ros.typestore import stamp_to_ns
from vts_drive.window import FrameWindow


@dataclass
class ReplaySummary:
    described: int = 0  # windows run through the pipeline now
    resumed: int = 0  # windows already in the output file
    bad_images: Counter = field(default_factory=Counter)  # topic -> messages that did not decode
    first_errors: dict[str, str] = field(
        default_factory=dict
    )  # topic -> why its first bad message did not decode
    dropped: Counter = field(default_factory=Counter)  # sync drop reason -> frames

    def nothing_described(self, bags: list[Path]) -> str:
        """Why no window came out of the bags: the frames that did not decode or were dropped by sync."""
        reasons = [
            f"{count} frame(s) of {topic} did not decode ({self.first_errors[topic]})"
            for topic, count in sorted(self.bad_images.items())
        ]
        if sum(self.dropped.values()):
            counts = ", ".join(f"{count} {reason}" for reason, count in sorted(self.dropped.items()) if count)
            reasons.append(f"{sum(self.dropped.values())} frame(s) dropped by sync ({counts})")
        why = "; ".join(reasons) or "its cameras never gave enough synchronised frames for one window"
        return f"no window of {', '.join(map(str, bags))} was described: {why}"


def output_bag_paths(bags: list[Path], out_bag: Path) -> list[Path]:
    """One input bag: out_bag is the new bag; several: out_bag/<input bag name> each."""
    paths = [out_bag] if len(bags) == 1 else [out_bag / bag.name for bag in bags]
    if len(set(paths)) != len(paths):
        raise InputError(
            f"bags {', '.join(map(str, bags))} share folder names; their output bags in {out_bag} would collide"
        )
    existing = [str(path) for path in paths if path.exists()]
    if existing:
        raise InputError(f"output bag {', '.join(existing)} already exists; choose a new --out-bag")
    return paths


def replay(
    bags: list[Path],
    pipeline,
    out: Path,
    settings: StreamConfig,
    topics: list[str] | None = None,
    out_bag: Path | None = None,
    rate: float | None = None,
    force: bool = False,
) -> ReplaySummary:
    """Describe every window of every bag; `settings` gives everything but the cameras (from the topics).
    topics: the camera topics, each `TOPIC` or `NAME=TOPIC` (cameras.py); None: every image topic.
    rate: replay at this multiple of recorded speed; None: as fast as possible.
    force: start `out` over when it holds the reports of other bags, model or settings (else InputError).
    No window at all raises InputError saying why, before any results bag is written."""
    bags = [Path(bag) for bag in bags]
    if rate is not None and not rate > 0:
        raise InputError(f"--rate must be > 0, got {rate}")
    out_bags = output_bag_paths(bags, out_bag) if out_bag is not None else []
    bag_topics = None if topics is None else [parse_camera_topic(item, "--topics")[0] for item in topics]
    total = 0
    for bag in bags:  # every bag and topic is checked before any work starts
        with CameraBag(bag, bag_topics) as source:
            _cameras(bag, topics, source.topics)
            total += source.message_count
    fingerprint = {
        "input": {"bags": [folder_identity(bag) for bag in bags], "topics": topics},
        "windows": asdict(settings),
        **pipeline_source(pipeline),
    }
    summary = ReplaySummary()
    results_per_bag: list[tuple[dict[str, str], list[dict], list[RiskDetection]]] = []
    progress = tqdm(total=total, unit="msg", desc="replay", dynamic_ncols=True)
    with progress, ResultsFile(out, fingerprint, force) as results:
        finished = results.finished
        for bag in bags:
            reports, detections = [], []
            frame_ids: dict[str, str] = {}  # camera -> frame_id of its newest frame
            with CameraBag(bag, bag_topics) as source:
                cameras = _cameras(bag, topics, source.topics)
                stream = FrameStream(replace(settings, cameras=list(cameras.values())))
                for topic, stamp_ns, frame_id, rgb, log_time_ns in _camera_frames(
                    source, rate, summary, progress
                ):
                    frame_ids[cameras[topic]] = frame_id
                    for window in stream.add(cameras[topic], stamp_ns, rgb, log_time_ns):
                        index = summary.resumed + summary.described
                        if index < len(finished):
                            _check_resumed(out, index, finished[index], window)
                            reports.append(finished[index])
                            summary.resumed += 1
                        else:
                            report = pipeline.describe(window).to_dict()
                            results.append(report)
                            reports.append(report)
                            summary.described += 1
                        detections.append(risk_detection(reports[-1], window, frame_ids))
                        progress.set_postfix(windows=index + 1)
                for dropped in stream.sync.dropped.values():
                    summary.dropped.update(dropped)
            results_per_bag.append((cameras, reports, detections))
    if not summary.described and not summary.resumed:
        raise InputError(summary.nothing_described(bags))
    for bag, (cameras, reports, detections), path in zip(bags, results_per_bag, out_bags):
        write_results_bag(bag, cameras, reports, detections, path)
    return summary


def _cameras(bag: Path, topics: list[str] | None, bag_topics: list[str]) -> dict[str, str]:
    """topic -> camera name of the --topics items, or of every image topic of the bag when none are given."""
    if topics is not None:
        return camera_names(topics, "--topics")
    return camera_names(bag_topics, f"bag {bag} (choose and name its camera topics with --topics)")


def _camera_frames(
    source: CameraBag, rate: float | None, summary: ReplaySummary, progress: tqdm
) -> Iterator[tuple[str, int, str, np.ndarray, int]]:
    """(topic, header stamp ns, header frame_id, RGB [H, W, 3], log time ns) of each camera message
    that decodes; the others are counted in the summary and skipped."""
    pace = _Pace(rate)
    for topic, log_time_ns, msg in source.messages():
        progress.update()
        pace.wait(log_time_ns)
        try:
            if isinstance(msg, InputError):
                raise msg
            rgb = message_to_rgb(msg)
        except InputError as error:
            if not summary.bad_images[topic]:
                summary.first_errors[topic] = str(error)
                tqdm.write(f"vts-drive replay: {topic}: frame skipped: {error}")
            summary.bad_images[topic] += 1
            continue
        yield topic, stamp_to_ns(msg.header.stamp), msg.header.frame_id, rgb, log_time_ns


def _check_resumed(out: Path, index: int, report: dict, window: FrameWindow) -> None:
    if report["stamp"] != window.stamp_ns / 1e9 or report.get("cameras") != window.cameras:
        raise InputError(
            f"{out} line {index + 1} (stamp {report['stamp']}, cameras {report.get('cameras')}) is not window "
            f"{index + 1} of this replay (stamp {window.stamp_ns / 1e9}, cameras {window.cameras}); "
            "it was written from other bags or settings: use a new --out"
        )


class _Pace:
    """Sleeps so that messages go out at `rate` times their recorded speed (None: no waiting)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.start: tuple[int, float] | None = None  # (first log time ns, wall time s)

    def wait(self, log_time_ns: int) -> None:
        if self.rate is None:
            return
        if self.start is None:
            self.start = (log_time_ns, time.monotonic())
        due = self.start[1] + (log_time_ns - self.start[0]) / 1e9 / self.rate
        time.sleep(max(0.0, due - time.monotonic()))


def write_results_bag(
    bag: Path, cameras: dict[str, str], reports: list[dict], detections: list[RiskDetection], path: Path
) -> None:
    """A copy of the bag's camera topics (cameras: topic -> camera name) with, at each report's window
    stamp, its description, its JSON and its Detection2DArray, and each report's overlay logged beside
    the frame it is drawn on (decoded again here: holding every window's frame would not fit in memory).
    Written beside the target and renamed when complete, so a kill leaves no half bag at `path`."""
    partial = path.with_name(path.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    pending = sorted(zip(reports, detections), key=lambda pair: pair[0]["stamp"])
    topic_of = {camera: topic for topic, camera in cameras.items()}
    overlays: dict[tuple[str, int], list[RiskDetection]] = defaultdict(
        list
    )  # (topic, stamp ns) -> drawn on it
    for detection in detections:
        overlays[(topic_of[detection.camera], detection.stamp_ns)].append(detection)
    overlay_topics = {topic for topic, _ in overlays}
    with CameraBag(bag, list(cameras)) as source, BagWriter(partial) as writer:

        def write_reports_until(log_time_ns: float) -> None:
            while pending and round(pending[0][0]["stamp"] * 1e9) <= log_time_ns:
                report, detection = pending.pop(0)
                stamp_ns = round(report["stamp"] * 1e9)
                writer.add_string(output_topic("scene_description"), stamp_ns, report["description"])
                writer.add_string(
                    output_topic("risk_qa"), stamp_ns, json.dumps(report, separators=(",", ":"))
                )
                writer.add_detections(output_topic("risk_detections"), stamp_ns, detection)

        for connection, log_time_ns, data in source.raw_messages():
            write_reports_until(log_time_ns)
            writer.add_serialized(connection.topic, connection.msgtype, log_time_ns, data)
            if connection.topic not in overlay_topics:
                continue
            msg = source.deserialize(connection, log_time_ns, data)
            key = None if isinstance(msg, InputError) else (connection.topic, stamp_to_ns(msg.header.stamp))
            if key not in overlays:
                continue
            try:
                rgb = message_to_rgb(msg)
            except (
                InputError
            ):  # skipped by the replay too; the frame it used has the same stamp and comes later
                continue
            for detection in overlays.pop(key):
                writer.add_image(
                    output_topic("overlay"),
                    detection.stamp_ns,
                    detection.frame_id,
                    draw_overlay(rgb, detection),
                    log_time_ns=log_time_ns,
                )
        write_reports_until(float("inf"))
    partial.rename(path)
