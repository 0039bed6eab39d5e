"""Process memory of a loaded pipeline per backend, each backend in a process of its own:

    python scripts/backend_memory.py --model synthdrive-tiny --mode vts+mod --engines engines/synthdrive-tiny

For each backend: the resident set once the pipeline and the backend's runtime are imported, after
Pipeline.load, after answering a few windows, and its peak; "load" is what loading the model added
(the torch weights, or the exported graphs' sessions), each with its ratio to torch. In one process the
backends would share pages and the allocator's free lists, so each runs in a fresh one. With
--device cuda the GPU memory in use after the windows is added.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import subprocess
import sys

COLUMNS = ("imports_mb", "loaded_mb", "load_mb", "answered_mb", "peak_mb")
# what each backend imports beside the pipeline, counted with the imports rather than the model
RUNTIMES = {
    "torch": [],
    "onnxruntime": ["vts_drive.engines.stages", "vts_drive.engines.onnxruntime_runtime"],
    "tensorrt": ["vts_drive.engines.stages", "vts_drive.engines.tensorrt_runtime"],
}


def measure(args: argparse.Namespace, backend: str) -> dict[str, float]:
    """This process's memory at each step of loading and running the pipeline on `backend`."""
    from vts_drive.bench import moving_texture_windows
    from vts_drive.measure import resident_bytes
    from vts_drive.pipeline import Pipeline
    from vts_drive.prompt import DESCRIPTION_PROMPT, RISK_PROMPT

    for module in RUNTIMES[backend]:
        importlib.import_module(module)
    mb = 2**-20
    figures = {"imports_mb": resident_bytes() * mb}
    overrides = {"mode": args.mode, "backend": backend, "device": args.device}
    if backend != "torch":
        overrides["engines"] = args.engines
    pipeline = Pipeline.load(args.model, overrides)
    figures["loaded_mb"] = resident_bytes() * mb
    figures["load_mb"] = figures["loaded_mb"] - figures["imports_mb"]
    cameras = args.cameras.split(",")
    for item in moving_texture_windows(cameras, args.frames, 1, args.windows, args.image_size):
        pipeline.answer(item.window, [DESCRIPTION_PROMPT, RISK_PROMPT, *item.questions])
    figures["answered_mb"] = resident_bytes() * mb
    figures["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if args.device.startswith("cuda"):
        import torch

        free, total = torch.cuda.mem_get_info(torch.device(args.device))
        figures["gpu_mb"] = (total - free) * mb
    return figures


def table(results: dict[str, dict[str, float]]) -> str:
    """One row per backend, every figure in MB with its ratio to the first backend's."""
    columns = [c for c in (*COLUMNS, "gpu_mb") if all(c in r for r in results.values())]
    reference = next(iter(results.values()))
    rows = [["backend", *(c.removesuffix("_mb") + " MB" for c in columns)]]
    for backend, figures in results.items():
        cells = [f"{figures[c]:.0f}" for c in columns]
        if figures is not reference:
            cells = [f"{cell} (x{figures[c] / reference[c]:.2f})" for cell, c in zip(cells, columns)]
        rows.append([backend, *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synthdrive-tiny")
    parser.add_argument("--mode", default="vts+mod")
    parser.add_argument("--engines", required=True, help="the folder `vts-drive export` wrote for --mode")
    parser.add_argument("--backends", default="torch,onnxruntime", help="torch first: the ratios' reference")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cameras", default="front")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the backend this process measures
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args, args.child)))
        return
    results = {}
    for backend in args.backends.split(","):
        child = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--child", backend], capture_output=True, text=True
        )
        if child.returncode != 0:
            raise SystemExit(f"backend {backend} failed:\n{child.stderr[-2000:]}")
        results[backend] = json.loads(child.stdout.splitlines()[-1])
    print(f"model {args.model}, mode {args.mode}, device {args.device}, {args.windows} windows")
    print(table(results))


if __name__ == "__main__":
    main()
