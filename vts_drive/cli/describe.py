"""`vts-drive describe`: reports for camera frames on disk (image folders or videos)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vts_drive.cli.common import add_pipeline_arguments, pipeline_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "describe",
        help="describe windows of camera frames from image folders or videos",
        description="Scene description, risk and QA for each window of frames. "
        "--images DIR holds one subfolder per camera, frames ordered by file name.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder with one subfolder of frames per camera")
    source.add_argument("--video", action="append", metavar="CAM=FILE", help="a video per camera (repeat)")
    parser.add_argument("--frames", type=int, default=4, help="frames per camera per window (default: %(default)s)")
    parser.add_argument("--stride", type=int, default=None, help="frames between window starts (default: --frames)")
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate for stamps (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="append reports here as JSON Lines (one window: one JSON object)")
    add_pipeline_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vts_drive.errors import EXIT_INPUT_ERROR, InputError
    from vts_drive.inputs import parse_video_args, windows_from_folders, windows_from_videos
    from vts_drive.pipeline import Pipeline
    from vts_drive.report import format_report_text

    stride = args.stride or args.frames
    if args.images is not None:
        windows = windows_from_folders(args.images, args.frames, stride, args.fps)
    else:
        windows = windows_from_videos(parse_video_args(args.video), args.frames, stride, args.fps)
    pipeline = Pipeline.load(args.model, pipeline_config(args))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("")
    done = skipped = 0
    for pending in windows:
        try:
            window = pending.load()
        except InputError as error:
            print(f"vts-drive describe: window {pending.index} skipped: {error}", file=sys.stderr)
            skipped += 1
            continue
        report = pipeline.describe(window)
        print(format_report_text(report), flush=True)
        if args.json is not None:
            with args.json.open("a") as out:
                out.write(report.to_json() + "\n")
        done += 1
    print(f"{done} window(s) described, {skipped} skipped", file=sys.stderr)
    return EXIT_INPUT_ERROR if skipped else 0
