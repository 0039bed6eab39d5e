"""`vts-drive replay`: rosbag2 recordings through the pipeline, reports to JSON Lines (and a bag)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vts_drive.cli.common import (
    add_force_argument,
    add_pipeline_arguments,
    non_negative_float,
    pipeline_overrides,
    positive_float,
    positive_int,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from vts_drive.ros.stream import STALE_POLICIES, StreamConfig

    parser = subparsers.add_parser(
        "replay",
        help="replay rosbag2 bags (mcap or sqlite3) through the pipeline",
        description="Sync the bag's camera topics by header stamp, describe each window and append one "
        "report per line to --out, after a header line naming the bags, model and settings; a rerun with the "
        "same ones resumes after the last finished window, other ones are refused. --out-bag also writes "
        "a bag with the camera topics plus /vts_drive/scene_description, /vts_drive/risk_qa, "
        "/vts_drive/risk_detections (vision_msgs/Detection2DArray) and /vts_drive/overlay (the risk camera's "
        "frame with the box and caption drawn), for Foxglove or rviz.",
    )
    parser.add_argument(
        "bags", nargs="+", type=Path, metavar="BAG", help="rosbag2 folder(s), replayed one after another"
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON Lines file the reports are appended to")
    add_force_argument(parser, "--out")
    parser.add_argument(
        "--out-bag", type=Path, default=None, help="new bag (several BAGs: a folder of bags, one per BAG)"
    )
    parser.add_argument(
        "--topics",
        nargs="+",
        default=None,
        metavar="[NAME=]TOPIC",
        help="camera topics (Image or CompressedImage; default: every image topic in the bag), each "
        "named after its last part less image_raw, compressed and the like (/camera/front/compressed "
        "is front), or as given: front=/camera/front/compressed",
    )
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--rate", type=positive_float, default=None, help="replay at this multiple of recorded speed"
    )
    pace.add_argument(
        "--as-fast-as-possible", action="store_true", help="no waiting between messages (the default)"
    )
    windows = parser.add_argument_group("windows")
    windows.add_argument(
        "--frames",
        type=positive_int,
        default=StreamConfig.frames,
        help="frames per camera per window (default: %(default)s)",
    )
    windows.add_argument(
        "--stride",
        type=positive_int,
        default=StreamConfig.stride,
        help="synchronised frames between window starts (default: %(default)s)",
    )
    windows.add_argument(
        "--slop",
        type=non_negative_float,
        default=StreamConfig.slop_s,
        help="largest stamp spread in seconds within one synchronised set (default: %(default)s)",
    )
    windows.add_argument(
        "--stale-after",
        type=positive_float,
        default=StreamConfig.stale_after_s,
        help="seconds (bag time) before a silent camera is stale (default: %(default)s)",
    )
    windows.add_argument(
        "--on-stale",
        choices=STALE_POLICIES,
        default=StreamConfig.on_stale,
        help="continue with the other cameras or wait for it (default: %(default)s)",
    )
    add_pipeline_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vts_drive.pipeline import Pipeline
    from vts_drive.ros.replay import replay
    from vts_drive.ros.stream import StreamConfig

    settings = StreamConfig(
        cameras=[],
        frames=args.frames,
        stride=args.stride,
        slop_s=args.slop,
        stale_after_s=args.stale_after,
        on_stale=args.on_stale,
    )
    pipeline = Pipeline.load(args.model, pipeline_overrides(args))
    summary = replay(
        args.bags, pipeline, args.out, settings, args.topics, args.out_bag, args.rate, args.force
    )
    bad = sum(summary.bad_images.values())
    dropped = (
        ", ".join(f"{count} {reason}" for reason, count in sorted(summary.dropped.items()) if count) or "none"
    )
    print(
        f"vts-drive replay: {summary.described} window(s) described, {summary.resumed} already in {args.out}; "
        f"{bad} bad image(s) skipped; frames dropped by sync: {dropped}",
        file=sys.stderr,
    )
    if args.out_bag is not None:
        print(f"vts-drive replay: results bag written to {args.out_bag}", file=sys.stderr)
    return 0
