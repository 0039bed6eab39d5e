"""`vts-drive score`: metrics for an existing predictions file, from this project or any other system."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score a predictions file against DRAMA or LingoQA",
        description="LingoQA: the official predictions.csv (question_id, segment_id, answer; question optional), "
        "scored with Lingo-Judge (--judge) and the caption metrics (these need Java; --judge-only skips them). "
        "DRAMA: JSON Lines with key (the entry's s3_fileUrl), caption and bbox ([x1, y1, x2, y2] normalised, "
        "or null), as `vts-drive eval drama` writes them.",
    )
    parser.add_argument("--benchmark", choices=["drama", "lingoqa"], required=True)
    parser.add_argument("--predictions", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="DRAMA folder or LingoQA folder")
    parser.add_argument("--judge", help="Lingo-Judge classifier folder or hub id (LingoQA)")
    parser.add_argument(
        "--judge-only",
        action="store_true",
        help="LingoQA: Lingo-Judge alone, without the caption metrics, so Java is not needed",
    )
    parser.add_argument(
        "--split", default="test", help="DRAMA split the predictions are for (default: %(default)s)"
    )
    parser.add_argument("--device", default="cpu", help="device for the judge (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the metrics here")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from functools import partial

    from vts_drive.errors import InputError
    from vts_drive.eval import drama, lingoqa
    from vts_drive.eval.judge import LingoJudge
    from vts_drive.eval.metrics import require_java
    from vts_drive.eval.runner import format_value

    if args.judge_only and not (args.benchmark == "lingoqa" and args.judge):
        raise InputError("--judge-only needs --benchmark lingoqa and --judge")
    if not args.judge_only:
        require_java()
    if args.benchmark == "lingoqa":
        questions = lingoqa.load_lingoqa(args.data)
        predictions = lingoqa.read_predictions(args.predictions)
        judge = LingoJudge(args.judge, device=args.device) if args.judge else None
        expected = {q.key for q in questions}
        score = partial(lingoqa.score_lingoqa, questions, predictions, judge, captions=not args.judge_only)
    else:
        if args.judge:
            raise InputError("--judge applies to lingoqa only")
        data = drama.load_drama(args.data, args.split)
        if data.skipped:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(data.skipped.items()))
            print(
                f"vts-drive score: {sum(data.skipped.values())} DRAMA entries skipped ({reasons})",
                file=sys.stderr,
            )
        samples = data.samples
        predictions = drama.read_predictions(args.predictions)
        expected = {s.key for s in samples}
        score = partial(drama.score_drama, samples, predictions)
    matched = expected & set(predictions)
    if not matched:
        raise InputError(f"no prediction in {args.predictions} matches a sample of {args.data}")
    if len(matched) < len(expected) or len(matched) < len(predictions):
        print(
            f"vts-drive score: {len(matched)} of {len(expected)} samples have a prediction; "
            f"{len(predictions) - len(matched)} prediction(s) match no sample",
            file=sys.stderr,
        )
    metrics = score()
    for name, value in metrics.items():
        print(f"{name:12s} {format_value(value)}")
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=1) + "\n")
    return 0
