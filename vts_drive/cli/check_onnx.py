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
        "constant K < 3840, ScatterND/ScatterElements without reduction, no data-dependent output shapes, "
        "supported tensor types. Prints each violation (graph, node, op, reason) and exits 1 if there is any.",
    )
    parser.add_argument("folder", type=Path, metavar="DIR", help="folder with the exported .onnx graphs (engines/NAME)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vts_drive.engines.check_onnx import check_onnx_file, default_table, find_graphs, format_violations

    table = default_table()
    violations = []
    for path in find_graphs(args.folder):
        found = check_onnx_file(path, table)
        if not found:
            print(f"{path.name}: OK for {table.label} (opset >= 17, ops, types, static output shapes)")
        violations += found
    if violations:
        print(format_violations(violations))
        graphs = len({violation.graph for violation in violations})
        print(f"{len(violations)} violation(s) in {graphs} graph(s) of {args.folder}")
        return 1
    return 0
