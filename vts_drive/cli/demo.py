"""`vts-drive demo`: a generated sample drive through the shipped model, offline, in a few minutes."""

from __future__ import annotations

import argparse
from pathlib import Path

from vts_drive.cli.common import add_pipeline_arguments, pipeline_overrides, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="generate a short synthdrive drive and describe it with the shipped model (offline)",
        description="Generates a few synthdrive scenes (three cameras), slides windows over each, prints a "
        "summary per window next to the scene's ground truth and writes the reports as JSON Lines.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("vts_drive_demo"),
        help="folder for the drive and reports.jsonl (default: %(default)s)",
    )
    parser.add_argument("--scenes", type=positive_int, default=3)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument(
        "--frames", type=positive_int, default=4, help="frames per camera per window (default: %(default)s)"
    )
    parser.add_argument(
        "--stride",
        type=positive_int,
        default=2,
        help="frames between consecutive windows (default: %(default)s)",
    )
    add_pipeline_arguments(parser)
    parser.set_defaults(run=run, mode="vts")  # the fastest mode that keeps dense accuracy (README, Results)


def run(args: argparse.Namespace) -> int:
    from vts_drive.pipeline import Pipeline
    from vts_drive.report import format_report_text
    from vts_drive.synth.bench_windows import window_ends
    from vts_drive.synth.dataset import SynthDataset
    from vts_drive.synth.generate import SynthConfig, generate_dataset

    drive = args.out / "drive"
    generate_dataset(
        drive, SynthConfig(scenes=args.scenes, seed=args.seed, formats=("synth",)), overwrite=True
    )
    dataset = SynthDataset(drive)
    pipeline = Pipeline.load(args.model, pipeline_overrides(args))
    reports_path = args.out / "reports.jsonl"
    reports_path.write_text("")
    windows = 0
    for scene in dataset.scenes:
        print(f"\n=== {scene.scene_id} ===")
        for end in window_ends(scene.frames, args.frames, args.stride):
            report = pipeline.describe(scene.window(end, args.frames, dataset.cameras))
            truth = scene.truth[end]
            print(format_report_text(report))
            print(f"  truth: {truth.description} | risk: {truth.risk_answer}")
            with reports_path.open("a") as out:
                out.write(report.to_json() + "\n")
            windows += 1
    print(
        f"\n{windows} window(s) described with {pipeline.model_name} (mode {pipeline.config.mode}); reports in {reports_path}"
    )
    return 0
