"""The exported graphs' TensorRT optimisation profiles hold what the pipeline feeds them.

A window at the export's largest (its cameras x frames, as many prompts as exported, each as long
as the longest, every answer running to the last new token) goes through the onnxruntime backend,
and every graph input fed lies within its profile's min and max and reaches the max; a window
beyond the export is refused before any graph runs. ONNX Runtime stands in for TensorRT, which
cannot run here: TensorRT refuses a shape outside a profile, ONNX Runtime takes any, so the test
compares the shapes fed with the manifest's profiles itself."""

import re
import shutil
from collections import defaultdict

import pytest
import torch
from vts_drive.engines.export import ExportShapes, export_engines
from vts_drive.engines.manifest import read_manifest

from conftest import random_window
from vts_drive.config import ModConfig
from vts_drive.errors import InputError
from vts_drive.mod.routing import Routers, save_routers
from vts_drive.model.loading import load_model
from vts_drive.pipeline import Pipeline
from vts_drive.shapes import GenerationShapes

MODE = "mod"  # every frame keeps all its tokens, so the prefix reaches its largest; layer 1 routes
CAMERAS, FRAMES, PROMPTS, NEW_TOKENS = ["front", "rear_left"], 3, 3, 5
QUESTION = "What should the ego car do?"


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("profiles") / "model"
    shutil.copytree(tiny_model_dir, folder)
    torch.manual_seed(0)
    save_routers(Routers(hidden_size=64, num_layers=2, config=ModConfig(keep_ratio=0.5, layers=[1])), folder)
    return folder


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(str(model_dir))


@pytest.fixture(scope="module")
def engines(model, model_dir):
    """An export for CAMERAS x FRAMES and PROMPTS prompts as long as QUESTION's."""
    question_tokens = len(Pipeline(model, {"mode": MODE}).prompts.question_ids(QUESTION))
    folder = model_dir.parent / "engines"
    shapes = ExportShapes(CAMERAS, FRAMES, PROMPTS, question_tokens, NEW_TOKENS)
    _, violations = export_engines(str(model_dir), MODE, folder, shapes=shapes)
    assert violations == []
    return folder


def recording_pipeline(model, folder) -> tuple[Pipeline, dict[str, dict[str, list[list[int]]]]]:
    """An onnxruntime pipeline whose graphs note every input shape they are fed (graph -> input ->
    shapes), with no stop token, so every answer runs to max_new_tokens."""
    pipeline = Pipeline(
        model, {"mode": MODE, "backend": "onnxruntime", "engines": str(folder), "max_new_tokens": NEW_TOKENS}
    )
    fed: dict[str, dict[str, list[list[int]]]] = defaultdict(lambda: defaultdict(list))

    def recorded(name, graph):
        def run(inputs):
            for input_name, tensor in inputs.items():
                fed[name][input_name].append(list(tensor.shape))
            return graph(inputs)

        return run

    decoder = pipeline.decoder
    decoder.graphs = {name: recorded(name, graph) for name, graph in decoder.graphs.items()}
    pipeline.vision.graph = recorded("vision", pipeline.vision.graph)
    pipeline.stop_ids = {-1}  # no token id: nothing ends an answer
    return pipeline, fed


def test_a_window_at_the_exports_largest_fits_every_profile_and_reaches_its_max(model, engines):
    manifest = read_manifest(engines)
    pipeline, fed = recording_pipeline(model, engines)
    window = random_window(seed=0, cameras=CAMERAS, frames=FRAMES)
    # twice: the second window starts from the held system turn and the cached frames
    for _ in range(2):
        tokens = pipeline.answer(window, [QUESTION] * PROMPTS).tokens
        assert tokens["generated"] == PROMPTS * NEW_TOKENS
    assert set(fed) == {graph.name for graph in manifest.graphs}
    for graph in manifest.graphs:
        assert set(fed[graph.name]) == {spec.name for spec in graph.inputs}, graph.name
        for spec in graph.inputs:
            shapes = fed[graph.name][spec.name]
            where = f"{graph.name} {spec.name} {shapes}"
            assert all(
                spec.min[axis] <= shape[axis] <= spec.max[axis]
                for shape in shapes
                for axis in range(len(shape))
            ), where
            assert [max(shape[axis] for shape in shapes) for axis in range(len(spec.max))] == spec.max, where
    # the routed layer holds the text and half of each frame's 4 tokens: its prefix is shorter
    decode = manifest.graph("llm_decode")
    assert (
        decode.input("prefix.1.key").max[2] == decode.input("prefix.0.key").max[2] - FRAMES * len(CAMERAS) * 2
    )
    assert decode.input("past.0.key").max[2] == NEW_TOKENS - 2  # the last answer token is never fed


def test_the_pipeline_and_the_export_compute_the_same_sizes(model, engines, monkeypatch):
    """The manifest's limits are the pipeline's own largest_shapes for the exported window, and
    the pipeline's context-length check counts the positions they count."""
    limits = GenerationShapes(**read_manifest(engines).settings["limits"])
    pipeline = Pipeline(model, {"mode": MODE, "max_new_tokens": NEW_TOKENS})
    question_tokens = len(pipeline.prompts.question_ids(QUESTION))
    assert pipeline.largest_shapes(CAMERAS, FRAMES, [question_tokens] * PROMPTS) == limits
    assert (limits.head, limits.prompts, limits.prompt_tokens) == (
        pipeline.prompts.layout([]).head_length,
        PROMPTS,
        question_tokens,
    )
    assert limits.positions == limits.prefix - (PROMPTS - 1) * question_tokens + NEW_TOKENS
    monkeypatch.setattr(model.config.text_config, "max_position_embeddings", limits.positions - 1)
    window = random_window(seed=0, cameras=CAMERAS, frames=FRAMES)
    with pytest.raises(InputError, match=f"needs {limits.positions} positions"):
        pipeline.answer(window, [QUESTION] * PROMPTS)


def test_a_window_beyond_the_export_is_refused_before_any_graph_runs(model, engines):
    pipeline, fed = recording_pipeline(model, engines)
    longer = random_window(seed=1, cameras=CAMERAS, frames=FRAMES + 1)
    folder = re.escape(str(engines))
    with pytest.raises(InputError, match=rf"2 cameras x 4 frames .*needs frames 8 > 6.*{folder}.*--frames"):
        pipeline.answer(longer, [QUESTION])
    with pytest.raises(InputError, match=rf"prompts 4 > 3.*{folder}.*--prompts"):
        pipeline.answer(random_window(seed=1, cameras=CAMERAS, frames=FRAMES), [QUESTION] * (PROMPTS + 1))
    assert not fed  # refused before the vision tower, or anything else, ran
