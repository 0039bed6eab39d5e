"""vts-drive bench: every mode on the same windows in one run, the JSON the issues ask for, and
mode specs that change one setting (including which routers a mode uses)."""

import json

import pytest
import torch

from conftest import TEST_SELECTION
from vts_drive.bench import parse_mode_specs
from vts_drive.cli import main
from vts_drive.config import KeyframeConfig, ModConfig
from vts_drive.errors import InputError
from vts_drive.keyframe.scorer import KeyframeScorer, save_scorer
from vts_drive.mod.routing import Routers, save_routers
from vts_drive.synth.generate import SynthConfig, generate_dataset

PER_MODE = (
    "vision_tokens",
    "llm_prefill_flops",
    "keyframe_ms",
    "vision_ms",
    "sparsify_ms",
    "prefill_ms",
    "decode_ms",
    "decode_steps",
    "ttft_ms",
    "decode_tokens_per_s",
    "reports_per_s",
    "peak_mem_mb",
    "kv_cache_mb",
    "qa_exact_match",
    "bbox_acc50",
    "caption_cider",
)


def test_bench_compares_modes_on_the_same_windows(tiny_model_dir, tmp_path):
    generate_dataset(
        tmp_path / "synth", SynthConfig(scenes=1, frames=6, image_size=(64, 48), formats=("synth",))
    )
    torch.manual_seed(0)
    save_scorer(KeyframeScorer(KeyframeConfig(input_size=32, **TEST_SELECTION)).eval(), tmp_path / "scorer")
    save_routers(
        Routers(hidden_size=64, num_layers=2, config=ModConfig(keep_ratio=0.25, layers=[0, 1])),
        tmp_path / "routers",
    )
    out = tmp_path / "bench.json"
    modes = (
        f"naive,dense,dense[draft=false],vts,mod[routers={tmp_path / 'routers'}],"
        f"vts+mod[routers={tmp_path / 'routers'},skip=1.01]"
    )
    argv = [
        "bench",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(tmp_path / "synth"),
        "--keyframe-scorer",
        str(tmp_path / "scorer"),
        "--modes",
        modes,
        "--windows",
        "3",
        "--frames",
        "4",
        "--stride",
        "1",
        "--max-new-tokens",
        "4",
        "--json",
        str(out),
        "--plot",
        str(tmp_path / "bench.png"),
    ]
    assert main(argv) == 0
    results = json.loads(out.read_text())
    assert results["device"].startswith("cpu") and results["model"]
    runs = results["modes"]
    assert len(runs) == 6
    for run in runs.values():
        assert all(isinstance(run[name], (int, float)) for name in PER_MODE)
    naive, dense, vts = runs["naive"], runs["dense"], runs["vts"]
    mod, gated = (
        runs[f"mod[routers={tmp_path / 'routers'}]"],
        runs[f"vts+mod[routers={tmp_path / 'routers'},skip=1.01]"],
    )
    assert naive["llm_prefill_flops"] > dense["llm_prefill_flops"], (
        "naive prefills the window once per prompt"
    )
    assert vts["vision_tokens"] <= dense["vision_tokens"]
    assert mod["llm_prefill_flops"] < dense["llm_prefill_flops"], "the given routers skip layers"
    assert mod["kv_cache_mb"] < dense["kv_cache_mb"]
    assert gated["frames_encoded"] < vts["frames_encoded"], "gating above every score encodes keyframes only"
    assert (tmp_path / "bench.png").stat().st_size > 0
    # drafts change how many passes decoding takes, never the answers
    plain = runs["dense[draft=false]"]
    assert 0.0 <= dense["draft_accept_rate"] <= 1.0 and "draft_accept_rate" not in plain
    assert [dense[name] for name in ("qa_exact_match", "bbox_miou", "caption_cider")] == [
        plain[name] for name in ("qa_exact_match", "bbox_miou", "caption_cider")
    ]


def test_mode_specs_name_a_mode_and_known_settings():
    (spec,) = parse_mode_specs("vts+mod[r=0.1,routers=/a/b,skip=0.2]")
    assert (spec.mode, spec.settings) == (
        "vts+mod",
        {"mod.keep_ratio": "0.1", "routers": "/a/b", "keyframe.skip_threshold": "0.2"},
    )
    (dotted,) = parse_mode_specs("vts+mod[mod.keep_ratio=0.1,routers=/a/b,keyframe.skip_threshold=0.2]")
    assert dotted.settings == spec.settings
    with pytest.raises(InputError, match="unknown setting"):
        parse_mode_specs("mod[speed=11]")
    with pytest.raises(InputError, match="mod.keep_ratio must be in"):
        parse_mode_specs("mod[r=1.5]")
    with pytest.raises(InputError, match="expected MODE"):
        parse_mode_specs("fast")


def test_modes_take_turns_window_by_window_after_each_warms_up(tiny_model_dir):
    """Every mode warms up first; then each window is run by every mode before the next window,
    so drift in the machine's speed during a run cannot favour the modes run early."""
    from conftest import random_window
    from vts_drive.bench import BenchWindow, run_bench
    from vts_drive.model.loading import load_model
    from vts_drive.pipeline import Pipeline

    model = load_model(str(tiny_model_dir))
    calls = []

    def load(overrides) -> Pipeline:
        pipeline = Pipeline(model, overrides)
        answer = pipeline.answer
        mode = pipeline.config.mode
        pipeline.answer = lambda window, prompts, meter=None: (
            calls.append((mode, window.stamp_ns)) or answer(window, prompts, meter)
        )
        return pipeline

    windows = [BenchWindow(random_window(seed, frames=2), ["Why?"]) for seed in range(3)]
    for index, item in enumerate(windows):
        item.window.stamps_ns = [[stamp + index for stamp in camera] for camera in item.window.stamps_ns]
    results = run_bench(load, {"max_new_tokens": 2}, parse_mode_specs("dense,prumerge"), windows)
    stamps = [item.window.stamp_ns for item in windows]
    assert calls == [("dense", stamps[0]), ("prumerge", stamps[0])] + [
        (mode, s) for s in stamps for mode in ("dense", "prumerge")
    ]
    assert results["modes"]["prumerge"]["reports_per_s"] > 0


def test_naive_and_the_pipeline_are_metered_alike(tiny_model_dir):
    """One prompt, the same answer, no system turn kept between windows: naive (plain transformers
    generate) and the dense pipeline count the same prefill and decode FLOPs and hold the same K/V,
    since both report through one GenerationMeter."""
    from conftest import random_window
    from vts_drive.generation import GenerationMeter
    from vts_drive.model.loading import load_model
    from vts_drive.naive import answer_naively
    from vts_drive.pipeline import Pipeline

    pipeline = Pipeline(load_model(str(tiny_model_dir)), {"max_new_tokens": 6})
    pipeline.head_cache = None  # naive keeps nothing between windows either
    window, prompts = random_window(seed=9), ["What should the ego car do?"]
    dense_meter, naive_meter = (GenerationMeter(pipeline.decoder.config) for _ in range(2))
    dense = pipeline.answer(window, prompts, dense_meter)
    naive = answer_naively(pipeline, window, prompts, naive_meter)
    assert naive.answers == dense.answers and dense.tokens["generated"] > 1
    assert naive_meter.prefill_flops == pytest.approx(dense_meter.prefill_flops)
    assert naive_meter.decode_flops == pytest.approx(dense_meter.decode_flops)
    assert naive_meter.kv_cache_bytes == dense_meter.kv_cache_bytes
    assert naive_meter.first_token_time is not None and dense_meter.first_token_time is not None
    # two prompts: each naive prompt holds the whole window again, the pipeline shares it
    two = [*prompts, "Why?"]
    dense_meter, naive_meter = (GenerationMeter(pipeline.decoder.config) for _ in range(2))
    pipeline.answer(window, two, dense_meter)
    answer_naively(pipeline, window, two, naive_meter)
    assert naive_meter.kv_cache_bytes > dense_meter.kv_cache_bytes
