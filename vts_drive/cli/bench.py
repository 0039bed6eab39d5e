"""`vts-drive bench`: modes compared on the same windows in one process, ratios to dense."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vts_drive.cli.common import add_pipeline_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="compare modes on the same windows: stage times, FLOPs, memory, accuracy",
        description="Runs each mode on the same stream of windows in one process and prints every figure "
        "with its ratio to dense. Modes may carry settings for sweeps: vts[budget=0.3], mod[r=0.1], "
        "mod[routing=random], vts+mod[skip=0.3]; `naive` is plain transformers usage.",
    )
    parser.add_argument(
        "--modes", default="dense,vts,prumerge", help="comma-separated mode specs (default: %(default)s)"
    )
    parser.add_argument("--data", type=Path, help="synthdrive folder (windows with ground truth)")
    parser.add_argument(
        "--arch",
        help="build this architecture with random weights instead of loading --model (e.g. llava-onevision-qwen2-0.5b)",
    )
    parser.add_argument(
        "--random-weights", action="store_true", help="required with --arch: accuracy figures are meaningless"
    )
    parser.add_argument("--windows", type=int, default=20, help="windows per mode (default: %(default)s)")
    parser.add_argument(
        "--frames", type=int, default=4, help="frames per camera per window (default: %(default)s)"
    )
    parser.add_argument(
        "--stride",
        type=int,
        default=1,
        help="frames between consecutive windows of a stream (default: %(default)s)",
    )
    parser.add_argument("--cameras", default="front,front_left,front_right")
    parser.add_argument(
        "--image-size",
        type=int,
        default=384,
        help="frame size of the random-weights stream (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="write an accuracy-vs-cost plot here (PNG)")
    add_pipeline_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from vts_drive.bench import (
        format_table,
        moving_texture_windows,
        needs_weights,
        parse_mode_specs,
        plot_tradeoff,
        run_bench,
    )
    from vts_drive.cli.common import pipeline_overrides
    from vts_drive.config import resolve_config
    from vts_drive.errors import InputError
    from vts_drive.model.loading import load_model, load_spec, model_folder
    from vts_drive.pipeline import Pipeline

    specs = parse_mode_specs(args.modes)
    base = pipeline_overrides(args)
    run = resolve_config(None, base)  # where the model goes: the run's device and dtype
    cameras = [c.strip() for c in args.cameras.split(",") if c.strip()]
    if args.arch:
        if not args.random_weights:
            raise InputError("--arch builds a model with random weights: add --random-weights to confirm")
        from vts_drive.model.architectures import random_model

        model = random_model(args.arch, device=run.device, dtype=run.dtype)
    else:
        load = (
            load_model if needs_weights(specs, base, model_folder(args.model)) else load_spec
        )  # engines alone hold no weights
        model = load(args.model, device=run.device, dtype=run.dtype)
    if args.data:
        from vts_drive.synth.bench_windows import synth_bench_windows

        windows = synth_bench_windows(args.data, cameras, args.frames, args.stride, args.windows)
    elif args.arch:
        windows = moving_texture_windows(cameras, args.frames, args.stride, args.windows, args.image_size)
    else:
        raise InputError("give --data (a synthdrive folder) or --arch NAME --random-weights")
    results = run_bench(lambda config: Pipeline(model, config), base, specs, windows)
    results = {
        "device": torch.cuda.get_device_name(run.device)
        if run.device.startswith("cuda")
        else f"cpu ({torch.get_num_threads()} threads)",
        "model": model.name,
        "backend": run.backend,
        "windows": len(windows),
        "frames": args.frames,
        "stride": args.stride,
        "cameras": cameras,
        **results,
    }
    print(format_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.plot:
        plot_tradeoff(results, args.plot, "qa_exact_match" if args.data else "reports_per_s", "prefill_ms")
    return 0
