"""Modes compared on a benchmark: predictions per mode, metrics, one report table and a plot.

    R/<mode>/config.json        what produced the predictions (model files, mode, pipeline
                                settings, data): a mismatch starts that mode afresh
    R/<mode>/predictions.jsonl  one line per window, appended as it is made, with the
                                window's time, visual tokens and peak memory
    R/<mode>/metrics.json       accuracy and efficiency over the finished windows
    R/report.md, R/pareto.png   every mode side by side, ratios to dense
    R/report.html               the table and plot, and per sample the frames with true and
                                predicted boxes and every mode's answers next to the truth

A rerun resumes each mode after its last finished window. A last prediction line that is not a
record (a run killed while writing it) is dropped, saying so, and its window computed again;
any other such line, or a key given twice, stops the run: foreign or doubled lines would mix
into the metrics. The model is loaded once and shared by every mode's pipeline.

Efficiency figures come from the prediction lines, so a resumed run reports the same kind of
numbers as one that ran through: reports_per_s is windows per second of pipeline time (frames
already decoded, one warm-up window per run not counted), vision_tokens the visual tokens
entering the LLM per window, peak_mem_mb the most memory one of the mode's windows allocated
beyond what was allocated just before it (measure.PeakMemory: the CUDA allocator's peak on GPU,
the C heap on CPU), so each mode is charged its own memory whatever ran before it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vts_drive.bench import ModeSpec, answer_function, plot_tradeoff
from vts_drive.config import Overrides
from vts_drive.errors import InputError
from vts_drive.eval.benchmarks import Benchmark, EvalItem, file_identity, sample_views
from vts_drive.eval.files import finite_number
from vts_drive.eval.html_report import MAX_SAMPLES, write_html_report
from vts_drive.measure import PeakMemory, synchronize
from vts_drive.model.loading import ModelSpec
from vts_drive.pipeline import Pipeline, PipelineConfig, WindowAnswers
from vts_drive.window import FrameWindow

EFFICIENCY_METRICS = ("reports_per_s", "vision_tokens", "peak_mem_mb")
RECORD_NUMBERS = ("seconds", "vision_tokens", "peak_mem_mb")  # with "key", what every prediction line holds
Answer = Callable[[FrameWindow, list[str]], WindowAnswers]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def blank(window: FrameWindow) -> FrameWindow:
    """The same window with black frames: what the model answers without seeing anything."""
    return FrameWindow(
        window.cameras,
        [[np.zeros_like(image) for image in images] for images in window.images],
        window.stamps_ns,
    )


def folder_identity(folder: Path | str | None) -> dict | None:
    """The files directly in a model folder, each with size and modification time."""
    if folder is None:
        return None
    folder = Path(folder)
    return {
        "folder": str(folder.resolve()),
        "files": {p.name: file_identity(p)[1:] for p in sorted(folder.iterdir()) if p.is_file()},
    }


def fingerprint(
    model: ModelSpec, spec: ModeSpec, config: PipelineConfig, benchmark: Benchmark, blind: bool
) -> dict:
    """Everything that decides a mode's predictions, as JSON."""
    return json.loads(
        json.dumps(
            {
                "benchmark": benchmark.name,
                "data": benchmark.identity,
                "model": folder_identity(model.folder),
                "routers": folder_identity(config.routers or None),
                "keyframe_scorer": folder_identity(config.keyframe_scorer or None),
                "mode": spec.label,
                "pipeline": asdict(config),
                "blind": blind,
            }
        )
    )


def parse_record(line: bytes) -> dict | None:
    """A prediction line as its record, or None when it is not one: not UTF-8 JSON, not an object, or
    without a string "key" and the finite numbers every line holds."""
    try:
        record = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8
        return None
    if not isinstance(record, dict) or not isinstance(record.get("key"), str):
        return None
    return record if all(finite_number(record.get(name)) for name in RECORD_NUMBERS) else None


def read_records(path: Path) -> dict[str, dict]:
    """Prediction lines by key. A last line that is not a record was cut short by a kill: it is
    dropped from the file, saying so. Any other line that is not a record, or repeats a key, is an
    InputError: it was not written by this mode's run, and scoring it would mix results."""
    if not path.is_file():
        return {}
    lines = path.read_bytes().splitlines()
    records, line_of = {}, {}
    for number, line in enumerate(lines, 1):
        record = parse_record(line)
        if record is None and number == len(lines):
            log(
                f"{path} line {number} is not a finished prediction; dropped (a run killed while writing it), its window is computed again"
            )
            path.write_bytes(b"".join(kept + b"\n" for kept in lines[:-1]))
            break
        if record is None:
            raise InputError(
                f"{path} line {number} is not a prediction record (a JSON object with key and "
                f"{', '.join(RECORD_NUMBERS)}); delete the file to recompute this mode"
            )
        if record["key"] in line_of:
            raise InputError(
                f"{path} line {number} repeats the key of line {line_of[record['key']]} ({record['key']!r}); "
                "delete the file to recompute this mode"
            )
        records[record["key"]], line_of[record["key"]] = record, number
    return records


def mode_folder_name(label: str) -> str:
    """A mode spec as one folder name: settings may hold paths (engines=DIR)."""
    return label.replace("/", "_")


def open_mode(folder: Path, stamp: dict, label: str) -> dict[str, dict]:
    """Finished records of a mode, or none when what produced them differs from `stamp`."""
    config_path, predictions = folder / "config.json", folder / "predictions.jsonl"
    stored = json.loads(config_path.read_text()) if config_path.is_file() else None
    if stored == stamp:
        return read_records(predictions)
    if stored is not None or predictions.exists():
        changed = sorted(k for k in {*stamp, *(stored or {})} if (stored or {}).get(k) != stamp.get(k))
        log(
            f"eval {label}: {', '.join(changed)} changed since the stored predictions; starting this mode afresh"
        )
        for name in ("predictions.jsonl", "predictions.csv", "metrics.json"):
            (folder / name).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(stamp, indent=1) + "\n")
    return {}


def predict(
    answer: Answer,
    pipeline: Pipeline,
    benchmark: Benchmark,
    records: dict[str, dict],
    path: Path,
    label: str,
    blind: bool,
) -> int:
    """Answers every item without a record, appending a line per window; returns windows skipped
    because their frames could not be read."""
    pending = [item for item in benchmark.items if item.key not in records]
    skipped, warm = 0, False
    with path.open("a") as out:
        for item in tqdm(
            pending,
            total=len(benchmark.items),
            initial=len(benchmark.items) - len(pending),
            desc=f"eval {label}",
            unit="window",
        ):
            try:
                window = item.load()
            except InputError as error:
                log(f"eval {label}: {item.key} skipped: {error}")
                skipped += 1
                continue
            window = blank(window) if blind else window
            if not warm:  # first-call costs (allocations, lazy init) stay out of the figures
                answer(window, item.prompts)
                pipeline.cold_start()
                warm = True
            record = measure(answer, pipeline, item, window)
            record.update(benchmark.record(item, record.pop("answers")))
            records[item.key] = record
            out.write(json.dumps(record) + "\n")
            out.flush()
    return skipped


def measure(answer: Answer, pipeline: Pipeline, item: EvalItem, window: FrameWindow) -> dict:
    with PeakMemory(pipeline.device) as peak:
        start = time.perf_counter()
        result = answer(window, item.prompts)
        synchronize(pipeline.device)
        seconds = time.perf_counter() - start
    return {
        "key": item.key,
        "answers": result.answers,
        "seconds": seconds,
        "vision_tokens": result.tokens["vision_kept"],
        "peak_mem_mb": peak.mb,
    }


def summarize(benchmark: Benchmark, records: dict[str, dict]) -> dict:
    done = [records[item.key] for item in benchmark.items if item.key in records]
    metrics = benchmark.score({record["key"]: record for record in done})
    seconds = sum(record["seconds"] for record in done)
    metrics["reports_per_s"] = len(done) / seconds if seconds else None
    metrics["vision_tokens"] = sum(record["vision_tokens"] for record in done) / len(done) if done else None
    metrics["peak_mem_mb"] = max((record["peak_mem_mb"] for record in done), default=None)
    return metrics


def run_eval(
    benchmark: Benchmark,
    model: ModelSpec,
    base: Overrides,
    specs: list[ModeSpec],
    out: Path,
    blind: bool = False,
) -> dict[str, dict]:
    """Every mode on the benchmark's items, resuming finished work; writes the report and plot."""
    if not benchmark.items:
        raise InputError(f"{benchmark.name}: no samples to evaluate (skipped: {benchmark.skipped or 'none'})")
    out = Path(out)
    results: dict[str, dict] = {}
    records_by_mode: dict[str, dict[str, dict]] = {}
    for spec in specs:
        pipeline = Pipeline(model, spec.overrides(base))
        answer = answer_function(spec, pipeline)
        folder = out / mode_folder_name(spec.label)
        records = open_mode(folder, fingerprint(model, spec, pipeline.config, benchmark, blind), spec.label)
        unreadable = predict(
            answer, pipeline, benchmark, records, folder / "predictions.jsonl", spec.label, blind
        )
        metrics = summarize(benchmark, records)
        done = [records[item.key] for item in benchmark.items if item.key in records]
        benchmark.export(done, folder)
        summary = {
            "benchmark": benchmark.name,
            "mode": spec.label,
            "model": model.name,
            "blind": blind,
            "skipped": {**benchmark.skipped, "unreadable_frames": unreadable},
            "metrics": metrics,
        }
        (folder / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
        results[spec.label], records_by_mode[spec.label] = metrics, records
    write_report(out, benchmark, results, records_by_mode, model.name, blind)
    return results


def format_value(value: float | int | None) -> str:
    if value is None:
        return "n/c"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def report_rows(benchmark: Benchmark, results: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """The report table's header and a row per mode, each figure with its ratio to dense (or the first mode)."""
    reference = results.get("dense") or next(iter(results.values()))
    columns = ["n", *benchmark.accuracy_metrics, *EFFICIENCY_METRICS]
    rows = []
    for label, metrics in results.items():
        cells = [label]
        for name in columns:
            value, base = metrics.get(name), reference.get(name)
            ratio = (
                f" (x{value / base:.2f})"
                if metrics is not reference and name != "n" and value is not None and base
                else ""
            )
            cells.append(format_value(value) + ratio)
        rows.append(cells)
    return ["mode", *columns], rows


def report_table(benchmark: Benchmark, results: dict[str, dict]) -> str:
    """The report table in Markdown."""
    columns, rows = report_rows(benchmark, results)
    return "\n".join(
        [
            "| " + " | ".join(columns) + " |",
            "|---" * len(columns) + "|",
            *("| " + " | ".join(row) + " |" for row in rows),
        ]
    )


def write_report(
    out: Path,
    benchmark: Benchmark,
    results: dict[str, dict],
    records_by_mode: dict[str, dict[str, dict]],
    model_name: str,
    blind: bool,
) -> None:
    """report.md and pareto.png, then report.html from the prediction lines of every mode."""
    reference = "dense" if "dense" in results else next(iter(results))
    note = (
        f"model {model_name}; ratios are to {reference}; n/c: not computed"
        + ("; lingo_judge needs --judge" if benchmark.name == "lingoqa" else "")
        + ("; blind: every frame replaced by black" if blind else "")
    )
    title = f"{benchmark.name} evaluation"
    (out / "report.md").write_text(
        "\n".join(
            [
                f"# {title}",
                "",
                note,
                "",
                report_table(benchmark, results),
                "",
                "![accuracy vs throughput](pareto.png)",
                "",
            ]
        )
    )
    metric = benchmark.primary_metric
    plotted = {
        label: m
        for label, m in results.items()
        if m.get(metric) is not None and m.get("reports_per_s") is not None
    }
    plot_tradeoff({"modes": plotted}, out / "pareto.png", metric, "reports_per_s")
    views, total = sample_views(benchmark, records_by_mode, MAX_SAMPLES)
    notes = [note, *(["the model saw black frames; the samples show the real ones"] if blind else [])]
    write_html_report(
        out / "report.html",
        title,
        notes,
        report_rows(benchmark, results),
        out / "pareto.png",
        list(results),
        views,
        total,
    )
