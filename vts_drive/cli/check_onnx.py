"""`vts-drive check-onnx DIR`: static TensorRT checks of every exported ONNX graph in DIR."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-onnx",
        help="check exported ONNX graphs against TensorRT's ONNX support, without TensorRT",
        description="Checks every *.onnx in DIR against TensorRT's ONNX operator table (kept in the package "
        "with the TensorRT version it describes) and the runtime's rules: opset >= 17, TopK sorted with a "
        "K < 3840 (a K computed from shapes is bounded with the profiles in DIR/manifest.json), "
        "ScatterND/ScatterElements without reduction, no data-dependent output shapes, supported tensor types. "
        "Prints each violation (graph, node, op, reason) and exits 1 if there is any.",
    )
    parser.add_argument(
        "folder", type=Path, metavar="DIR", help="folder with the exported .onnx graphs (engines/NAME)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vts_drive.engines.check_onnx import check_onnx_file, default_table, find_graphs, format_violations
    from vts_drive.engines.manifest import MANIFEST_NAME, read_manifest

    table = default_table()
    paths = find_graphs(args.folder)
    specs = {}  # graph file -> its manifest entry, whose profile max shapes bound a TopK K computed from shapes
    if (args.folder / MANIFEST_NAME).is_file():
        specs = {spec.file: spec for spec in read_manifest(args.folder).graphs}
    violations = []
    for path in paths:
        found = check_onnx_file(path, table, specs[path.name].max_shapes() if path.name in specs else None)
        if not found:
            print(f"{path.name}: OK for {table.label} (opset >= 17, ops, types, static output shapes)")
        violations += found
    if violations:
        print(format_violations(violations))
        failing = len({violation.graph for violation in violations})
        print(f"{len(violations)} violation(s) in {failing} graph(s) of {args.folder}")
        return 1
    return 0
