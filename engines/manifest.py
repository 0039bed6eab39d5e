"""engines/NAME/manifest.json: what was exported, from which checkpoint, and what was built.

The exporter writes the manifest next to the ONNX graphs; `vts-drive
build-engine` adds an engine record to each graph it builds; the TensorRT
runtime reads it back and refuses an engine built for another TensorRT version
or GPU, or exported from another checkpoint, with a message that says how to
fix it. One manifest describes every graph of an export (vision tower, LLM
prefill, LLM decode, ...): its file, its inputs and outputs with dtypes and
dynamic axes, and for each input with dynamic axes the min/opt/max shapes of the
TensorRT optimisation profile.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import onnx

from vts_drive.errors import InputError

SCHEMA = "vts_drive.engine_manifest/1"
MANIFEST_NAME = "manifest.json"
MODEL_FILE_PATTERNS = ("*.safetensors", "*.json")  # what the model hash covers
EXPORT_TOOLS = ("vts_drive", "torch", "transformers", "onnx", "onnxruntime")


@dataclass
class TensorSpec:
    """One graph input or output. shape: ints for fixed axes, names for dynamic ones."""

    name: str
    dtype: str  # numpy name: float32, float16, bfloat16, int64, bool, ...
    shape: list[int | str]
    min: list[int] | None = None  # optimisation profile of an input with dynamic axes
    opt: list[int] | None = None
    max: list[int] | None = None

    @property
    def dynamic(self) -> bool:
        return any(isinstance(dim, str) for dim in self.shape)

    @property
    def profile(self) -> tuple[list[int], list[int], list[int]] | None:
        if self.min is None or self.opt is None or self.max is None:
            return None
        return self.min, self.opt, self.max

    def check_profile(self, graph: str) -> None:
        """An input with dynamic axes needs min <= opt <= max, agreeing with its fixed axes."""
        where = f"input {self.name} of graph {graph}"
        profile = self.profile
        if profile is None:
            if any(shape is not None for shape in (self.min, self.opt, self.max)):
                raise InputError(f"{where}: min/opt/max must all have rank {len(self.shape)}")
            if self.dynamic:
                raise InputError(f"{where} has dynamic axes {self.shape} but no min/opt/max profile shapes")
            return
        if any(len(shape) != len(self.shape) for shape in profile):
            raise InputError(f"{where}: min/opt/max must all have rank {len(self.shape)}")
        for axis, (dim, low, mid, high) in enumerate(zip(self.shape, *profile)):
            if not 0 <= low <= mid <= high:
                raise InputError(
                    f"{where}: axis {axis} needs 0 <= min <= opt <= max, got {low}, {mid}, {high}"
                )
            if isinstance(dim, int) and not low == mid == high == dim:
                raise InputError(
                    f"{where}: axis {axis} is fixed at {dim} but the profile gives {low}, {mid}, {high}"
                )


@dataclass
class EngineRecord:
    """A TensorRT engine built from one graph, and the platform it is bound to."""

    file: str  # relative to the manifest's folder
    precision: str  # fp32 | fp16 | bf16
    typing: str  # strong: precision from the graph; weak: TensorRT 10 builder flags
    tensorrt_version: str  # tensorrt.__version__ of the builder
    compute_capability: str  # "8.7" for Orin, "9.0" for H100
    gpu: str
    built: str  # ISO 8601, UTC


@dataclass
class GraphSpec:
    name: str  # vision | llm_prefill | llm_decode | ...
    file: str  # the .onnx file, relative to the manifest's folder
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    engine: EngineRecord | None = None

    def max_shapes(self) -> dict[str, list[int]]:
        """Each input's largest shape: its profile's max, or its fixed shape."""
        return {
            tensor.name: tensor.max or [int(dim) for dim in tensor.shape]
            for tensor in self.inputs
            if tensor.max or not tensor.dynamic
        }

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise InputError(
            f"graph {self.name} has no input {name!r} in its manifest (inputs: "
            f"{', '.join(spec.name for spec in self.inputs)})"
        )


@dataclass
class Manifest:
    name: str  # the export's folder name under engines/
    model: str  # what was exported: shipped model name, checkpoint folder or hub id
    model_hash: str  # model_hash() of the checkpoint folder
    mode: str  # dense | vts | prumerge | mod | vts+mod
    mod_keep_ratio: float | None  # r: share of vision tokens a routed layer computes (None without MoD)
    opset: int
    dtype: str  # the float type the graphs were exported in: float32 | float16 | bfloat16
    export_tools: dict[str, str]  # package -> version
    graphs: list[GraphSpec]
    settings: dict = field(
        default_factory=dict
    )  # export settings the runtime needs (cameras, frames, image size)
    schema: str = SCHEMA

    def graph(self, name: str) -> GraphSpec:
        for graph in self.graphs:
            if graph.name == name:
                return graph
        raise InputError(
            f"engine manifest {self.name} has no graph {name!r} (graphs: "
            f"{', '.join(graph.name for graph in self.graphs)})"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        graphs = [
            GraphSpec(
                name=graph["name"],
                file=graph["file"],
                inputs=[TensorSpec(**spec) for spec in graph["inputs"]],
                outputs=[TensorSpec(**spec) for spec in graph["outputs"]],
                engine=EngineRecord(**graph["engine"]) if graph.get("engine") else None,
            )
            for graph in data["graphs"]
        ]
        return cls(**{**data, "graphs": graphs})


def model_hash(folder: Path) -> str:
    """sha256 over the checkpoint's safetensors and JSON files (names, sizes and bytes), in name order."""
    folder = Path(folder)
    files = sorted({path for pattern in MODEL_FILE_PATTERNS for path in folder.glob(pattern)})
    if not files:
        raise InputError(f"{folder} has no .safetensors or .json files to hash: is it a model folder?")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def export_tool_versions() -> dict[str, str]:
    """Versions of the packages that shape an export, as installed now."""
    versions = {}
    for package in EXPORT_TOOLS:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def describe_graph(
    name: str, onnx_path: Path, profiles: dict[str, tuple[list[int], list[int], list[int]]]
) -> GraphSpec:
    """A GraphSpec read from an exported .onnx file, with the profile shapes of its dynamic inputs.

    profiles maps an input name to (min, opt, max); every input with a dynamic axis needs one.
    """
    onnx_path = Path(onnx_path)
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}
    unknown = set(profiles) - {value.name for value in graph.input}
    if unknown:
        raise InputError(
            f"profiles name inputs that graph {name} does not have: {', '.join(sorted(unknown))}"
        )

    def spec(value: onnx.ValueInfoProto, profile=None) -> TensorSpec:
        tensor_type = value.type.tensor_type
        dtype = (
            onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
            if tensor_type.elem_type
            else "unknown"
        )
        dims = tensor_type.shape.dim
        shape = [dim.dim_param or (dim.dim_value if dim.HasField("dim_value") else "?") for dim in dims]
        low, mid, high = [list(map(int, shape)) for shape in profile] if profile else (None, None, None)
        return TensorSpec(value.name, dtype, shape, low, mid, high)

    inputs = [
        spec(value, profiles.get(value.name)) for value in graph.input if value.name not in initializers
    ]
    for tensor in inputs:
        tensor.check_profile(name)
    return GraphSpec(name, onnx_path.name, inputs, [spec(value) for value in graph.output])


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write folder/manifest.json atomically (a crash never leaves half a manifest)."""
    path = Path(folder) / MANIFEST_NAME
    partial = path.with_suffix(".json.partial")
    partial.write_text(manifest.to_json())
    partial.replace(path)
    return path


def read_manifest(folder: Path) -> Manifest:
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise InputError(f"{folder} is not an engines folder (export the model's graphs first)")
    if not path.is_file():
        raise InputError(f"{folder} has no {MANIFEST_NAME}: export the model's graphs into it first")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{path} is not a {SCHEMA} manifest (schema: {found!r})")
    try:
        return Manifest.from_dict(data)
    except (KeyError, TypeError) as error:
        raise InputError(f"{path} is not a valid engine manifest: {error}") from None


def verify_model(manifest: Manifest, model_folder: Path) -> None:
    """The engines must come from the checkpoint the pipeline loads (same weights, tokenizer, config)."""
    found = model_hash(model_folder)
    if found != manifest.model_hash:
        raise InputError(
            f"engines {manifest.name} were exported from {manifest.model} ({manifest.model_hash[:19]}), "
            f"not from {model_folder} ({found[:19]}): export this model's graphs again"
        )


def verify_engine(folder: Path, graph: GraphSpec, tensorrt_version: str, compute_capability: str) -> Path:
    """The plan file of graph's engine, if it was built for this TensorRT version and GPU architecture.

    TensorRT engines are bound to the exact TensorRT version that built them and to
    the GPU's compute capability, so anything else is an error that says to rebuild.
    """
    folder = Path(folder)
    rebuild = f"rebuild with `vts-drive build-engine {folder}`"
    record = graph.engine
    if record is None:
        raise InputError(
            f"graph {graph.name} in {folder} has no TensorRT engine yet: build it with "
            f"`vts-drive build-engine {folder}`"
        )
    plan = folder / record.file
    if (record.tensorrt_version, record.compute_capability) != (tensorrt_version, compute_capability):
        raise InputError(
            f"engine {plan} was built with TensorRT {record.tensorrt_version} for {_sm(record.compute_capability)}; "
            f"this machine has TensorRT {tensorrt_version} on {_sm(compute_capability)}: {rebuild}"
        )
    if not plan.is_file():
        raise InputError(f"engine {plan} is missing: {rebuild}")
    return plan


def _sm(compute_capability: str) -> str:
    return "sm_" + compute_capability.replace(".", "")


def check_input_names(graph: str, expected: list[str], given) -> None:
    """Refuse a call whose inputs are not exactly the graph's, naming both sides."""
    missing = [name for name in expected if name not in given]
    unknown = sorted(set(given) - set(expected))
    if missing or unknown:
        raise InputError(f"{graph} takes inputs {list(expected)}; missing {missing}, unknown {unknown}")
