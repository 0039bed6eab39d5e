"""build-engine and the tensorrt backend, run through a stand-in `tensorrt` module.

TensorRT cannot run on these machines (no GPU, no TensorRT), so `StandInTensorRT`
stands in for it: it has the TensorRT 10/11 Python API names the build and
runtime code call, its parser reads the ONNX file, its "engine" records the
graph and the optimisation profile, and its execution context runs the graph
with onnxruntime on the memory bound by address. CUDA is stood in for by CPU
tensors, a fixed GPU (name, compute capability) and stream handle 0. The build
and binding code under test is the real code the vehicle runs.
"""

from __future__ import annotations

import ctypes
import enum
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from vts_drive.engines import tensorrt_runtime
from vts_drive.engines.manifest import Manifest, describe_graph, model_hash, read_manifest, write_manifest
from vts_drive.engines.tensorrt_build import build_engines
from vts_drive.engines.tensorrt_runtime import TensorRTEngine, load_engines

from vts_drive.cli import main
from vts_drive.errors import InputError

ORIN = ("Orin", "8.7")


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    BF16 = 7
    INT64 = 8


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class BuilderFlag(enum.Enum):
    FP16 = 0
    BF16 = 1


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 1


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0


ONNX_TYPES = {
    TensorProto.FLOAT: DataType.FLOAT,
    TensorProto.FLOAT16: DataType.HALF,
    TensorProto.INT64: DataType.INT64,
    TensorProto.INT32: DataType.INT32,
    TensorProto.BOOL: DataType.BOOL,
}
NUMPY_TYPES = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.INT64: np.int64,
    DataType.INT32: np.int32,
    DataType.BOOL: np.bool_,
}


class Logger:
    WARNING = 2

    def __init__(self, severity: int) -> None:
        self.severity = severity


class Tensor:
    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.name, self.shape = name, shape


class Network:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.onnx_path = ""
        self.inputs: list[Tensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> Tensor:
        return self.inputs[index]


class OnnxParser:
    def __init__(self, network: Network, logger: Logger) -> None:
        self.network = network
        self.num_errors = 0

    def parse_from_file(self, path: str) -> bool:
        graph = onnx.load(path).graph
        self.network.onnx_path = path
        for value in graph.input:
            dims = value.type.tensor_type.shape.dim
            shape = tuple(dim.dim_value if dim.HasField("dim_value") else -1 for dim in dims)
            self.network.inputs.append(Tensor(value.name, shape))
        return True


class OptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, list] = {}

    def set_shape(self, name: str, low, mid, high) -> None:
        self.shapes[name] = [list(low), list(mid), list(high)]


class TimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"+timings"


class BuilderConfig:
    def __init__(self) -> None:
        self.flags: set = set()
        self.pools: dict = {}
        self.profiles: list[OptimizationProfile] = []
        self.cache: TimingCache | None = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        self.pools[pool] = size

    def set_flag(self, flag: BuilderFlag) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile: OptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> TimingCache:
        return TimingCache(bytes(data))

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        self.cache = cache
        return True

    def get_timing_cache(self) -> TimingCache:
        return self.cache


class Builder:
    builds: list[dict] = []  # what each build_serialized_network call was given, for the tests to inspect

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def create_network(self, flags: int = 0) -> Network:
        return Network(flags)

    def create_builder_config(self) -> BuilderConfig:
        return BuilderConfig()

    def create_optimization_profile(self) -> OptimizationProfile:
        return OptimizationProfile()

    def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes:
        build = {
            "onnx": network.onnx_path,
            "network_flags": network.flags,
            "flags": sorted(flag.name for flag in config.flags),
            "workspace": config.pools[MemoryPoolType.WORKSPACE],
            "profile": config.profiles[0].shapes,
            "timing_cache": config.cache.data.decode(),
        }
        Builder.builds.append(build)
        return json.dumps(build).encode()


class ExecutionContext:
    def __init__(self, engine: CudaEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}
        self.results: dict[str, np.ndarray] = {}

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        low, _, high = self.engine.get_tensor_profile_shape(name, 0)
        if not all(a <= s <= b for a, s, b in zip(low, shape, high)) or len(shape) != len(low):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def infer_shapes(self) -> list[str]:
        """Output shapes from the bound input shapes: here by running the graph on the bound input memory."""
        feeds = {}
        for name in self.engine.inputs:
            dtype = NUMPY_TYPES[self.engine.dtypes[name]]
            count = int(np.prod(self.shapes[name]))
            raw = (ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(self.addresses[name])
            feeds[name] = np.frombuffer(raw, dtype=dtype).reshape(self.shapes[name]).copy()
        values = self.engine.session.run(self.engine.outputs, feeds)
        self.results = dict(zip(self.engine.outputs, values))
        return []

    def get_tensor_shape(self, name: str) -> tuple:
        return self.shapes[name] if name in self.shapes else self.results[name].shape

    def execute_async_v3(self, stream_handle: int) -> bool:
        assert isinstance(stream_handle, int)
        for name, result in self.results.items():
            result = np.ascontiguousarray(result)
            ctypes.memmove(self.addresses[name], result.ctypes.data, result.nbytes)
        return True


class CudaEngine:
    def __init__(self, build: dict) -> None:
        graph = onnx.load(build["onnx"]).graph
        self.session = onnxruntime.InferenceSession(build["onnx"], providers=["CPUExecutionProvider"])
        self.profile = build["profile"]
        self.inputs = [value.name for value in graph.input]
        self.outputs = [value.name for value in graph.output]
        self.dtypes = {
            value.name: ONNX_TYPES[value.type.tensor_type.elem_type]
            for value in [*graph.input, *graph.output]
        }
        self.static = {
            value.name: [d.dim_value for d in value.type.tensor_type.shape.dim] for value in graph.input
        }

    @property
    def num_io_tensors(self) -> int:
        return len(self.inputs) + len(self.outputs)

    def get_tensor_name(self, index: int) -> str:
        return [*self.inputs, *self.outputs][index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> DataType:
        return self.dtypes[name]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list:
        return self.profile.get(name) or [self.static[name]] * 3

    def create_execution_context(self) -> ExecutionContext:
        return ExecutionContext(self)


class Runtime:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes) -> CudaEngine | None:
        try:
            return CudaEngine(json.loads(data))
        except ValueError:
            return None


def stand_in_tensorrt(version: str) -> ModuleType:
    module = ModuleType("tensorrt")
    module.__version__ = version
    for item in (
        DataType,
        TensorIOMode,
        BuilderFlag,
        NetworkDefinitionCreationFlag,
        MemoryPoolType,
        Logger,
        Builder,
        OnnxParser,
        Runtime,
    ):
        setattr(module, item.__name__, item)
    return module


@pytest.fixture
def platform(monkeypatch: pytest.MonkeyPatch):
    """Installs a stand-in TensorRT of the given version on a stand-in GPU; returns the installer."""
    Builder.builds = []

    def install(version: str = "10.3.0", gpu: tuple[str, str] = ORIN) -> None:
        monkeypatch.setitem(sys.modules, "tensorrt", stand_in_tensorrt(version))
        monkeypatch.setattr(tensorrt_runtime, "cuda_platform", lambda device: gpu)
        monkeypatch.setattr(tensorrt_runtime, "stream_handle", lambda device: 0)
        monkeypatch.setattr("vts_drive.engines.tensorrt_build.cuda_platform", lambda device: gpu)

    install()
    return install


def export_folder(folder: Path, dtype: str = "float32", nodes=None) -> Path:
    """engines/NAME with one graph: y = 2 * tokens, next_ids = ids + 1, dynamic frames and ids axes."""
    folder.mkdir(parents=True)
    inputs = [
        helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["frames", 4]),
        helper.make_tensor_value_info("ids", TensorProto.INT64, ["length"]),
    ]
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["frames", 4]),
        helper.make_tensor_value_info("next_ids", TensorProto.INT64, ["length"]),
    ]
    nodes = nodes or [
        helper.make_node("Mul", ["tokens", "two"], ["y"], name="double"),
        helper.make_node("Add", ["ids", "one"], ["next_ids"], name="next"),
    ]
    initializers = [
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
    ]
    graph = helper.make_graph(nodes, "toy", inputs, outputs, initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(folder / "toy.onnx"))
    (folder / "config.json").write_text("{}")  # the folder doubles as the "checkpoint" hashed below
    spec = describe_graph(
        "toy", folder / "toy.onnx", {"tokens": ([1, 4], [3, 4], [8, 4]), "ids": ([1], [4], [16])}
    )
    write_manifest(
        folder, Manifest("toy", str(folder), model_hash(folder), "dense", None, 17, dtype, {}, [spec])
    )
    return folder


def test_build_then_run_binds_tensors_by_name(tmp_path: Path, platform) -> None:
    folder = export_folder(tmp_path / "toy")
    plans = build_engines(folder, workspace_gb=2)
    assert plans == [folder / "toy.plan"] and (folder / "timing.cache").read_bytes() == b"+timings"
    (build,) = Builder.builds
    assert (
        build["network_flags"] == 1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED and build["flags"] == []
    )
    assert build["profile"] == {"tokens": [[1, 4], [3, 4], [8, 4]], "ids": [[1], [4], [16]]}
    assert build["workspace"] == 2 << 30
    record = read_manifest(folder).graph("toy").engine
    assert (
        record.tensorrt_version,
        record.compute_capability,
        record.gpu,
        record.precision,
        record.typing,
    ) == ("10.3.0", "8.7", "Orin", "fp32", "strong")

    engine = TensorRTEngine(folder, "toy", device="cpu")
    tokens = torch.arange(12, dtype=torch.float64).view(3, 4)  # converted to the engine's float32
    ids = torch.tensor([5, 7], dtype=torch.int32)  # converted to the engine's int64
    outputs = engine({"tokens": tokens, "ids": ids})
    assert outputs["y"].dtype == torch.float32 and torch.equal(outputs["y"], (tokens * 2).float())
    assert outputs["next_ids"].dtype == torch.int64 and outputs["next_ids"].tolist() == [6, 8]
    assert list(load_engines(folder, device="cpu")) == ["toy"]


def test_rebuild_reuses_up_to_date_engines_and_the_timing_cache(tmp_path: Path, platform) -> None:
    folder = export_folder(tmp_path / "toy")
    build_engines(folder)
    build_engines(folder)
    assert len(Builder.builds) == 1
    build_engines(folder, force=True)
    assert len(Builder.builds) == 2 and Builder.builds[1]["timing_cache"] == "+timings"
    platform("10.8.0", ("H100", "9.0"))  # another machine: the old engine does not count
    build_engines(folder)
    assert len(Builder.builds) == 3 and read_manifest(folder).graph("toy").engine.tensorrt_version == "10.8.0"


def test_reduced_precision_of_a_float32_export(tmp_path: Path, platform) -> None:
    folder = export_folder(tmp_path / "toy")
    build_engines(folder, precision="fp16")
    assert Builder.builds[-1]["flags"] == ["FP16"] and Builder.builds[-1]["network_flags"] == 0
    assert read_manifest(folder).graph("toy").engine.typing == "weak"
    platform("11.1.0")
    with pytest.raises(InputError, match="export them in float16 for --precision fp16"):
        build_engines(folder, precision="fp16")
    build_engines(folder, precision="fp32")
    assert Builder.builds[-1]["network_flags"] == 0 and Builder.builds[-1]["flags"] == []


def test_graph_exported_in_float16_builds_strongly_typed(tmp_path: Path, platform) -> None:
    folder = export_folder(tmp_path / "toy", dtype="float16")
    build_engines(folder)
    assert read_manifest(folder).graph("toy").engine.precision == "fp16"
    assert Builder.builds[-1]["network_flags"] == 1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED
    with pytest.raises(InputError, match="--precision bf16 needs an export in bfloat16"):
        build_engines(folder, precision="bf16")


def test_build_refuses_a_graph_that_fails_check_onnx(tmp_path: Path, platform) -> None:
    nodes = [
        helper.make_node("Mul", ["tokens", "two"], ["y"], name="double"),
        helper.make_node("Add", ["ids", "one"], ["next_ids"], name="next"),
        helper.make_node("NonZero", ["tokens"], ["where"], name="find_ids"),
    ]
    folder = export_folder(tmp_path / "toy", nodes=nodes)
    with pytest.raises(InputError, match="node find_ids \\(NonZero\\).*data-dependent"):
        build_engines(folder)
    assert Builder.builds == []


def test_engine_from_another_tensorrt_or_gpu_is_refused(tmp_path: Path, platform) -> None:
    folder = export_folder(tmp_path / "toy")
    build_engines(folder)
    platform("10.8.0", ("H100", "9.0"))
    with pytest.raises(InputError) as error:
        TensorRTEngine(folder, "toy", device="cpu")
    assert str(error.value) == (
        f"engine {folder}/toy.plan was built with TensorRT 10.3.0 for sm_87; this machine "
        f"has TensorRT 10.8.0 on sm_90: rebuild with `vts-drive build-engine {folder}`"
    )


def test_bad_inputs_are_named(tmp_path: Path, platform) -> None:
    folder = export_folder(tmp_path / "toy")
    build_engines(folder)
    engine = TensorRTEngine(folder, "toy", device="cpu")
    with pytest.raises(InputError, match=r"missing \['ids'\], unknown \['token'\]"):
        engine({"tokens": torch.zeros(2, 4), "token": torch.zeros(1)})
    outside = r"input tokens .* shape \[9, 4\], outside the profile .* \(\[1, 4\] to \[8, 4\]\)"
    with pytest.raises(InputError, match=outside):
        engine({"tokens": torch.zeros(9, 4), "ids": torch.zeros(2, dtype=torch.int64)})
    (folder / "toy.plan").write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="could not be deserialized"):
        TensorRTEngine(folder, "toy", device="cpu")


def test_without_tensorrt_build_engine_exits_with_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    folder = export_folder(tmp_path / "toy")
    monkeypatch.setitem(
        sys.modules, "tensorrt", None
    )  # `import tensorrt` raises ImportError, as on this machine
    assert main(["build-engine", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        "vts-drive build-engine: error: TensorRT is not installed: build engines on the vehicle"
    )
    with pytest.raises(InputError, match="TensorRT is not installed"):
        TensorRTEngine(folder, "toy", device="cpu")
