"""Export a model's pipeline stages for one mode as ONNX graphs in engines/NAME, with manifest.json.

The graphs (graphs.py) are traced with torch.onnx.export (dynamo) from the very
torch pipeline the torch backend runs, loaded for the mode asked: modes with
VTS get the keyframe scorer graph, modes with MoD a routed llm_prefill. Each
dynamic axis gets a TensorRT optimisation profile whose max is what the
pipeline feeds at most for the window ExportShapes describes, from the sizes
the pipeline itself computes (vts_drive/shapes.py), and the pipeline refuses a
window beyond them before running any graph. Right
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import onnx
import torch
from onnx import TensorProto, helper
from tqdm import tqdm
from vts_drive.engines.check_onnx import Violation, check_onnx_file
from vts_drive.engines.graphs import (
    KV_FIELDS,
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
from vts_drive.keyframe.scorer import KeyframeScorer
from vts_drive.mod.routing import RoutingPlan
from vts_drive.model.decoder import Qwen2Decoder
from vts_drive.model.vision import VisionEncoder
from vts_drive.pipeline import Pipeline
from vts_drive.prompt import DESCRIPTION_PROMPT, RISK_PROMPT
from vts_drive.shapes import GenerationShapes
from vts_drive.synth.truth import QUESTIONS, TEMPORAL_QUESTIONS

DEFAULT_OPSET = 18  # torch.onnx's own opset; it cannot always convert down to 17

# op -> (its operands to retype, the element types TensorRT lacks for it, the type to compute in).
# Values stay exact: the counts a CumSum runs over stay below 2**24, scattered masks are 0 or 1.
TENSORRT_RETYPES = {
    "CumSum": ((0,), {TensorProto.INT32, TensorProto.INT64}, TensorProto.FLOAT),
    "ScatterElements": ((0, 2), {TensorProto.BOOL}, TensorProto.INT32),
}


DEFAULT_CAMERAS = ["front", "front_left", "front_right"]  # synthdrive's, and the node's default topics'


@dataclass
class ExportShapes:
    """The largest window the graphs are built for: up to `prompts` prompts of up to
    `prompt_tokens` tokens about `frames` frames of each camera. None: what shipped_prompts
    needs, and the model's max_new_tokens."""

    cameras: list[str] = field(default_factory=lambda: list(DEFAULT_CAMERAS))  # names: the markers' tokens
    frames: int = 8  # frames per camera
    prompts: int | None = None  # prompts answered together
    prompt_tokens: int | None = None  # tokens of the longest prompt suffix
    new_tokens: int | None = None  # tokens of the longest answer

    def check(self) -> None:
        if not self.cameras:
            raise InputError("export shape cameras must name at least one camera")
        for name in ("frames", "prompts", "prompt_tokens", "new_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"export shape {name} must be at least 1, got {value}")


def shipped_prompts(pipeline: Pipeline) -> list[str]:
    """The prompts a default export takes together: describe()'s (description, risk and the
    model's configured questions) and synthdrive's questions, which eval asks the shipped model."""
    questions = [*pipeline.config.questions, *QUESTIONS.values(), *TEMPORAL_QUESTIONS.values()]
    return [DESCRIPTION_PROMPT, RISK_PROMPT, *dict.fromkeys(questions)]


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
    overrides: dict[str, object] = {"mode": mode, "backend": "torch"}  # export traces the torch modules
    if dtype is not None:
        overrides["dtype"] = dtype
    if keep_ratio is not None:
        overrides["mod.keep_ratio"] = keep_ratio
    if shapes.new_tokens is not None:
        overrides["max_new_tokens"] = shapes.new_tokens
    pipeline = Pipeline.load(model, overrides)
    routers = torch_stages(pipeline)[1].routers
    if routers is not None and routers.config.routing == "random":
        raise InputError(
            "random routing draws new scores on every pass and cannot be exported: "
            "export learned (or uniform) routing"
        )
    lengths = suffix_lengths(pipeline, shipped_prompts(pipeline))
    prompts, prompt_tokens = shapes.prompts or len(lengths), shapes.prompt_tokens or max(lengths)
    shapes = replace(
        shapes, prompts=prompts, prompt_tokens=prompt_tokens, new_tokens=pipeline.config.max_new_tokens
    )
    limits = pipeline.largest_shapes(shapes.cameras, shapes.frames, [prompt_tokens] * prompts)
    described = [DESCRIPTION_PROMPT, RISK_PROMPT, *pipeline.config.questions]  # opt: a describe() window
    typical = pipeline.largest_shapes(shapes.cameras, shapes.frames, suffix_lengths(pipeline, described))
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
            "limits": asdict(limits),  # what the pipeline checks a window against
            "tokens_per_frame": pipeline.vision.tokens_per_frame,
            "routers": router_settings(routers),
        },
    )
    done = {} if force else finished_graphs(out, manifest)
    out.mkdir(parents=True, exist_ok=True)
    violations = []
    for definition in tqdm(graph_definitions(pipeline, limits, typical), desc="export", unit="graph"):
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


def torch_stages(pipeline: Pipeline) -> tuple[VisionEncoder, Qwen2Decoder, KeyframeScorer | None]:
    """The pipeline's torch modules, which export traces."""
    vision, decoder, scorer = pipeline.vision, pipeline.decoder, pipeline.keyframe_scorer
    if not (
        isinstance(vision, VisionEncoder)
        and isinstance(decoder, Qwen2Decoder)
        and (scorer is None or isinstance(scorer, KeyframeScorer))
    ):
        raise InputError(f"export traces torch modules, not the {pipeline.config.backend} backend's stages")
    return vision, decoder, scorer


def suffix_lengths(pipeline: Pipeline, prompts: list[str]) -> list[int]:
    """Tokens of each prompt's suffix, as the pipeline asks it."""
    return [len(pipeline.prompts.question_ids(text)) for text in prompts]


def graph_definitions(
    pipeline: Pipeline, limits: GenerationShapes, typical: GenerationShapes
) -> list[GraphDefinition]:
    """The graphs of the pipeline's mode with example inputs; each profile's max is a size of
    `limits`, its opt the same size of `typical` (within min and max)."""
    vision, decoder, scorer = torch_stages(pipeline)
    device, dtype = pipeline.device, pipeline.model.dtype
    hidden_size, layers = decoder.embed_tokens.embedding_dim, decoder.num_layers
    kv_shape = (decoder.num_kv_heads, decoder.head_dim)

    def span(size: str, low: int, opt: int | None = None) -> tuple[int, int, int]:
        """(min, opt, max) of an axis of the given GenerationShapes size."""
        high = getattr(limits, size)
        return low, min(max(getattr(typical, size) if opt is None else opt, low), high), high

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
                {"frames": span("frames", 1)},
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
            {"frames": span("frames", 1)},
        )
    )
    definitions.append(
        GraphDefinition(
            "llm_embed",
            EmbedGraph(decoder),
            {"token_ids": torch.arange(5, device=device)},
            {"token_ids": {0: "tokens"}},
            ["embeds"],
            {"tokens": span("embed_tokens", 1)},
        )
    )
    definitions.append(
        GraphDefinition(
            "llm_head",
            HeadGraph(decoder),
            {"hidden": torch.randn(2, hidden_size, device=device, dtype=dtype)},
            {"hidden": {0: "rows"}},
            ["logits"],
            {"rows": span("head_rows", 1)},
        )
    )

    # llm_prefill: a small prefix of two frames (and its routing plan in modes with MoD) after 3 + layer
    # entries per layer. Each layer's entry counts are their own axes (a cache's layers may hold different
    # numbers of entries), and every example tensor is a separate object: the trace gives one shared axis to
    # aliased inputs.
    frame_index = example_prefix(vision.tokens_per_frame).to(device)
    held = [3 + layer for layer in range(layers)]
    length = frame_index.shape[1]
    positions = (max(held) + torch.arange(length, device=device)).unsqueeze(0)
    inputs = {
        "embeds": torch.randn(1, length, hidden_size, device=device, dtype=dtype),
        "positions": positions,
        "valid": torch.ones_like(positions, dtype=torch.bool),
    }
    axes = {name: {1: "length"} for name in inputs}
    dims = {"length": span("prefill", 1)}
    keep_ratio = pipeline.keep_ratio
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
        dims |= {
            "text": span("prefill_text", 1),
            "frames": span("frames", 1),
            "slots": span("slots", 1),
            "kept": span("kept", 0),
        }
    inputs |= dict(zip(kv_names("past", layers), example_kv(1, held, 0, kv_shape, inputs["embeds"])))
    axes |= kv_axes("past", layers, ())
    dims |= {f"past_{layer}": span("head", 0) for layer in range(layers)}
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
    # (batch-1 keys and values, a valid mask per row)
    with torch.no_grad():
        prefix_kv = [tensor.clone() for tensor in prefill(*inputs.values())[1:]]
    batch, new, end = 2, 3, int(positions.max()) + 1
    for layer in range(layers):  # the prefix's valid mask is per row (pooled prompts: each row sees its own)
        prefix_kv[4 * layer + 3] = prefix_kv[4 * layer + 3].expand(batch, -1).clone()
    own = [4 + layer for layer in range(layers)]
    new_positions = (end + max(own) + torch.arange(new, device=device)).expand(batch, -1)
    embeds = torch.randn(batch, new, hidden_size, device=device, dtype=dtype)
    inputs = {
        "embeds": embeds,
        "positions": new_positions,
        "valid": torch.ones_like(new_positions, dtype=torch.bool),
        **dict(zip(kv_names("prefix", layers), prefix_kv)),
        **dict(zip(kv_names("past", layers), example_kv(batch, own, end, kv_shape, embeds))),
    }
    axes = {name: {0: "batch", 1: "length"} for name in ("embeds", "positions", "valid")}
    axes |= kv_axes("prefix", layers, ("valid",)) | kv_axes("past", layers, KV_FIELDS)
    routed = set(decoder.routers.layer_indices) if decoder.routers is not None else set()
    dims = {"batch": span("prompts", 1), "length": span("decode_tokens", 1, opt=1)}  # opt: a decode step
    for layer in range(layers):
        dims[f"prefix_{layer}"] = span("routed_prefix" if layer in routed else "prefix", 0)
        dims[f"past_{layer}"] = span("past", 0, opt=limits.past // 2)
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


def example_kv(
    batch: int, counts: list[int], start: int, kv_shape: tuple[int, int], like: torch.Tensor
) -> list[torch.Tensor]:
    """Random K/V entries, flattened as the graphs take them: counts[l] per row in layer l, at
    positions from `start`; kv_shape: (K/V heads, head width)."""
    tensors = []
    for count in counts:
        positions = (start + torch.arange(count, device=like.device)).expand(batch, -1).clone()
        shape = (batch, kv_shape[0], count, kv_shape[1])
        keys, values = (torch.randn(shape, device=like.device, dtype=like.dtype) for _ in range(2))
        tensors += [keys, values, positions, torch.ones_like(positions, dtype=torch.bool)]
    return tensors


def kv_axes(group: str, layers: int, per_row: tuple[str, ...]) -> dict[str, dict[int, str]]:
    """Dynamic axes of a KV group's inputs: each layer's entries ({group}_{layer}), and the batch
    axis of the fields in `per_row` (a batch-1 prefix still has a valid mask per row)."""
    axes = {}
    for name in kv_names(group, layers):
        _, layer, kind = name.split(".")
        entries = 2 if kind in ("key", "value") else 1  # the axis that counts entries
        axes[name] = {entries: f"{group}_{layer}"} | ({0: "batch"} if kind in per_row else {})
    return axes


def export_graph(definition: GraphDefinition, path: Path, opset: int) -> None:
    """Trace one graph to path (weights beside it in path.data when over protobuf's 2 GB), retyped for TensorRT."""
    dims = {name: torch.export.Dim(name, min=low) for name, (low, _, _) in definition.dims.items()}
    per_input = [
        {axis: dims[dim] for axis, dim in definition.axes.get(name, {}).items()} for name in definition.inputs
    ]
    parameters = inspect.signature(definition.module.forward).parameters.values()
    named = sum(parameter.kind == parameter.POSITIONAL_OR_KEYWORD for parameter in parameters)
    dynamic_shapes: list[dict | tuple[dict, ...]] = list(per_input)
    if len(per_input) > named:  # forward(a, b, *rest): torch.export takes rest's shapes as one tuple
        dynamic_shapes = [*per_input[:named], tuple(per_input[named:])]
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
