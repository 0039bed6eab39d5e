"""`vts-drive synth`: generate a synthdrive dataset (native form, DRAMA, LingoQA, rosbag2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vts_drive.cli.common import positive_float
from vts_drive.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="generate the synthdrive benchmark (seeded; same seed, same bytes)",
        description="Procedural multi-camera driving scenes with exact ground truth, written as the native "
        "form (D/synth), DRAMA (D/drama), LingoQA (D/lingoqa) and rosbag2 bags (D/bags).",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--scenes", type=int, required=True, help="number of scenes (clips)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cameras", default="front,front_left,front_right")
    parser.add_argument("--frames", type=int, default=8, help="frames per scene (default: %(default)s)")
    parser.add_argument("--fps", type=positive_float, default=4.0, help="frame rate (default: %(default)s)")
    parser.add_argument("--image-size", default="192x128", help="WIDTHxHEIGHT (default: %(default)s)")
    parser.add_argument(
        "--formats",
        default=",".join(("synth", "drama", "lingoqa", "bags")),
        help="which outputs to write (default: all)",
    )
    parser.add_argument(
        "--storage", default="mcap", help="rosbag2 storage: mcap or sqlite3 (default: %(default)s)"
    )
    parser.add_argument(
        "--compressed", action="store_true", help="bags carry sensor_msgs/CompressedImage (jpeg)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes rendering scenes in parallel (same bytes as one)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the synthdrive data in a non-empty --out"
    )
    parser.set_defaults(run=run)


def parse_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or int(width) < 32 or int(height) < 32:
        raise InputError(f"--image-size takes WIDTHxHEIGHT of at least 32x32, got {text!r}")
    return int(width), int(height)


def run(args: argparse.Namespace) -> int:
    from vts_drive.synth.generate import SynthConfig, generate_dataset

    config = SynthConfig(
        scenes=args.scenes,
        seed=args.seed,
        cameras=[c.strip() for c in args.cameras.split(",") if c.strip()],
        frames=args.frames,
        fps=args.fps,
        image_size=parse_size(args.image_size),
        storage=args.storage,
        compressed=args.compressed,
        formats=tuple(f.strip() for f in args.formats.split(",") if f.strip()),
    )
    generate_dataset(args.out, config, overwrite=args.overwrite, workers=args.workers)
    print(f"wrote {args.scenes} scene(s) to {args.out}")
    return 0
