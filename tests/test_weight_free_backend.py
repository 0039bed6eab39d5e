"""The onnxruntime backend runs on the checkpoint's spec and the exported graphs alone: loading it
reads no weight file into tensors, the pipeline holds no torch module or weight, and its
greedy answers are those of the torch backend."""

import gc
import json
import shutil
import types

import pytest
import torch
import transformers
from torch import nn
from vts_drive.engines.export import export_engines

from conftest import random_window
from vts_drive import pipeline as pipeline_module
from vts_drive.bench import needs_weights, parse_mode_specs
from vts_drive.errors import InputError
from vts_drive.model import weights
from vts_drive.model.loading import load_spec
from vts_drive.naive import answer_naively
from vts_drive.pipeline import Pipeline

MODE = "vts+mod"
PROMPTS = ["Describe the driving scene.", "Why?", "What should the ego car do?"]


@pytest.fixture(scope="module")
def model_dir(routed_model_dir):
    return routed_model_dir


@pytest.fixture(scope="module")
def engines(model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("weight_free") / "engines"
    _, violations = export_engines(str(model_dir), MODE, folder)
    assert violations == []
    return folder


def held_torch_state(root: object) -> tuple[list[nn.Module], int]:
    """Torch modules and the number of tensor elements reachable from `root` through instances,
    containers and bound methods (classes, modules and functions are not followed)."""
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    seen, stack, modules, elements = {id(root)}, [root], [], 0
    while stack:
        item = stack.pop()
        if isinstance(item, nn.Module):
            modules.append(item)
        if isinstance(item, torch.Tensor):
            elements += item.numel()
            continue
        for referent in gc.get_referents(item):
            if id(referent) not in seen and not isinstance(referent, skip):
                seen.add(id(referent))
                stack.append(referent)
    return modules, elements


def live_parameters() -> int:
    gc.collect()
    return sum(type(item) is nn.Parameter for item in gc.get_objects())


def test_onnxruntime_pipeline_loads_and_holds_no_weights(model_dir, engines, monkeypatch):
    settings = {"mode": MODE, "backend": "onnxruntime", "engines": str(engines), "max_new_tokens": 4}
    reference = Pipeline.load(str(model_dir), {"mode": MODE, "max_new_tokens": 4})
    modules, elements = held_torch_state(reference)
    assert any(next(module.parameters(), None) is not None for module in modules)  # the walk finds weights
    assert elements > 100_000

    def refuse(*args, **kwargs):
        raise AssertionError("an engine backend read weights into tensors")

    monkeypatch.setattr(pipeline_module, "load_model", refuse)
    monkeypatch.setattr(transformers.LlavaOnevisionForConditionalGeneration, "from_pretrained", refuse)
    monkeypatch.setattr(weights, "load_file", refuse)  # the keyframe scorer's and routers' weights
    monkeypatch.setattr(weights, "safe_open", refuse)
    before = live_parameters()
    pipeline = Pipeline.load(str(model_dir), settings)
    assert live_parameters() == before
    modules, elements = held_torch_state(pipeline)
    assert modules == []
    assert elements < 100  # the image mean and std
    assert pipeline.answer(random_window(seed=0), PROMPTS).answers  # runs with no weights to fall back on


def test_answers_on_the_spec_alone_equal_torch(model_dir, engines):
    torch_pipeline = Pipeline.load(str(model_dir), {"mode": MODE, "max_new_tokens": 8})
    spec_pipeline = Pipeline(
        load_spec(str(model_dir)),
        {"mode": MODE, "backend": "onnxruntime", "engines": str(engines), "max_new_tokens": 8},
    )
    for seed in (0, 1, 2):
        window = random_window(seed=seed)
        expected, got = torch_pipeline.answer(window, PROMPTS), spec_pipeline.answer(window, PROMPTS)
        assert got.answers == expected.answers and any(got.answers)
        assert got.tokens == expected.tokens


def test_a_spec_is_refused_where_weights_are_needed(model_dir, engines):
    spec = load_spec(str(model_dir))
    with pytest.raises(InputError, match="loaded without its weights .* backend torch"):
        Pipeline(spec, {"mode": MODE})
    dense = Pipeline(spec, {"backend": "onnxruntime", "engines": str(engines), "mode": MODE})
    with pytest.raises(InputError, match="naive runs transformers' generate"):
        answer_naively(dense, random_window(), ["Why?"])


def test_bench_loads_weights_only_for_modes_that_run_them():
    engines = {"backend": "onnxruntime", "engines": "engines/x"}
    assert not needs_weights(parse_mode_specs("dense,vts+mod"), engines)
    assert needs_weights(parse_mode_specs("dense,vts[backend=torch]"), engines)
    assert needs_weights(parse_mode_specs("naive"), engines)
    assert needs_weights(parse_mode_specs("dense"), {})


def test_a_model_folder_that_runs_exported_graphs_needs_no_weights(tmp_path):
    (tmp_path / "vts_drive.json").write_text('{"backend": "onnxruntime", "engines": "engines/x"}')
    assert not needs_weights(parse_mode_specs("dense,vts+mod"), {}, tmp_path)
    assert needs_weights(parse_mode_specs("dense"), {"backend": "torch"}, tmp_path)  # the run's choice wins


def test_a_model_folder_that_runs_exported_graphs_exports_from_its_weights(model_dir, engines, tmp_path):
    """Export traces the torch modules whatever backend the folder's settings file names."""
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    settings_file = folder / "vts_drive.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    settings_file.write_text(json.dumps({**settings, "backend": "onnxruntime", "engines": str(engines)}))
    manifest, violations = export_engines(str(folder), MODE, tmp_path / "again")
    assert violations == [] and {graph.name for graph in manifest.graphs} >= {"llm_prefill", "llm_decode"}
