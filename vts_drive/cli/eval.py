"""`vts-drive eval`: modes compared on DRAMA, LingoQA or synthdrive, resumable, with a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from vts_drive.cli.common import add_pipeline_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="score modes on DRAMA, LingoQA or synthdrive: accuracy next to throughput and memory",
        description="Runs each mode over the benchmark, appending predictions as they are made (a rerun "
        "resumes; changed settings restart that mode), then writes OUT/<mode>/metrics.json, OUT/report.md, "
        "OUT/pareto.png and OUT/report.html (the table, the plot and per sample the frames with true and "
        "predicted boxes and the answers next to the truth). Caption metrics need Java (see docs/evaluation.md).",
    )
    parser.add_argument("benchmark", choices=["drama", "lingoqa", "synth"])
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="DRAMA folder (integrated_output_v2.json), LingoQA folder (val.parquet) or synthdrive folder",
    )
    parser.add_argument("--out", type=Path, required=True, help="results folder")
    parser.add_argument(
        "--modes",
        default="dense,vts,mod,vts+mod",
        help="comma-separated mode specs, e.g. vts[budget=0.3] (default: %(default)s)",
    )
    parser.add_argument(
        "--judge",
        help="Lingo-Judge classifier folder or hub id (LingoQA); without it lingo_judge is not computed",
    )
    parser.add_argument(
        "--limit",
        type=int,
        help="only the first N samples (DRAMA entries, LingoQA segments, synthdrive windows)",
    )
    parser.add_argument(
        "--split",
        default="test",
        help="DRAMA: train | val | test | all (ordered 70/15/15 after filtering) or a file of s3_fileUrl lines (default: %(default)s)",
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=4,
        help="frames per window, DRAMA and synthdrive; LingoQA uses its 5 (default: %(default)s)",
    )
    parser.add_argument(
        "--stride",
        type=int,
        default=4,
        help="synthdrive: frames between windows of a scene (default: %(default)s)",
    )
    parser.add_argument(
        "--cameras", default="front,front_left,front_right", help="synthdrive cameras (default: %(default)s)"
    )
    parser.add_argument(
        "--blind",
        action="store_true",
        help="replace every frame by black: the model's answers without vision, a baseline",
    )
    add_pipeline_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vts_drive.bench import needs_weights, parse_mode_specs
    from vts_drive.cli.common import pipeline_overrides
    from vts_drive.config import resolve_config
    from vts_drive.errors import InputError
    from vts_drive.eval.benchmarks import load_benchmark
    from vts_drive.eval.judge import LingoJudge
    from vts_drive.eval.metrics import require_java
    from vts_drive.eval.runner import report_table, run_eval
    from vts_drive.model.loading import load_model, load_spec, model_folder

    require_java()
    specs = parse_mode_specs(args.modes)
    base = pipeline_overrides(args)
    run = resolve_config(None, base)  # where the model and the judge go
    if args.judge and args.benchmark != "lingoqa":
        raise InputError("--judge applies to lingoqa only")
    judge = LingoJudge(args.judge, device=run.device) if args.judge else None
    cameras = [c.strip() for c in args.cameras.split(",") if c.strip()]
    benchmark = load_benchmark(
        args.benchmark,
        args.data,
        split=args.split,
        frames=args.frames,
        stride=args.stride,
        cameras=cameras,
        judge=judge,
        limit=args.limit,
    )
    load = (
        load_model if needs_weights(specs, base, model_folder(args.model)) else load_spec
    )  # engines alone hold no weights
    model = load(args.model, device=run.device, dtype=run.dtype)
    results = run_eval(benchmark, model, base, specs, args.out, blind=args.blind)
    print(report_table(benchmark, results))
    print(
        f"report: {args.out / 'report.md'}, plot: {args.out / 'pareto.png'}, page: {args.out / 'report.html'}"
    )
    return 0
