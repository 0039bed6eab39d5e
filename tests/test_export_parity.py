"""ONNX export and the onnxruntime backend against the torch pipeline, on the tiny model with
random routers and keyframe scorer: graphs pass check-onnx, logits agree within 1e-3, greedy
answers are identical in every exported mode, and mismatched engines are refused."""

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from vts_drive.engines.check_onnx import check_model, check_onnx_file
from vts_drive.engines.export import DEFAULT_CAMERAS, export_engines, legalize_for_tensorrt, shipped_prompts
from vts_drive.engines.manifest import model_hash, read_manifest, write_manifest

from conftest import random_window
from vts_drive.cli import main
from vts_drive.config import resolve_config
from vts_drive.errors import InputError
from vts_drive.generation import GenerationMeter
from vts_drive.model.kv_cache import KVCache
from vts_drive.model.loading import load_model
from vts_drive.pipeline import Pipeline

MODES = ["dense", "vts", "mod", "vts+mod"]


@pytest.fixture(scope="module")
def model_dir(routed_model_dir):
    return routed_model_dir


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(str(model_dir))


@pytest.fixture(scope="module")
def engines(model_dir, tmp_path_factory):
    """mode -> its export folder, exported on first use (dense through the CLI)."""
    root = tmp_path_factory.mktemp("engines")
    folders = {}

    def get(mode: str):
        if mode not in folders:
            folder = root / mode.replace("+", "_")
            if mode == "dense":
                assert main(["export", "--model", str(model_dir), "--mode", mode, "--out", str(folder)]) == 0
            else:
                _, violations = export_engines(str(model_dir), mode, folder)
                assert violations == []
            folders[mode] = folder
        return folders[mode]

    return get


def pipelines(model, folder, mode, **settings):
    torch_pipeline = Pipeline(model, {"mode": mode, **settings})
    onnx_pipeline = Pipeline(
        model, {"mode": mode, "backend": "onnxruntime", "engines": str(folder), **settings}
    )
    return torch_pipeline, onnx_pipeline


def test_routed_export_passes_check_onnx_and_records_its_manifest(model, model_dir, engines):
    folder = engines("vts+mod")
    manifest = read_manifest(folder)
    assert [graph.name for graph in manifest.graphs] == [
        "keyframe_scorer",
        "vision",
        "llm_embed",
        "llm_head",
        "llm_prefill",
        "llm_decode",
    ]
    assert (manifest.mode, manifest.mod_keep_ratio, manifest.opset, manifest.dtype) == (
        "vts+mod",
        0.25,
        18,
        "float32",
    )
    assert manifest.model_hash == model_hash(model_dir)
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest.export_tools)
    for graph in manifest.graphs:
        assert check_onnx_file(folder / graph.file, max_shapes=graph.max_shapes()) == []
        opsets = {entry.domain: entry.version for entry in onnx.load(str(folder / graph.file)).opset_import}
        assert opsets[""] == 18
    prefill = manifest.graph("llm_prefill")
    assert prefill.input("frame_slots").max == [1, 24, 4]  # 24 frames of 4 tokens: TopK's K bounded from this
    assert prefill.input("keep_slots").shape == [1, "kept"]  # the routed layers compute Lt + kept tokens
    assert prefill.input("keep_slots").max == [1, 24]  # 24 whole frames, ceil(0.25 x 4) = 1 token each
    past = prefill.input("past.1.key")  # the system turn's entries, held between windows
    assert past.shape == [1, 2, "past_1", 16] and past.min[2] == 0 and past.max[2] > 0
    topk = [node for node in onnx.load(str(folder / prefill.file)).graph.node if node.op_type == "TopK"]
    assert len(topk) == 1 and all(
        helper.get_attribute_value(a) == 1 for n in topk for a in n.attribute if a.name == "sorted"
    )
    decode = manifest.graph("llm_decode")
    assert (
        decode.input("past.1.key").shape == ["batch", 2, "past_1", 16]
        and decode.input("past.1.key").min[2] == 0
    )
    assert decode.input("prefix.0.position").shape == [1, "prefix_0"]
    assert main(["check-onnx", str(folder)]) == 0
    # by default it takes describe()'s and synthdrive's prompts together about 3 cameras x 8 frames
    pipeline = Pipeline(model, {"mode": "vts+mod", "backend": "onnxruntime", "engines": str(folder)})
    lengths = [len(pipeline.prompts.question_ids(text)) for text in shipped_prompts(pipeline)]
    assert len(lengths) == 17 and pipeline.export_limits is not None
    assert pipeline.largest_shapes(DEFAULT_CAMERAS, 8, lengths).exceeding(pipeline.export_limits) == []


def test_stages_match_torch_within_1e_3(model, engines):
    torch_pipeline, onnx_pipeline = pipelines(model, engines("vts+mod"), "vts+mod")
    window = random_window(seed=3)
    images = [image for camera in window.images for image in camera]
    pixels = torch_pipeline.vision.preprocess(images)
    for expected, got in zip(torch_pipeline.vision.encode(pixels), onnx_pipeline.vision.encode(pixels)):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    frames = torch_pipeline.keyframe_scorer.prepare(images)
    previous = frames.roll(1, 0)
    torch.testing.assert_close(
        onnx_pipeline.keyframe_scorer(frames, previous),
        torch_pipeline.keyframe_scorer(frames, previous),
        rtol=0,
        atol=1e-4,
    )

    keyframes = torch_pipeline.score_keyframes(window)
    frames = torch_pipeline.select_tokens(window, *torch_pipeline.encode_window(window), keyframes)
    context = torch_pipeline.prompts.context(frames, torch_pipeline.device)
    suffixes = [torch_pipeline.prompts.question_ids(q) for q in ("Why?", "What should the ego car do now?")]
    expected, got = (
        llm_logits(pipeline.decoder, context, suffixes) for pipeline in (torch_pipeline, onnx_pipeline)
    )
    assert got["entries"] == expected["entries"]
    assert expected["entries"][1] < expected["entries"][0] == context.length  # the routed layer holds fewer
    for name in ("prefix", "suffix", "step", "unbranched_step"):
        assert (got[name] - expected[name]).abs().max() <= 1e-3, name


def test_routed_prefill_computes_exactly_each_frames_k_tokens(model, model_dir, tmp_path):
    """At r = 0.75 a whole frame of 4 tokens computes 3 and a thinner frame (as VTS leaves them) fewer:
    the exported llm_prefill's routed layer holds the text and each frame's ceil(r n_f) tokens, no
    padding slot, as torch's does, with the same logits."""
    folder = tmp_path / "vts_mod_075"
    _, violations = export_engines(str(model_dir), "vts+mod", folder, keep_ratio=0.75)
    assert violations == []
    assert read_manifest(folder).graph("llm_prefill").input("keep_slots").max == [1, 24 * 3]
    torch_pipeline, onnx_pipeline = pipelines(model, folder, "vts+mod", **{"mod.keep_ratio": 0.75})
    window = random_window(seed=3)
    keyframes = torch_pipeline.score_keyframes(window)
    frames = torch_pipeline.select_tokens(window, *torch_pipeline.encode_window(window), keyframes)
    frames = [replace(frame, tokens=frame.tokens[: 1 + i % 4]) for i, frame in enumerate(frames)]
    context = torch_pipeline.prompts.context(frames, torch_pipeline.device)
    sizes = [n for n in torch.bincount(context.frame_index[context.frame_index >= 0]).tolist() if n]
    assert set(sizes) == {1, 2, 3, 4}  # frames of unequal size
    exact = int((context.frame_index < 0).sum()) + sum(math.ceil(0.75 * n) for n in sizes)
    suffixes = [torch_pipeline.prompts.question_ids("What should the ego car do now?")]
    expected, got = (
        llm_logits(pipeline.decoder, context, suffixes) for pipeline in (torch_pipeline, onnx_pipeline)
    )
    assert got["entries"] == expected["entries"] == [context.length, exact]
    for name in ("prefix", "suffix", "step", "unbranched_step"):
        assert (got[name] - expected[name]).abs().max() <= 1e-3, name


@torch.no_grad()
def llm_logits(decoder, context, suffixes):
    """Logits of the prefill (last prefix token), of two prompts over the branched prefix, of one
    decode step for both, and of one step on the unbranched prefix cache."""
    length = context.length
    cache = KVCache(decoder.num_layers)
    hidden = decoder(
        context.embeds[None],
        torch.arange(length)[None],
        cache=cache,
        plan=decoder.routing_plan(context.frame_index[None]),
    )
    prefix = decoder.logits(hidden[:, -1])
    entries = [cache.entries(layer) for layer in range(decoder.num_layers)]
    lengths = torch.tensor([len(ids) for ids in suffixes])
    ids = torch.zeros(len(suffixes), int(lengths.max()), dtype=torch.long)
    for row, suffix in enumerate(suffixes):
        ids[row, : len(suffix)] = torch.tensor(suffix)
    columns = torch.arange(ids.shape[1])[None]
    branched = cache.branch()
    hidden = decoder(
        decoder.embed(ids), (length + columns).expand(len(suffixes), -1), columns < lengths[:, None], branched
    )
    suffix = decoder.logits(hidden[torch.arange(len(suffixes)), lengths - 1])
    tokens = suffix.argmax(-1)
    hidden = decoder(decoder.embed(tokens[:, None]), (length + lengths)[:, None], None, branched)
    step = decoder.logits(hidden[:, 0])
    hidden = decoder(decoder.embed(tokens[:1, None]), torch.tensor([[length]]), None, cache)
    return {
        "prefix": prefix,
        "suffix": suffix,
        "step": step,
        "unbranched_step": decoder.logits(hidden[:, 0]),
        "entries": entries,
    }


@pytest.mark.parametrize("mode", MODES)
def test_greedy_answers_are_identical_to_torch(model, engines, mode):
    torch_pipeline, onnx_pipeline = pipelines(model, engines(mode), mode, max_new_tokens=8)
    assert type(onnx_pipeline.decoder).__name__ == "ExportedDecoder"
    decoder = onnx_pipeline.decoder
    prefill, prefilled = decoder.graphs["llm_prefill"], []  # (embeds length, past entries) per run

    def recorded_prefill(inputs):
        prefilled.append((inputs["embeds"].shape[1], inputs["past.0.key"].shape[2]))
        return prefill(inputs)

    decoder.graphs = {**decoder.graphs, "llm_prefill": recorded_prefill}
    prompts = ["Describe the driving scene.", "Why?", "What should the ego car do?"]
    suffix_tokens = sum(len(onnx_pipeline.prompts.question_ids(text)) for text in prompts)
    head = onnx_pipeline.prompts.layout([]).head_length
    context_lengths = []
    for seed in (0, 1):
        window = random_window(seed=seed)
        expected_meter, got_meter = (
            GenerationMeter(model.hf_model.config.text_config),
            GenerationMeter(model.hf_model.config.text_config),
        )
        expected = torch_pipeline.answer(window, prompts, expected_meter)
        got = onnx_pipeline.answer(window, prompts, got_meter)
        assert got.answers == expected.answers
        assert got.tokens == expected.tokens
        assert got_meter.kv_cache_bytes == expected_meter.kv_cache_bytes
        assert got_meter.prefill_flops == pytest.approx(expected_meter.prefill_flops)
        assert any(answer for answer in got.answers)
        context_lengths.append(got.tokens["prompt"] - suffix_tokens)
    # the system turn is computed once, then held: each window prefills the rest of its prefix after it
    assert prefilled == [(head, 0)] + [(length - head, head) for length in context_lengths]


def test_drafts_give_the_answers_of_decoding_without_them(model, engines, tmp_path):
    """A stream of synthdrive windows through the exported vts+mod graphs with drafts (llm_decode
    takes each row's token and its draft, rows right-padded, in one pass; the box grammar on)
    answers as torch without drafts, token for token, the repeated window in fewer passes."""
    from vts_drive.prompt import DESCRIPTION_PROMPT, RISK_PROMPT
    from vts_drive.synth.bench_windows import synth_bench_windows
    from vts_drive.synth.generate import SynthConfig, generate_dataset

    generate_dataset(tmp_path, SynthConfig(scenes=1, seed=3, frames=6, formats=("synth",)))
    stream = synth_bench_windows(tmp_path, ["front", "front_left", "front_right"], 4, 1, 3)
    settings = {"mode": "vts+mod", "max_new_tokens": 12}
    plain = Pipeline(model, {**settings, "draft": False})
    drafting = Pipeline(model, {**settings, "backend": "onnxruntime", "engines": str(engines("vts+mod"))})
    for item in [*stream, stream[-1]]:  # the last window twice: its drafts are its own answers
        prompts = [DESCRIPTION_PROMPT, RISK_PROMPT, *item.questions]
        meter, plain_meter = (GenerationMeter(model.hf_model.config.text_config) for _ in range(2))
        assert drafting.answer(item.window, prompts, meter).answers == (
            plain.answer(item.window, prompts, plain_meter).answers
        )
    assert meter.accepted > 0 and meter.decode_steps < plain_meter.decode_steps


def test_engines_that_do_not_match_are_refused(model, model_dir, tiny_model_dir, engines, tmp_path):
    folder = engines("vts+mod")
    with pytest.raises(InputError, match=r"exported for mode vts\+mod, not mod: export again"):
        Pipeline(model, {"mode": "mod", "backend": "onnxruntime", "engines": str(folder)})
    with pytest.raises(InputError, match="exported with routers .*'keep_ratio': 0.25.*'keep_ratio': 0.5"):
        Pipeline(
            model,
            {"mode": "vts+mod", "backend": "onnxruntime", "engines": str(folder), "mod.keep_ratio": 0.5},
        )
    with pytest.raises(InputError, match="export this model's graphs again"):
        Pipeline.load(
            str(tiny_model_dir), {"mode": "dense", "backend": "onnxruntime", "engines": str(engines("dense"))}
        )
    with pytest.raises(InputError, match="is not an engines folder"):
        Pipeline(model, {"backend": "onnxruntime", "engines": str(tmp_path / "missing")})
    with pytest.raises(InputError, match="--engines DIR"):
        resolve_config(None, {"backend": "onnxruntime"})
    with pytest.raises(InputError, match="--device cuda"):
        resolve_config(None, {"backend": "tensorrt", "engines": str(folder)})
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    manifest = read_manifest(partial)
    manifest.graphs = [graph for graph in manifest.graphs if graph.name != "llm_decode"]
    write_manifest(partial, manifest)
    with pytest.raises(InputError, match="lack the graphs llm_decode"):
        Pipeline(model, {"mode": "vts+mod", "backend": "onnxruntime", "engines": str(partial)})


def test_a_rerun_keeps_the_graphs_already_exported(model_dir, engines):
    folder = engines("vts+mod")
    written = {path.name: path.stat().st_mtime_ns for path in folder.glob("*.onnx")}
    manifest, violations = export_engines(str(model_dir), "vts+mod", folder)
    assert violations == [] and len(manifest.graphs) == 6
    assert {path.name: path.stat().st_mtime_ns for path in folder.glob("*.onnx")} == written


def test_bench_runs_the_onnxruntime_backend_next_to_torch(model_dir, engines, tmp_path):
    from vts_drive.synth.generate import SynthConfig, generate_dataset

    generate_dataset(
        tmp_path / "synth", SynthConfig(scenes=1, frames=4, image_size=(64, 48), formats=("synth",))
    )
    out = tmp_path / "bench.json"
    argv = [
        "bench",
        "--model",
        str(model_dir),
        "--data",
        str(tmp_path / "synth"),
        "--backend",
        "onnxruntime",
        "--engines",
        str(engines("dense")),
        "--modes",
        "dense,dense[backend=torch]",
        "--windows",
        "2",
        "--frames",
        "4",
        "--max-new-tokens",
        "4",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    results = json.loads(out.read_text())
    onnx_run, torch_run = results["modes"]["dense"], results["modes"]["dense[backend=torch]"]
    assert results["backend"] == "onnxruntime"
    for name in ("vision_tokens", "qa_exact_match", "kv_cache_mb"):
        assert onnx_run[name] == torch_run[name]


def test_legalize_retypes_integer_cumsum_and_bool_scatter_exactly():
    counts = helper.make_node("CumSum", ["x", "axis"], ["running"])
    scatter = helper.make_node("ScatterElements", ["mask", "index", "flags"], ["marked"], axis=1)
    graph = helper.make_graph(
        [counts, scatter],
        "retype",
        [
            helper.make_tensor_value_info("x", TensorProto.INT64, [1, 5]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 5]),
            helper.make_tensor_value_info("index", TensorProto.INT64, [1, 2]),
            helper.make_tensor_value_info("flags", TensorProto.BOOL, [1, 2]),
        ],
        [
            helper.make_tensor_value_info("running", TensorProto.INT64, [1, 5]),
            helper.make_tensor_value_info("marked", TensorProto.BOOL, [1, 5]),
        ],
        [helper.make_tensor("axis", TensorProto.INT64, [], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert {v.op for v in check_model(model, "retype")} == {"CumSum", "ScatterElements"}
    feeds = {
        "x": np.array([[1, 0, 1, 1, 0]]),
        "mask": np.zeros((1, 5), bool),
        "index": np.array([[3, 0]]),
        "flags": np.array([[True, True]]),
    }
    before = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    fixed = legalize_for_tensorrt(model)
    assert check_model(fixed, "retype") == []
    onnx.checker.check_model(fixed)
    after = ort.InferenceSession(fixed.SerializeToString()).run(None, feeds)
    for a, b in zip(before, after):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert after[0].tolist() == [[1, 1, 2, 3, 3]] and after[1].tolist() == [[True, False, False, True, False]]
