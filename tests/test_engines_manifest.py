"""Engine manifest: model hash, describing exported graphs, write/read, and the checks made before an engine loads."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from safetensors.torch import save_file
from vts_drive.engines.manifest import (
    MANIFEST_NAME,
    EngineRecord,
    Manifest,
    TensorSpec,
    describe_graph,
    export_tool_versions,
    model_hash,
    read_manifest,
    verify_engine,
    verify_model,
    write_manifest,
)

from vts_drive.errors import InputError


def checkpoint(folder: Path, scale: float = 1.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.ones(4, 4) * scale}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "llava_onevision"}))
    return folder


def decode_graph(path: Path) -> Path:
    """A stand-in shaped like an LLM decode step: dynamic batch and cache length."""
    inputs = [
        helper.make_tensor_value_info("embeds", TensorProto.FLOAT, ["batch", 1, 16]),
        helper.make_tensor_value_info("past_keys", TensorProto.FLOAT, ["batch", 2, "cache", 8]),
    ]
    outputs = [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", 1, 16])]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["embeds"], ["hidden"])], "decode", inputs, outputs
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def manifest_for(folder: Path, model_folder: Path) -> Manifest:
    graph = describe_graph(
        "llm_decode",
        decode_graph(folder / "llm_decode.onnx"),
        {
            "embeds": ([1, 1, 16], [3, 1, 16], [8, 1, 16]),
            "past_keys": ([1, 2, 1, 8], [3, 2, 256, 8], [8, 2, 1024, 8]),
        },
    )
    return Manifest(
        name=folder.name,
        model=str(model_folder),
        model_hash=model_hash(model_folder),
        mode="vts+mod",
        mod_keep_ratio=0.2,
        opset=17,
        dtype="float32",
        export_tools=export_tool_versions(),
        graphs=[graph],
        settings={"cameras": ["front", "front_left", "front_right"], "frames": 4},
    )


def record(**changes) -> EngineRecord:
    fields = dict(
        file="llm_decode.plan",
        precision="fp16",
        typing="weak",
        tensorrt_version="10.3.0",
        compute_capability="8.7",
        gpu="Orin",
        built="2025-01-01T00:00:00+00:00",
    )
    return EngineRecord(**{**fields, **changes})


def test_model_hash_covers_weights_and_config_only(tmp_path: Path) -> None:
    first = model_hash(checkpoint(tmp_path / "a"))
    assert first.startswith("sha256:") and first == model_hash(checkpoint(tmp_path / "b"))
    (tmp_path / "a" / "README.md").write_text("notes do not change the model")
    assert model_hash(tmp_path / "a") == first
    assert model_hash(checkpoint(tmp_path / "a", scale=2.0)) != first
    with pytest.raises(InputError, match="no .safetensors or .json files"):
        model_hash(tmp_path)


def test_describe_graph_reads_names_dtypes_and_dynamic_axes(tmp_path: Path) -> None:
    manifest = manifest_for(tmp_path, checkpoint(tmp_path / "model"))
    graph = manifest.graph("llm_decode")
    assert graph.file == "llm_decode.onnx"
    keys = graph.input("past_keys")
    assert (keys.dtype, keys.shape, keys.max) == ("float32", ["batch", 2, "cache", 8], [8, 2, 1024, 8])
    assert [(t.name, t.shape, t.min) for t in graph.outputs] == [("hidden", ["batch", 1, 16], None)]


def test_describe_graph_needs_a_valid_profile_for_each_dynamic_input(tmp_path: Path) -> None:
    path = decode_graph(tmp_path / "llm_decode.onnx")
    with pytest.raises(InputError, match="input past_keys of graph llm_decode has dynamic axes"):
        describe_graph("llm_decode", path, {"embeds": ([1, 1, 16], [1, 1, 16], [8, 1, 16])})
    with pytest.raises(InputError, match="axis 0 needs 0 <= min <= opt <= max"):
        describe_graph(
            "llm_decode",
            path,
            {
                "embeds": ([4, 1, 16], [2, 1, 16], [8, 1, 16]),
                "past_keys": ([1, 2, 1, 8], [1, 2, 1, 8], [1, 2, 1, 8]),
            },
        )
    with pytest.raises(InputError, match="axis 1 is fixed at 1"):
        describe_graph(
            "llm_decode",
            path,
            {
                "embeds": ([1, 2, 16], [1, 2, 16], [1, 2, 16]),
                "past_keys": ([1, 2, 1, 8], [1, 2, 1, 8], [1, 2, 1, 8]),
            },
        )


def test_write_read_round_trip(tmp_path: Path) -> None:
    manifest = manifest_for(tmp_path, checkpoint(tmp_path / "model"))
    manifest.graphs[0].engine = record()
    path = write_manifest(tmp_path, manifest)
    assert path == tmp_path / MANIFEST_NAME and not list(tmp_path.glob("*.partial"))
    assert read_manifest(tmp_path) == manifest
    data = json.loads(path.read_text())
    assert data["schema"] == "vts_drive.engine_manifest/1" and data["mod_keep_ratio"] == 0.2
    assert data["export_tools"]["onnx"] == onnx.__version__


@pytest.mark.parametrize("profile", [{"max": [8, 4]}, {"min": [1, 4], "max": [8, 4]}, {"min": [1, 4]}])
def test_a_partial_profile_is_refused(profile: dict) -> None:
    """A manifest input with only some of min/opt/max (a hand-edited manifest) is named, not half-used."""
    for shape in (["batch", 4], [2, 4]):  # dynamic or fixed axes alike
        spec = TensorSpec(name="embeds", dtype="float32", shape=shape, **profile)
        with pytest.raises(InputError, match="input embeds of graph g: min/opt/max must all have rank 2"):
            spec.check_profile("g")


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "has no manifest.json"),
        ("{not json", "is not valid JSON"),
        ('{"schema": "something/else"}', "is not a vts_drive.engine_manifest/1 manifest"),
        ('{"schema": "vts_drive.engine_manifest/1", "name": "x"}', "is not a valid engine manifest"),
    ],
)
def test_bad_manifests_are_input_errors(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / MANIFEST_NAME).write_text(content)
    with pytest.raises(InputError, match=message):
        read_manifest(tmp_path)


def test_verify_engine_accepts_the_platform_it_was_built_for(tmp_path: Path) -> None:
    manifest = manifest_for(tmp_path, checkpoint(tmp_path / "model"))
    graph = manifest.graph("llm_decode")
    graph.engine = record()
    (tmp_path / "llm_decode.plan").write_bytes(b"plan")
    assert verify_engine(tmp_path, graph, "10.3.0", "8.7") == tmp_path / "llm_decode.plan"


def test_verify_engine_says_rebuild_on_another_tensorrt_or_gpu(tmp_path: Path) -> None:
    folder = tmp_path / "synthdrive-tiny"
    folder.mkdir()
    manifest = manifest_for(folder, checkpoint(tmp_path / "model"))
    graph = manifest.graph("llm_decode")
    graph.engine = record()
    (folder / "llm_decode.plan").write_bytes(b"plan")
    with pytest.raises(InputError) as error:
        verify_engine(folder, graph, "10.8.0", "9.0")
    assert str(error.value) == (
        f"engine {folder}/llm_decode.plan was built with TensorRT 10.3.0 for sm_87; this machine has "
        f"TensorRT 10.8.0 on sm_90: rebuild with `vts-drive build-engine {folder}`"
    )
    with pytest.raises(InputError, match="for sm_87; this machine has TensorRT 10.3.0 on sm_90"):
        verify_engine(folder, graph, "10.3.0", "9.0")


def test_verify_engine_without_engine_or_plan_file(tmp_path: Path) -> None:
    graph = manifest_for(tmp_path, checkpoint(tmp_path / "model")).graph("llm_decode")
    with pytest.raises(InputError, match="has no TensorRT engine yet: build it with `vts-drive build-engine"):
        verify_engine(tmp_path, graph, "10.3.0", "8.7")
    graph.engine = record()
    with pytest.raises(InputError, match="llm_decode.plan is missing"):
        verify_engine(tmp_path, graph, "10.3.0", "8.7")


def test_verify_model_rejects_engines_from_another_checkpoint(tmp_path: Path) -> None:
    manifest = manifest_for(tmp_path, checkpoint(tmp_path / "model"))
    verify_model(manifest, tmp_path / "model")
    with pytest.raises(InputError, match="were exported from .* not from"):
        verify_model(manifest, checkpoint(tmp_path / "other", scale=3.0))
