"""`vts-drive build-engine engines/NAME`: TensorRT engines from the exported ONNX graphs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build-engine",
        help="build TensorRT engines from exported ONNX graphs (on the vehicle computer)",
        description="Builds one TensorRT engine per graph of the folder's manifest.json with the TensorRT Python "
        "API (10.x or 11.x), using the manifest's optimisation profiles and a timing cache in the folder, and "
        "records the TensorRT version and GPU compute capability in the manifest. Needs TensorRT and a CUDA GPU.",
    )
    parser.add_argument("folder", type=Path, metavar="engines/NAME", help="export folder with manifest.json")
    parser.add_argument(
        "--precision",
        choices=("fp16", "bf16", "fp32"),
        default=None,
        help="engine precision (default: the dtype the graphs were exported in)",
    )
    parser.add_argument(
        "--workspace-gb", type=float, default=4.0, help="builder workspace in GiB (default: %(default)s)"
    )
    parser.add_argument("--graph", action="append", default=None, help="build only this graph (repeat)")
    parser.add_argument("--force", action="store_true", help="rebuild engines that are up to date")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vts_drive.engines.tensorrt_build import build_engines

    plans = build_engines(args.folder, args.precision, args.workspace_gb, args.graph, args.force)
    for plan in plans:
        print(plan)
    return 0
