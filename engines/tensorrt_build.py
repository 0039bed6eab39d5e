"""Build TensorRT engines from the exported ONNX graphs of engines/NAME (TensorRT 10.x and 11.x).

For each graph in the manifest: check it statically (check_onnx), parse it with
TensorRT's ONNX parser, give every input with dynamic axes the manifest's
min/opt/max optimisation profile, build with a timing cache shared by all graphs
of the folder (engines/NAME/timing.cache, so a rebuild is fast), write
engines/NAME/<graph>.plan and record the TensorRT version and GPU compute
capability in the manifest, one graph at a time, so an interrupted run resumes.

Precision. TensorRT 11 has only strongly typed networks: every tensor keeps the
type the ONNX graph gives it, and the FP16/BF16 builder flags are gone. So the
precision of an engine comes from the export: graphs exported in float16 or
bfloat16 build strongly typed and keep the float32 islands the torch modules
keep on purpose (Qwen2's RMSNorm computes its variance in float32). When
--precision asks for fp16/bf16 but the graphs were exported in float32,
TensorRT 10 builds a weakly typed network with the FP16/BF16 flag and picks
per-layer precision itself; TensorRT 11 refuses with a message to export in that
dtype. We do not cast a float32 graph's tensors ourselves: a float32 export does
not mark which ops must stay in float32, and a blind cast would move the norm
statistics to 16 bits, where Qwen2's large activations overflow.
"""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path
from types import ModuleType

from tqdm import tqdm
from vts_drive.engines.check_onnx import check_onnx_file
from vts_drive.engines.manifest import EngineRecord, GraphSpec, read_manifest, write_manifest
from vts_drive.engines.tensorrt_runtime import cuda_platform, import_tensorrt

from vts_drive.errors import InputError

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # --precision -> graph dtype
TIMING_CACHE = "timing.cache"


def build_engines(
    folder: Path,
    precision: str | None = None,
    workspace_gb: float = 4.0,
    graphs: list[str] | None = None,
    force: bool = False,
) -> list[Path]:
    """Build the engines of folder's graphs (all, or those named); returns the plan files.

    precision None builds in the dtype the graphs were exported in. A graph whose
    engine is already recorded for this TensorRT, GPU and precision is skipped
    unless force is set.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    precision = precision or _precision_of(manifest.dtype)
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if workspace_gb <= 0:
        raise InputError(f"workspace must be a positive number of GiB, got {workspace_gb}")
    selected = [manifest.graph(name) for name in graphs] if graphs else manifest.graphs
    trt = import_tensorrt()
    if _major(trt) < 10:
        raise InputError(f"TensorRT {trt.__version__} is too old: engines need TensorRT 10.x or 11.x")
    typing = _typing(trt, manifest.dtype, precision)
    gpu, capability = cuda_platform("cuda")
    plans = []
    for graph in tqdm(selected, desc="engines", unit="graph"):
        record = graph.engine
        plan = folder / f"{graph.name}.plan"
        current = (trt.__version__, capability, precision)
        if (
            not force
            and record
            and (record.tensorrt_version, record.compute_capability, record.precision) == current
            and (folder / record.file).is_file()
        ):
            tqdm.write(f"{graph.name}: engine up to date ({record.file})")
            plans.append(folder / record.file)
            continue
        violations = check_onnx_file(folder / graph.file, max_shapes=graph.max_shapes())
        if violations:
            first = violations[0]
            raise InputError(
                f"graph {graph.file} has {len(violations)} TensorRT violation(s), first: node "
                f"{first.node} ({first.op}): {first.reason}; see `vts-drive check-onnx {folder}`"
            )
        serialized = build_engine(trt, folder, graph, precision, typing, workspace_gb)
        _write_atomic(plan, serialized)
        graph.engine = EngineRecord(
            file=plan.name,
            precision=precision,
            typing=typing,
            tensorrt_version=trt.__version__,
            compute_capability=capability,
            gpu=gpu,
            built=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        )
        write_manifest(folder, manifest)
        plans.append(plan)
    return plans


def build_engine(
    trt: ModuleType, folder: Path, graph: GraphSpec, precision: str, typing: str, workspace_gb: float
) -> bytes:
    """One serialized engine (plan bytes) from folder/graph.file."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, typing))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(folder / graph.file)):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise InputError(f"TensorRT's ONNX parser rejected {folder / graph.file}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if typing == "weak" and precision != "fp32":
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        if any(dim < 0 for dim in tensor.shape):
            spec = graph.input(tensor.name)
            spec.check_profile(graph.name)
            if spec.profile is None:
                raise InputError(
                    f"input {tensor.name} of graph {graph.name} is dynamic {list(tensor.shape)} in "
                    "the ONNX graph but its manifest entry has no min/opt/max shapes"
                )
            profile.set_shape(tensor.name, spec.min, spec.opt, spec.max)
    config.add_optimization_profile(profile)

    cache_path = folder / TIMING_CACHE
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    if not config.set_timing_cache(
        cache, False
    ):  # a cache from another GPU or TensorRT version: start afresh
        tqdm.write(f"{cache_path} does not match this GPU or TensorRT version; starting a new timing cache")
        config.set_timing_cache(config.create_timing_cache(b""), False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InputError(f"TensorRT could not build an engine from {folder / graph.file} (see its log above)")
    _write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _typing(trt: ModuleType, graph_dtype: str, precision: str) -> str:
    """strong when the graph already has the precision asked for; weak (TensorRT 10 only) otherwise."""
    wanted = PRECISIONS[precision]
    if wanted == graph_dtype:
        return "strong"
    if graph_dtype == "float32" and _major(trt) == 10:
        return "weak"
    if graph_dtype == "float32":
        raise InputError(
            f"TensorRT {trt.__version__} takes precision from the graph, and these graphs are float32: "
            f"export them in {wanted} for --precision {precision}, or build with --precision fp32"
        )
    raise InputError(
        f"the graphs were exported in {graph_dtype}; --precision {precision} needs an export in {wanted}"
    )


def _network_flags(trt: ModuleType, typing: str) -> int:
    # TensorRT 11 networks are always strongly typed and its STRONGLY_TYPED flag is deprecated and ignored
    if typing == "strong" and _major(trt) == 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def _major(trt: ModuleType) -> int:
    return int(trt.__version__.split(".")[0])


def _precision_of(graph_dtype: str) -> str:
    for precision, dtype in PRECISIONS.items():
        if dtype == graph_dtype:
            return precision
    raise InputError(f"the manifest's dtype {graph_dtype!r} is not one of {', '.join(PRECISIONS.values())}")


def _write_atomic(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as partial:
        partial.write(data)
    Path(partial.name).replace(path)
