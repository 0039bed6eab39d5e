"""Export a model's pipeline stages for one mode as ONNX graphs in engines/NAME, with manifest.json.

The graphs (graphs.py) are traced with torch.onnx.export (dynamo) from the very
torch pipeline the torch backend runs, loaded for the mode asked: modes with
VTS get the keyframe scorer graph, modes with MoD a routed llm_prefill. Each
dynamic axis gets a TensorRT optimisation profile sized by ExportShapes. Right
after export a graph is retyped where TensorRT lacks a kernel for its integer
or bool type (see legalize_for_tensorrt) and checked with check_onnx.

An interrupted export resumes: the manifest is rewritten after every graph,
and a rerun with the same model, mode and settings keeps the graphs already
written.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
import torch
from onnx import TensorProto, helper
from tqdm import tqdm
from vts_drive.engines.check_onnx import Violation, check_onnx_file
from vts_drive.engines.graphs import (
    DecodeGraph,
    EmbedGraph,
    GraphDefinition,
    HeadGraph,
    PrefillGraph,
    ScorerGraph,
    VisionGraph,
    example_prefix,
    kv_names,
    router_settings,
)
from vts_drive.engines.manifest import (
    MANIFEST_NAME,
    Manifest,
    describe_graph,
    export_tool_versions,
    model_hash,
    read_manifest,
    write_manifest,
)

from vts_drive.errors import InputError
from vts_drive.mod.routing import RoutingPlan, ranked_slots
from vts_drive.pipeline import Pipeline
from vts_drive.prompt import FrameTokens

DEFAULT_OPSET = 18  # torch.onnx's own opset; it cannot always convert down to 17

# op -> (its operands to retype, the element types TensorRT lacks for it, the type to compute in).
# Values stay exact: the counts a CumSum runs over stay below 2**24, scattered masks are 0 or 1.
TENSORRT_RETYPES = {
    "CumSum": ((0,), {TensorProto.INT32, TensorProto.INT64}, TensorProto.FLOAT),
    "ScatterElements": ((0, 2), {TensorProto.BOOL}, TensorProto.INT32),
}


@dataclass
class ExportShapes:
    """The largest window the graphs are built for (TensorRT profiles; ONNX Runtime takes any size)."""

    frames: int = 24  # frames per window, all cameras together (3 cameras x 8 frames)
    prompts: int = 8  # prompts answered together: description, risk and questions
    prompt_tokens: int = 96  # longest prompt suffix, in tokens
    new_tokens: int = 64  # longest answer, in tokens

    def check(self) -> None:
        for name, value in asdict(self).items():
            if value < 1:
                raise InputError(f"export shape {name} must be at least 1, got {value}")


def export_engines(
    model: str,
    mode: str,
    out: Path,
    opset: int = DEFAULT_OPSET,
    shapes: ExportShapes | None = None,
    dtype: str | None = None,
    keep_ratio: float | None = None,
    force: bool = False,
) -> tuple[Manifest, list[Violation]]:
    """Write out/*.onnx and out/manifest.json; returns the manifest and every graph's TensorRT violations."""
    shapes = shapes or ExportShapes()
    shapes.check()
    if opset < 17:
        raise InputError(f"opset {opset} is below 17, the lowest the engines support")
    overrides: dict[str, object] = {"mode": mode}
    if dtype is not None:
        overrides["dtype"] = dtype
    if keep_ratio is not None:
        overrides["mod.keep_ratio"] = keep_ratio
    pipeline = Pipeline.load(model, overrides)
    routers = pipeline.decoder.routers
    if routers is not None and routers.config.routing == "random":
        raise InputError(
            "random routing draws new scores on every pass and cannot be exported: "
            "export learned (or uniform) routing"
        )
    out = Path(out)
    manifest = Manifest(
        name=out.name,
        model=model,
        model_hash=model_hash(pipeline.model.folder),
        mode=mode,
        mod_keep_ratio=routers.config.keep_ratio if routers is not None else None,
        opset=opset,
        dtype=str(pipeline.model.dtype).removeprefix("torch."),
        export_tools=export_tool_versions(),
        graphs=[],
        settings={
            "shapes": asdict(shapes),
            "tokens_per_frame": pipeline.vision.tokens_per_frame,
            "routers": router_settings(routers),
        },
    )
    done = {} if force else finished_graphs(out, manifest)
    out.mkdir(parents=True, exist_ok=True)
    violations = []
    for definition in tqdm(graph_definitions(pipeline, shapes), desc="export", unit="graph"):
        path = out / f"{definition.name}.onnx"
        spec = done.get(definition.name)
        if spec is None:
            export_graph(definition, path, opset)
            spec = describe_graph(definition.name, path, definition.profiles())
        manifest.graphs.append(spec)
        write_manifest(out, manifest)
        violations += check_onnx_file(path, max_shapes=spec.max_shapes())
    return manifest, violations


def finished_graphs(out: Path, manifest: Manifest) -> dict:
    """Graphs an earlier run of the same export already wrote, by name."""
    if not (out / MANIFEST_NAME).is_file():
        return {}
    previous = read_manifest(out)
    same = ("model_hash", "mode", "mod_keep_ratio", "opset", "dtype", "export_tools", "settings")
    if any(getattr(previous, name) != getattr(manifest, name) for name in same):
        return {}
    return {graph.name: graph for graph in previous.graphs if (out / graph.file).is_file()}


def longest_prefix(pipeline: Pipeline, frames: int) -> tuple[int, int]:
    """(tokens, text tokens) of the longest shared prefix: each frame with its own camera marker, all tokens kept."""
    zeros = torch.zeros(pipeline.vision.tokens_per_frame, pipeline.decoder.embed_tokens.embedding_dim)
    cameras = [FrameTokens(f"front_right_{index}", index, zeros) for index in range(frames)]
    context = pipeline.prompts.context(cameras, pipeline.device)
    return context.length, context.length - context.num_visual


def graph_definitions(pipeline: Pipeline, shapes: ExportShapes) -> list[GraphDefinition]:
    """The graphs of the pipeline's mode, with example inputs and profiles sized by shapes."""
    vision, decoder, scorer = pipeline.vision, pipeline.decoder, pipeline.keyframe_scorer
    device, dtype = pipeline.device, pipeline.model.dtype
    frames, rows = shapes.frames, shapes.prompts
    typical_rows = min(3, rows)  # description, risk and one question
    prefix, prefix_text = longest_prefix(pipeline, frames)
    own = shapes.prompt_tokens + shapes.new_tokens  # a prompt row's own entries at the end of decoding
    hidden_size, layers = decoder.embed_tokens.embedding_dim, decoder.num_layers
    definitions = []

    if scorer is not None:
        size = scorer.config.input_size
        images = torch.rand(2, 3, size, size, device=device)
        definitions.append(
            GraphDefinition(
                "keyframe_scorer",
                ScorerGraph(scorer),
                {"frames": images, "previous": images.flip(0)},
                {"frames": {0: "frames"}, "previous": {0: "frames"}},
                ["logits"],
                {"frames": (1, frames, frames)},
            )
        )
    pixels = torch.randn(2, 3, vision.image_size, vision.image_size, device=device, dtype=dtype)
    definitions.append(
        GraphDefinition(
            "vision",
            VisionGraph(vision),
            {"pixels": pixels},
            {"pixels": {0: "frames"}},
            ["tokens", "saliency"],
            {"frames": (1, frames, frames)},
        )
    )
    definitions.append(
        GraphDefinition(
            "llm_embed",
            EmbedGraph(decoder),
            {"token_ids": torch.arange(5, device=device)},
            {"token_ids": {0: "tokens"}},
            ["embeds"],
            {"tokens": (1, typical_rows, max(prefix, rows * shapes.prompt_tokens))},
        )
    )
    definitions.append(
        GraphDefinition(
            "llm_head",
            HeadGraph(decoder),
            {"hidden": torch.randn(2, hidden_size, device=device, dtype=dtype)},
            {"hidden": {0: "rows"}},
            ["logits"],
            {"rows": (1, typical_rows, rows)},
        )
    )

    # llm_prefill: a small prefix of two frames (and its routing plan in modes with MoD)
    frame_index = example_prefix(vision.tokens_per_frame).to(device)
    length = frame_index.shape[1]
    positions = torch.arange(length, device=device).unsqueeze(0)
    inputs = {
        "embeds": torch.randn(1, length, hidden_size, device=device, dtype=dtype),
        "positions": positions,
        "valid": torch.ones_like(positions, dtype=torch.bool),
    }
    axes = {name: {1: "length"} for name in inputs}
    dims = {"length": (1, prefix, prefix)}
    keep_ratio = decoder.routers.config.keep_ratio if pipeline.config.layer_skipping else None
    if keep_ratio is not None:
        plan = RoutingPlan.from_frame_index(frame_index, keep_ratio)
        inputs |= {
            "text_index": plan.text_index,
            "frame_slots": plan.frame_slots,
            "keep_slots": plan.keep_slots,
        }
        axes |= {
            "text_index": {1: "text"},
            "frame_slots": {1: "frames", 2: "slots"},
            "keep_slots": {1: "kept"},
        }
        slots = vision.tokens_per_frame
        kept = frames * ranked_slots(keep_ratio, slots)  # every frame whole
        dims |= {
            "text": (1, prefix_text, prefix_text),
            "frames": (1, frames, frames),
            "slots": (1, slots, slots),
            "kept": (1, kept, kept),
        }
    prefill = PrefillGraph(decoder, keep_ratio)
    definitions.append(
        GraphDefinition(
            "llm_prefill",
            prefill,
            inputs,
            axes,
            ["hidden", *kv_names("present", layers)],
            dims,
        )
    )

    # llm_decode: 2 rows of 3 new tokens, each row with 4 + layer entries of its own, over the prefix above
    # (batch-1 keys and values, a valid mask per row).
    # Each layer's entry counts are their own axes (a cache's layers may hold different numbers of entries),
    # and every example tensor is a separate object: the trace gives one shared axis to aliased inputs.
    with torch.no_grad():
        prefix_kv = [tensor.clone() for tensor in prefill(*inputs.values())[1:]]
    batch, new = 2, 3
    for layer in range(layers):  # the prefix's valid mask is per row (pooled prompts: each row sees its own)
        prefix_kv[4 * layer + 3] = prefix_kv[4 * layer + 3].expand(batch, -1).clone()
    past_kv = []
    for layer in range(layers):
        keys = prefix_kv[4 * layer]
        shape = (batch, keys.shape[1], 4 + layer, keys.shape[3])
        past_positions = (length + torch.arange(4 + layer, device=device)).expand(batch, -1).clone()
        past_kv += [
            torch.randn(shape, device=device, dtype=dtype),
            torch.randn(shape, device=device, dtype=dtype),
            past_positions,
            torch.ones_like(past_positions, dtype=torch.bool),
        ]
    new_positions = (length + 4 + layers + torch.arange(new, device=device)).expand(batch, -1)
    inputs = {
        "embeds": torch.randn(batch, new, hidden_size, device=device, dtype=dtype),
        "positions": new_positions,
        "valid": torch.ones_like(new_positions, dtype=torch.bool),
        **dict(zip(kv_names("prefix", layers), prefix_kv)),
        **dict(zip(kv_names("past", layers), past_kv)),
    }
    axes = {name: {0: "batch", 1: "length"} for name in ("embeds", "positions", "valid")}
    dims = {"batch": (1, typical_rows, rows), "length": (1, 1, shapes.prompt_tokens)}
    for layer in range(layers):
        dims[f"prefix_{layer}"] = (0, prefix, prefix)
        dims[f"past_{layer}"] = (0, own // 2, own)
    for group in ("prefix", "past"):
        for name in kv_names(group, layers):
            layer = name.split(".")[1]
            entries = 2 if name.endswith((".key", ".value")) else 1  # the axis that counts entries
            per_row = group == "past" or name.endswith(".valid")
            axes[name] = {entries: f"{group}_{layer}"} | ({0: "batch"} if per_row else {})
    definitions.append(
        GraphDefinition(
            "llm_decode",
            DecodeGraph(decoder),
            inputs,
            axes,
            ["hidden", *kv_names("present", layers)],
            dims,
        )
    )
    return definitions


def export_graph(definition: GraphDefinition, path: Path, opset: int) -> None:
    """Trace one graph to path (weights beside it in path.data when over protobuf's 2 GB), retyped for TensorRT."""
    dims = {name: torch.export.Dim(name, min=low) for name, (low, _, _) in definition.dims.items()}
    dynamic_shapes = [
        {axis: dims[dim] for axis, dim in definition.axes.get(name, {}).items()} for name in definition.inputs
    ]
    parameters = inspect.signature(definition.module.forward).parameters.values()
    named = sum(parameter.kind == parameter.POSITIONAL_OR_KEYWORD for parameter in parameters)
    if len(dynamic_shapes) > named:  # forward(a, b, *rest): torch.export takes rest's shapes as one tuple
        dynamic_shapes = [*dynamic_shapes[:named], tuple(dynamic_shapes[named:])]
    with torch.no_grad(), quiet_exporter():
        program = torch.onnx.export(
            definition.module,
            tuple(definition.inputs.values()),
            input_names=list(definition.inputs),
            output_names=definition.outputs,
            opset_version=opset,
            dynamic_shapes=tuple(dynamic_shapes),
            dynamo=True,
            verbose=False,
        )
    program.save(str(path))
    model = onnx.load(str(path), load_external_data=False)
    written = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    if written != opset:
        path.unlink()
        raise InputError(
            f"torch.onnx could not write graph {definition.name} in opset {opset} (it wrote opset "
            f"{written}): export with --opset {written}"
        )
    onnx.save(legalize_for_tensorrt(model), str(path))


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """Keep torch.onnx's notes (axis renames, optional torchvision ops, deprecations) out of the output;
    its errors still raise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def legalize_for_tensorrt(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run the ops TensorRT has no kernel for in their integer or bool type (TENSORRT_RETYPES) in
    a type it has, with a Cast on each retyped operand and one back on the output.

    The routed layers count computed tokens with a cumulative sum over int64 and build
    token masks by scattering bools; TensorRT's CumSum takes floats only and its
    ScatterElements no bools. Works on a model loaded without its external weights.
    """
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {
        value.name: value.type.tensor_type.elem_type
        for value in [*inferred.input, *inferred.value_info, *inferred.output]
    }
    types |= {tensor.name: tensor.data_type for tensor in inferred.initializer}
    nodes = []
    for index, node in enumerate(model.graph.node):
        operands, lacking, compute = TENSORRT_RETYPES.get(node.op_type, ((), set(), None))
        original = types.get(node.input[0]) if operands else None
        if original not in lacking:
            nodes.append(node)
            continue
        name = node.name or f"{node.op_type}_{index}"
        for position in operands:
            cast = f"{name}/input{position}_as_{TensorProto.DataType.Name(compute).lower()}"
            nodes.append(helper.make_node("Cast", [node.input[position]], [cast], name=cast, to=compute))
            node.input[position] = cast
        output = node.output[0]
        node.output[0] = f"{name}/output"
        nodes.append(node)
        nodes.append(
            helper.make_node("Cast", [node.output[0]], [output], name=f"{name}/cast_back", to=original)
        )
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model
