"""`vts-drive describe`: reports for camera frames on disk (image folders or videos)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vts_drive.cli.common import (
    add_force_argument,
    add_pipeline_arguments,
    pipeline_overrides,
    positive_float,
    positive_int,
)


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
    parser.add_argument(
        "--frames", type=positive_int, default=4, help="frames per camera per window (default: %(default)s)"
    )
    parser.add_argument(
        "--stride", type=positive_int, default=None, help="frames between window starts (default: --frames)"
    )
    parser.add_argument(
        "--fps", type=positive_float, default=10.0, help="frame rate for stamps (default: %(default)s)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="append reports here as JSON Lines, after a header line naming the input, model and settings; "
        "a rerun with the same ones resumes after the last finished window, other ones are refused",
    )
    add_force_argument(parser, "--json")
    add_pipeline_arguments(parser)
    parser.set_defaults(run=run)


def input_source(args: argparse.Namespace, stride: int) -> dict:
    """What identifies the frames a run describes: the files, and how they are cut into windows."""
    from vts_drive.eval.benchmarks import file_identity
    from vts_drive.inputs import camera_folders, parse_video_args
    from vts_drive.results_file import files_digest

    if args.images is not None:
        frames = [path for paths in camera_folders(args.images).values() for path in paths]
        files = {"images": str(args.images.resolve()), "files": files_digest(frames)}
    else:
        files = {
            "videos": {camera: file_identity(path) for camera, path in parse_video_args(args.video).items()}
        }
    return {**files, "frames": args.frames, "stride": stride, "fps": args.fps}


def run(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from vts_drive.errors import EXIT_INPUT_ERROR, InputError
    from vts_drive.inputs import parse_video_args, windows_from_folders, windows_from_videos
    from vts_drive.pipeline import Pipeline
    from vts_drive.report import format_report_text
    from vts_drive.results_file import ResultsFile, pipeline_source

    overrides = pipeline_overrides(args)  # a bad setting stops the command before any frame is read
    stride = args.stride or args.frames
    if args.images is not None:
        windows = windows_from_folders(args.images, args.frames, stride, args.fps)
    else:
        windows = windows_from_videos(parse_video_args(args.video), args.frames, stride, args.fps)
    pipeline = Pipeline.load(args.model, overrides)
    results = None
    if args.json is not None:
        results = ResultsFile(
            args.json, {"input": input_source(args, stride), **pipeline_source(pipeline)}, args.force
        )
    finished = {report["stamp"] for report in results.finished} if results else set()
    done = resumed = skipped = 0
    with results or nullcontext():
        for pending in windows:
            try:
                window = pending.load()
            except InputError as error:
                print(f"vts-drive describe: window {pending.index} skipped: {error}", file=sys.stderr)
                skipped += 1
                continue
            if window.stamp_ns / 1e9 in finished:
                resumed += 1
                continue
            report = pipeline.describe(window)
            print(format_report_text(report), flush=True)
            if results is not None:
                results.append(report.to_dict())
            done += 1
    if not done and not resumed:  # every window had a frame that could not be read (each named above)
        inputs = args.images if args.images is not None else ", ".join(args.video)
        print(
            f"no window of {inputs} could be described: {skipped} window(s) skipped for unreadable frames",
            file=sys.stderr,
        )
    else:
        already = f", {resumed} already in {args.json}" if results is not None else ""
        print(f"{done} window(s) described, {skipped} skipped{already}", file=sys.stderr)
    return EXIT_INPUT_ERROR if skipped else 0
