"""Every mode on the same windows in one process: stage times, FLOPs, memory and accuracy,
each with its ratio to dense.

A mode spec is a pipeline mode, `naive` (plain transformers usage, see naive.py),
or either with settings in brackets, dotted keys of the configuration (config.py)
or their short names (config.ALIASES), for sweeps and ablations:
    dense, vts, vts[vts.budget=0.3], mod[mod.keep_ratio=0.1], mod[routing=random],
    vts+mod[skip=0.3], vts+mod[backend=onnxruntime,engines=engines/NAME] (the exported graphs next to torch),
    vts+mod[draft=false] (decoding without earlier answers as drafts)
Each mode first runs one warm-up window and forgets it (frame cache, earlier answers),
so every mode sees the same stream from a cold start; then the modes take turns window by
window, so a machine whose speed drifts during the run moves all of them alike.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from vts_drive.config import ALIASES, MODES, Overrides, flatten, resolve_config, setting_keys
from vts_drive.errors import InputError
from vts_drive.flops import projector_flops, siglip_flops
from vts_drive.generation import GenerationMeter
from vts_drive.keyframe.scorer import scorer_flops
from vts_drive.measure import PeakMemory
from vts_drive.naive import answer_naively
from vts_drive.pipeline import Pipeline, WindowAnswers
from vts_drive.prompt import DESCRIPTION_PROMPT, RISK_PROMPT
from vts_drive.report import parse_risk
from vts_drive.scoring import box_iou, cider, exact_match
from vts_drive.window import FrameWindow

_SPEC = re.compile(r"^([\w+]+)(?:\[(.*)\])?$")


@dataclass
class WindowTruth:
    answers: list[str]  # one per question
    risk_bbox: list[float] | None  # normalised, front camera; None when nothing is a risk
    risk_caption: str
    risk_object: str | None = None  # the object the risk box belongs to
    kinds: list[str] | None = (
        None  # per question: "present" or "temporal" (needs the window's past); None: all present
    )

    def kind(self, question: int) -> str:
        return self.kinds[question] if self.kinds else "present"


@dataclass
class BenchWindow:
    window: FrameWindow
    questions: list[str]
    truth: WindowTruth | None = None  # None: no accuracy (random weights)


@dataclass
class ModeSpec:
    label: str
    mode: str  # a pipeline mode or "naive"
    settings: dict[str, str] = field(default_factory=dict)  # dotted key -> value as written

    def overrides(self, base: Overrides) -> dict[str, object]:
        """The run's overrides with this spec's mode and settings on top."""
        return {**flatten(base), "mode": "dense" if self.mode == "naive" else self.mode, **self.settings}


class Answer(Protocol):
    def __call__(
        self, window: FrameWindow, prompts: list[str], meter: GenerationMeter | None = None
    ) -> WindowAnswers: ...


def needs_weights(specs: list[ModeSpec], base: Overrides, folder: Path | None = None) -> bool:
    """Whether a mode runs the checkpoint's torch weights (backend torch, or naive); modes that
    run exported graphs need only the model's spec (load_spec). `folder`: the model's, whose
    settings file may choose the backend."""
    return any(
        spec.mode == "naive" or resolve_config(folder, spec.overrides(base)).backend == "torch"
        for spec in specs
    )


def answer_function(spec: ModeSpec, pipeline: Pipeline) -> Answer:
    """How a mode answers: the pipeline itself, or plain transformers usage on its stages (naive)."""
    if spec.mode == "naive":
        return lambda window, prompts, meter=None: answer_naively(pipeline, window, prompts, meter)
    return pipeline.answer


def split_items(text: str) -> list[str]:
    """'a,b[c=1,d=[2,3]]' -> ['a', 'b[c=1,d=[2,3]]']: commas inside brackets stay."""
    items, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(text[start:index])
            start = index + 1
    return [item.strip() for item in [*items, text[start:]]]


def parse_mode_specs(text: str) -> list[ModeSpec]:
    """'dense,vts[vts.budget=0.3]' -> specs, their settings checked before any model loads."""
    specs = []
    known = setting_keys()
    for label in split_items(text):
        label = label.strip()
        match = _SPEC.match(label)
        if not match or match.group(1) not in (*MODES, "naive"):
            modes = ", ".join((*MODES, "naive"))
            raise InputError(
                f"mode spec {label!r}: expected MODE or MODE[key=value,...], MODE one of {modes}"
            )
        settings = {}
        for item in filter(None, split_items(match.group(2) or "")):
            name, sep, value = item.partition("=")
            key = ALIASES.get(name.strip(), name.strip())
            if not sep or key not in known:
                raise InputError(
                    f"mode spec {label!r}: unknown setting {item!r}; a dotted key of the configuration "
                    f"(e.g. vts.budget) or one of {', '.join(ALIASES)}"
                )
            settings[key] = value.strip()
        spec = ModeSpec(label, match.group(1), settings)
        resolve_config(None, spec.overrides({}), source=f"mode spec {label!r}")
        specs.append(spec)
    if not specs:
        raise InputError("no modes given")
    return specs


def stage_flops(pipeline: Pipeline, result: WindowAnswers, meter: GenerationMeter) -> dict[str, float]:
    """FLOPs per stage of one window, from the shapes it ran with."""
    model_config = pipeline.model.config
    vision = model_config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    per_frame = siglip_flops(vision, 1, pipeline.vision.feature_layer) + projector_flops(
        vision.hidden_size, model_config.text_config.hidden_size, patches
    )
    keyframe = scorer_flops(pipeline.config.keyframe) if pipeline.keyframe_scorer is not None else 0.0
    return {
        "keyframe_flops": result.frames_scored * keyframe,
        "vision_flops": result.frames_encoded * per_frame,
        "llm_prefill_flops": meter.prefill_flops,
        "decode_flops": meter.decode_flops,
    }


class ModeRun:
    """One mode's pipeline and the figures it has gathered so far."""

    def __init__(self, label: str, pipeline: Pipeline, answer: Answer) -> None:
        self.label, self.pipeline, self.answer = label, pipeline, answer
        self.sums: dict[str, float] = {}
        self.generated = self.decode_ms = self.wall_s = self.peak_mb = 0.0
        self.drafted = self.accepted = 0  # draft tokens fed to decoding, and of them accepted
        self.predictions: list[tuple[BenchWindow, WindowAnswers]] = []

    def warm_up(self, item: BenchWindow) -> None:
        """One window before measuring, then forgotten (frame cache, earlier answers): every mode
        starts the stream cold."""
        self.answer(item.window, [DESCRIPTION_PROMPT, RISK_PROMPT, *item.questions])
        self.pipeline.cold_start()

    def measure(self, item: BenchWindow) -> None:
        with PeakMemory(self.pipeline.device) as peak:
            start = time.perf_counter()
            meter = GenerationMeter(self.pipeline.model.config.text_config)
            result = self.answer(item.window, [DESCRIPTION_PROMPT, RISK_PROMPT, *item.questions], meter)
            self.wall_s += time.perf_counter() - start
        self.peak_mb = max(self.peak_mb, peak.mb)
        figures = {
            "vision_tokens": result.tokens["vision_kept"],
            "frames_encoded": result.frames_encoded,
            "kv_cache_mb": meter.kv_cache_bytes / 2**20,
            "ttft_ms": meter.ttft_ms,
            "decode_steps": meter.decode_steps,
            **{
                f"{stage}_ms": result.timings_ms.get(stage, 0.0)
                for stage in ("keyframe", "vision", "sparsify", "prefill", "decode", "generate", "total")
            },
            **stage_flops(self.pipeline, result, meter),
        }
        for name, value in figures.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.generated += result.tokens["generated"]
        self.drafted, self.accepted = self.drafted + meter.drafted, self.accepted + meter.accepted
        self.decode_ms += result.timings_ms.get("decode", result.timings_ms.get("generate", 0.0))
        self.predictions.append((item, result))

    def metrics(self) -> dict[str, float]:
        """Averages per window; peak_mem_mb is the most extra memory one window took."""
        count = len(self.predictions)
        metrics = {name: value / count for name, value in self.sums.items()}
        metrics["decode_tokens_per_s"] = self.generated / (self.decode_ms / 1000.0) if self.decode_ms else 0.0
        metrics["reports_per_s"] = count / self.wall_s
        if self.drafted:
            metrics["draft_accept_rate"] = self.accepted / self.drafted
        metrics["peak_mem_mb"] = self.peak_mb
        metrics.update(accuracy(self.predictions, self.pipeline.device))
        return metrics


def accuracy(predictions: list[tuple[BenchWindow, WindowAnswers]], device) -> dict[str, float]:
    labelled = [(item.truth, item.window, result) for item, result in predictions if item.truth is not None]
    if not labelled:
        return {}
    hits: dict[str, list[bool]] = {"present": [], "temporal": []}
    boxes, captions, references = [], [], []
    for truth, window, result in labelled:
        _, risk_answer, *answers = result.answers
        for question, (answer, expected) in enumerate(zip(answers, truth.answers, strict=True)):
            hits[truth.kind(question)].append(exact_match(answer, expected))
        if truth.risk_bbox is not None:
            risk = parse_risk(risk_answer, default_camera=window.cameras[0])
            boxes.append(box_iou(risk.bbox, truth.risk_bbox))
            captions.append(risk.caption)
            references.append([truth.risk_caption])
    every = hits["present"] + hits["temporal"]
    return {
        "qa_exact_match": sum(every) / len(every) if every else 0.0,
        **{
            f"qa_{kind}": sum(found) / len(found)
            for kind, found in hits.items()
            if found and hits["temporal"]
        },
        "bbox_miou": sum(boxes) / len(boxes) if boxes else 0.0,
        "bbox_acc50": sum(iou > 0.5 for iou in boxes) / len(boxes) if boxes else 0.0,
        "caption_cider": cider(captions, references),
    }


def run_bench(
    load: Callable[[Overrides], Pipeline],
    base: Overrides,
    specs: list[ModeSpec],
    windows: list[BenchWindow],
) -> dict:
    """`load` builds a pipeline for overrides (so the model can be loaded once and shared)."""
    if not windows:
        raise InputError("no windows to benchmark")
    runs = []
    for spec in specs:
        pipeline = load(spec.overrides(base))
        runs.append(ModeRun(spec.label, pipeline, answer_function(spec, pipeline)))
        runs[-1].warm_up(windows[0])
    # Window by window, every mode in turn: a machine that speeds up or slows down during the
    # run (other load, clocks, caches) moves every mode's figures alike, not one mode's.
    for item in tqdm(windows, desc=f"bench {len(runs)} modes", unit="window", leave=False):
        for run in runs:
            run.measure(item)
    results = {run.label: run.metrics() for run in runs}
    reference = "dense" if "dense" in results else specs[0].label
    ratios = {
        label: {
            name: (value / results[reference][name] if results[reference].get(name) else None)
            for name, value in metrics.items()
        }
        for label, metrics in results.items()
    }
    return {"reference": reference, "modes": results, "ratios": ratios}


TABLE_COLUMNS = [
    ("vision_tokens", "vis tok", "{:.0f}"),
    ("frames_encoded", "enc fr", "{:.1f}"),
    ("vision_ms", "vision ms", "{:.1f}"),
    ("prefill_ms", "prefill ms", "{:.1f}"),
    ("decode_ms", "decode ms", "{:.1f}"),
    ("decode_steps", "dec steps", "{:.1f}"),
    ("draft_accept_rate", "draft acc", "{:.2f}"),
    ("ttft_ms", "ttft ms", "{:.1f}"),
    ("llm_prefill_flops", "prefill GF", "{:.3g}"),
    ("kv_cache_mb", "kv MB", "{:.2f}"),
    ("peak_mem_mb", "peak MB", "{:.0f}"),
    ("reports_per_s", "rep/s", "{:.2f}"),
    ("qa_exact_match", "qa EM", "{:.3f}"),
    ("qa_present", "qa now", "{:.3f}"),
    ("qa_temporal", "qa past", "{:.3f}"),
    ("bbox_acc50", "box@.5", "{:.3f}"),
    ("caption_cider", "CIDEr", "{:.3f}"),
]


def format_table(bench: dict) -> str:
    """One row per mode; each cell is the value and its ratio to the reference mode."""
    columns = [c for c in TABLE_COLUMNS if any(c[0] in m for m in bench["modes"].values())]
    header = ["mode"] + [title for _, title, _ in columns]
    rows = []
    for label, metrics in bench["modes"].items():
        cells = [label]
        for name, _, fmt in columns:
            value = metrics.get(name)
            if value is None:
                cells.append("-")
                continue
            scale = 1e-9 if name.endswith("flops") else 1.0
            ratio = bench["ratios"][label].get(name)
            cells.append(
                fmt.format(value * scale)
                + (f" (x{ratio:.2f})" if ratio is not None and label != bench["reference"] else "")
            )
        rows.append(cells)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def plot_tradeoff(
    bench: dict, path, accuracy_metric: str = "qa_exact_match", speed_metric: str = "prefill_ms"
) -> None:
    """Accuracy against a cost figure, one labelled point per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    for label, metrics in bench["modes"].items():
        if accuracy_metric in metrics:
            axis.scatter(metrics[speed_metric], metrics[accuracy_metric])
            axis.annotate(
                label,
                (metrics[speed_metric], metrics[accuracy_metric]),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
    axis.set_xlabel(speed_metric)
    axis.set_ylabel(accuracy_metric)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def moving_texture_windows(
    cameras: list[str], frames: int, stride: int, count: int, size: int, seed: int = 0
) -> list[BenchWindow]:
    """Windows of a synthetic stream (a smooth texture drifting a few pixels per frame, with an
    occasional jump), for speed runs with random weights where content carries no meaning."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    length = frames + stride * (count - 1)
    streams = []
    for _ in cameras:
        texture = cv2.resize(
            rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8),
            (2 * size, 2 * size),
            interpolation=cv2.INTER_CUBIC,
        )
        offsets, position = [], np.array([0, 0])
        for _ in range(length):
            position = (
                rng.integers(0, size, 2) if rng.random() < 0.1 else (position + rng.integers(1, 4, 2)) % size
            )
            offsets.append(position.copy())
        streams.append([np.ascontiguousarray(texture[y : y + size, x : x + size]) for y, x in offsets])
    windows = []
    for index in range(count):
        start = index * stride
        images = [stream[start : start + frames] for stream in streams]
        stamps = [[(start + t) * 100_000_000 for t in range(frames)] for _ in cameras]
        windows.append(
            BenchWindow(FrameWindow(list(cameras), images, stamps), ["What should the ego car do?"])
        )
    return windows
