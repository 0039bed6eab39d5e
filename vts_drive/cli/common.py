"""Options every pipeline-running subcommand shares, and how they become configuration overrides
(dotted keys, see vts_drive/config.py); argparse types for numeric flags."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    parser.add_argument(
        "--force",
        action="store_true",
        help=f"start {results} over when it holds the reports of another input, model, mode or settings "
        "(without it such a file is refused, exit 2)",
    )


# pipeline flags that are short for one dotted key of the configuration: argparse dest -> key
FLAG_KEYS = {
    "mode": "mode",
    "backend": "backend",
    "engines": "engines",
    "device": "device",
    "dtype": "dtype",
    "max_new_tokens": "max_new_tokens",
    "keyframe_scorer": "keyframe_scorer",
    "routers": "routers",
    "skip_threshold": "keyframe.skip_threshold",
    "max_keyframes": "keyframe.max_keyframes",
    "keyframe_anchor": "keyframe.anchor",
    "keep_ratio": "mod.keep_ratio",
}


def add_set_argument(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, example: str = "vts.budget=0.3"
) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="settings",
        help=f"set one setting by its dotted key, e.g. {example} (repeat; see vts_drive/config.py); "
        "applied after the other flags",
    )


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and the pipeline flags; each flag but --model, --questions, --free-box and --no-draft
    is short for --set KEY=VALUE, and a flag left out keeps the model's setting, else the default shown."""
    from vts_drive.config import ANCHORS, BACKENDS, MODES, PipelineConfig
    from vts_drive.model.names import default_model

    defaults = PipelineConfig()
    group = parser.add_argument_group("model and pipeline")
    group.add_argument(
        "--model",
        default=default_model(),
        help="shipped model name, checkpoint folder or hub id (default: %(default)s)",
    )
    group.add_argument("--mode", help=f"{' | '.join(MODES)} (default: {defaults.mode})")
    group.add_argument("--backend", help=f"{' | '.join(BACKENDS)} (default: {defaults.backend})")
    group.add_argument(
        "--engines",
        metavar="DIR",
        help="graphs written by `vts-drive export`, run by the onnxruntime and tensorrt backends",
    )
    group.add_argument("--device", default=defaults.device, help="cpu | cuda (default: %(default)s)")
    group.add_argument("--dtype", help="fp32 | fp16 | bf16 (default: fp32 on CPU, bf16/fp16 on CUDA)")
    group.add_argument(
        "--questions", type=Path, default=None, help="file with one question per line (or a JSON list)"
    )
    group.add_argument("--max-new-tokens", type=int, help=f"(default: {defaults.max_new_tokens})")
    group.add_argument(
        "--keyframe-scorer", metavar="DIR", help="folder with keyframe_scorer.* (default: the model's folder)"
    )
    group.add_argument(
        "--routers", metavar="DIR", help="folder with mod_router.* (default: the model's folder)"
    )
    group.add_argument(
        "--skip-threshold",
        type=finite_float,
        metavar="P",
        help="frames the keyframe CNN scores below P are not encoded "
        f"(keyframe.skip_threshold; default: the model's setting, else {defaults.keyframe.skip_threshold})",
    )
    group.add_argument(
        "--max-keyframes",
        type=int,
        metavar="N",
        help="keyframes per camera per window, the anchor included "
        f"(keyframe.max_keyframes; default: the model's setting, else {defaults.keyframe.max_keyframes})",
    )
    group.add_argument(
        "--keyframe-anchor",
        choices=ANCHORS,
        help="each camera's frame that is always a keyframe, kept whole "
        f"(keyframe.anchor; default: the model's setting, else {defaults.keyframe.anchor})",
    )
    group.add_argument(
        "--keep-ratio",
        type=finite_float,
        metavar="R",
        help="share of each frame's visual tokens a routed layer computes "
        f"(mod.keep_ratio; default: the model's setting, else {defaults.mod.keep_ratio})",
    )
    group.add_argument(
        "--free-box",
        action="store_true",
        help="decode the risk box without the grammar that keeps it four ordered numbers in [0, 1] "
        "(box_grammar=false)",
    )
    group.add_argument(
        "--no-draft",
        action="store_true",
        help="decode without earlier answers as drafts; the answers are the same, "
        "decoding takes more steps (draft=false)",
    )
    add_set_argument(group)


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


def flag_overrides(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, object]:
    """The dotted settings the given flags (argparse dest -> key) and --set items ask for; a bad
    value is an InputError naming its flag."""
    from vts_drive.config import check_setting, parse_assignment

    overrides: dict[str, object] = {}
    for dest, key in flags.items():
        value = getattr(args, dest)
        if value is not None:
            check_setting(key, value, source=f"--{dest.replace('_', '-')}")
            overrides[key] = value
    for item in getattr(args, "settings", []):
        key, value = parse_assignment(item, "--set")
        check_setting(key, value, source=f"--set {item}")
        overrides[key] = value
    return overrides


def section_settings(args: argparse.Namespace, section: str, flags: dict[str, str]) -> Any:
    """The `section` (keyframe or mod) a training command writes: its flags and --set items over
    the defaults."""
    from vts_drive.config import resolve_config

    overrides = flag_overrides(args, flags)
    for key in overrides:
        if not key.startswith(f"{section}."):
            raise InputError(f"--set {key}: this command writes the {section}.* settings only")
    return getattr(resolve_config(None, overrides), section)


def pipeline_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The configuration overrides the pipeline flags ask for, checked against the defaults (so a
    bad value stops the command before a model loads)."""
    from vts_drive.config import resolve_config

    overrides: dict[str, object] = {}
    if args.questions is not None:
        overrides["questions"] = read_questions(args.questions)
    if args.free_box:
        overrides["box_grammar"] = False
    if args.no_draft:
        overrides["draft"] = False
    overrides |= flag_overrides(args, FLAG_KEYS)  # --set last: it wins over the flags
    resolve_config(None, overrides, source="options")
    return overrides
