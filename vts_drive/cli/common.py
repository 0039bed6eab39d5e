"""Options every pipeline-running subcommand shares, and how they become a PipelineConfig;
the routing options the training commands share; argparse types for numeric flags."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Callable

from vts_drive.errors import InputError


def _number(text: str, convert: type, accept: Callable[[float], bool], wanted: str) -> float | int:
    """`text` as int or float when `accept` holds for it, else an argparse error naming what is wanted."""
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not accept(value):
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number (nan and inf slip past range checks such as `x < 0`)."""
    return _number(text, float, lambda value: True, "a finite number")


def positive_float(text: str) -> float:
    """argparse type: a positive finite number (frame rates, replay rates, timeouts)."""
    return _number(text, float, lambda value: value > 0, "a positive finite number")


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (tolerances, where 0 means exact)."""
    return _number(text, float, lambda value: value >= 0, "a finite number >= 0")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (frames, strides, scenes)."""
    return _number(text, int, lambda value: value >= 1, "a whole number >= 1")


def add_force_argument(parser: argparse.ArgumentParser, results: str) -> None:
    parser.add_argument("--force", action="store_true",
                        help=f"start {results} over when it holds the reports of another input, model, mode or settings "
                        "(without it such a file is refused, exit 2)")


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    from vts_drive.model.loading import default_model

    group = parser.add_argument_group("model and pipeline")
    group.add_argument("--model", default=default_model(), help="shipped model name, checkpoint folder or hub id (default: %(default)s)")
    group.add_argument("--mode", default="dense", help="dense | newest | vts | prumerge | prumerge+ | mod | vts+mod (default: %(default)s)")
    group.add_argument("--backend", default="torch", help="torch | onnxruntime | tensorrt (default: %(default)s)")
    group.add_argument("--engines", type=Path, default=None, metavar="DIR",
                       help="graphs written by `vts-drive export`, run by the onnxruntime and tensorrt backends")
    group.add_argument("--device", default="cpu", help="cpu | cuda (default: %(default)s)")
    group.add_argument("--dtype", default=None, help="fp32 | fp16 | bf16 (default: fp32 on CPU, bf16/fp16 on CUDA)")
    group.add_argument("--questions", type=Path, default=None, help="file with one question per line (or a JSON list)")
    group.add_argument("--max-new-tokens", type=int, default=48)
    group.add_argument("--keyframe-scorer", type=Path, default=None, metavar="DIR",
                       help="folder with keyframe_scorer.* (default: the model's folder)")
    group.add_argument("--routers", type=Path, default=None, metavar="DIR",
                       help="folder with mod_router.* (default: the model's folder)")
    group.add_argument("--skip-threshold", type=finite_float, default=None, metavar="P",
                       help="frames the keyframe CNN scores below P are not encoded (default: the scorer's setting)")
    group.add_argument("--max-keyframes", type=int, default=None, metavar="N",
                       help="keyframes per camera per window, the anchor included (default: the scorer's setting)")
    group.add_argument("--keyframe-anchor", choices=["first", "newest"], default=None,
                       help="each camera's frame that is always a keyframe, kept whole (default: the scorer's setting)")
    group.add_argument("--keep-ratio", type=finite_float, default=None, metavar="R",
                       help="share of each frame's visual tokens a routed layer computes (default: the routers' setting)")
    group.add_argument("--free-box", action="store_true",
                       help="decode the risk box without the grammar that keeps it four ordered numbers in [0, 1]")


def read_questions(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"questions file {path} does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json":
        try:
            questions = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"questions file {path} is not valid JSON: {error}") from None
        if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
            raise InputError(f"questions file {path} must hold a JSON list of strings")
    else:
        questions = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [q.strip() for q in questions if q.strip()]


def pipeline_config(args: argparse.Namespace):
    from vts_drive.pipeline import PipelineConfig

    config = PipelineConfig(
        mode=args.mode,
        backend=args.backend,
        device=args.device,
        dtype=args.dtype,
        max_new_tokens=args.max_new_tokens,
        engines=str(args.engines) if args.engines is not None else None,
        keyframe_scorer=str(args.keyframe_scorer) if args.keyframe_scorer is not None else None,
        routers=str(args.routers) if args.routers is not None else None,
        keyframe_skip_threshold=args.skip_threshold,
        max_keyframes=args.max_keyframes,
        keyframe_anchor=args.keyframe_anchor,
        mod_keep_ratio=args.keep_ratio,
        box_grammar=not args.free_box,
    )
    if args.questions is not None:
        config.questions = read_questions(args.questions)
    config.check()
    return config


def routing_config(keep_ratio: float, layers: str | None):
    """--r and --layers of the router-training commands -> ModConfig, with a clear error for bad values."""
    from vts_drive.mod.routing import ModConfig

    if not 0.0 < keep_ratio <= 1.0:
        raise InputError(f"--r must be in (0, 1], got {keep_ratio}")
    try:
        indices = [int(i) for i in layers.split(",")] if layers else []
    except ValueError:
        raise InputError(f"--layers takes comma-separated layer indices, got {layers!r}") from None
    return ModConfig(keep_ratio=keep_ratio, layers=indices)
