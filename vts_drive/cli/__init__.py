"""The `vts-drive` command: one module per subcommand.

Each module in SUBCOMMANDS defines `register(subparsers)`, which adds its
parser and sets `run=<function(args) -> int>`. Modules import torch and other
heavy libraries inside `run`, so `vts-drive --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vts_drive import __version__
from vts_drive.errors import EXIT_INPUT_ERROR, InputError

SUBCOMMANDS = [
    "demo",
    "describe",
    "bench",
    "eval",
    "score",
    "synth",
    "train_synth",
    "train_keyframe",
    "train_router",
    "export",
    "check_onnx",
    "build_engine",
    "node",
    "replay",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vts-drive",
        description="Multi-camera driving VLM: scene descriptions and risk QA, made fast by "
        "keyframes, video token sparsification and mixture-of-depths.",
    )
    parser.add_argument("--version", action="version", version=f"vts_drive {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"vts_drive.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except InputError as error:
        print(f"vts-drive {args.command}: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print(f"vts-drive {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
