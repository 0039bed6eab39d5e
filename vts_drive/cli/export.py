"""`vts-drive export`: a model's pipeline stages for one mode as ONNX graphs, with manifest.json."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export the pipeline's stages as ONNX graphs for the onnxruntime and tensorrt backends",
        description="Writes the keyframe scorer (modes with vts), the vision tower with projector and saliency, "
        "and the LLM as embed, prefill (mixture-of-depths routing inside for modes with mod), decode and head "
        "graphs with explicit KV-cache inputs and outputs, plus manifest.json (model hash, mode, r, opset, "
        "profile shapes, tool versions). Each graph is checked against TensorRT's ONNX support; the command "
        "exits 1 if any violates it. A rerun resumes an interrupted export.",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="shipped model name, checkpoint folder or hub id (default: synthdrive-tiny when shipped, "
        "else the real checkpoint's hub id)",
    )
    parser.add_argument(
        "--mode",
        default="dense",
        help="dense | newest | vts | prumerge | prumerge+ | mod | vts+mod (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="engines/NAME", help="folder to write the graphs into"
    )
    parser.add_argument(
        "--opset", type=int, default=18, help="ONNX opset, 17 or above (default: %(default)s)"
    )
    parser.add_argument(
        "--dtype", default=None, help="fp32 | fp16 | bf16: the graphs' float type (default: fp32)"
    )
    parser.add_argument(
        "--keep-ratio", type=float, default=None, help="MoD r to export (default: the routers' own)"
    )
    group = parser.add_argument_group(
        "largest window (TensorRT optimisation profiles; the pipeline refuses a larger one on any backend)"
    )
    group.add_argument(
        "--cameras",
        default=None,
        help="camera names, comma-separated: their number and their prompt markers' tokens "
        "(default: front,front_left,front_right)",
    )
    group.add_argument("--frames", type=int, default=8, help="frames per camera (default: %(default)s)")
    group.add_argument(
        "--prompts",
        type=int,
        default=None,
        help="prompts per window (default: description, risk, the model's questions and synthdrive's)",
    )
    group.add_argument(
        "--prompt-tokens",
        type=int,
        default=None,
        help="tokens of the longest prompt (default: the longest of the default prompts)",
    )
    group.add_argument(
        "--new-tokens", type=int, default=None, help="tokens of the longest answer (default: max_new_tokens)"
    )
    parser.add_argument(
        "--force", action="store_true", help="export every graph again, even ones already written"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vts_drive.engines.check_onnx import default_table, format_violations
    from vts_drive.engines.export import ExportShapes, export_engines
    from vts_drive.model.names import default_model

    model = args.model or default_model()
    shapes = ExportShapes(
        frames=args.frames, prompts=args.prompts, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens
    )
    if args.cameras is not None:
        shapes.cameras = [camera.strip() for camera in args.cameras.split(",") if camera.strip()]
    manifest, violations = export_engines(
        model, args.mode, args.out, args.opset, shapes, args.dtype, args.keep_ratio, args.force
    )
    for graph in manifest.graphs:
        print(f"{args.out / graph.file}: {len(graph.inputs)} inputs, {len(graph.outputs)} outputs")
    if violations:
        print(format_violations(violations))
        print(
            f"{len(violations)} violation(s) of {default_table().label}'s ONNX support; "
            "ONNX Runtime still runs the graphs"
        )
        return 1
    print(
        f"{len(manifest.graphs)} graphs for mode {manifest.mode} in {args.out}, OK for {default_table().label}"
    )
    return 0
