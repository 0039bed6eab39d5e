"""Run TensorRT engines on torch CUDA tensors (the tensorrt backend).

One TensorRTEngine per graph of engines/NAME: it deserializes the plan, first
checking the manifest against the running TensorRT version and the GPU's compute
capability, then binds torch tensors by name and runs execute_async_v3 on
torch's current CUDA stream, so it orders with the surrounding torch work
without extra synchronisation. Output tensors are allocated from the shapes
TensorRT infers once the input shapes are set; check-onnx guarantees there is
no data-dependent output shape.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch
from vts_drive.engines.manifest import check_input_names, read_manifest, verify_engine

from vts_drive.errors import InputError

# tensorrt.DataType member -> torch dtype
TORCH_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT8": torch.int8,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
}


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError:
        raise InputError(
            "TensorRT is not installed: build engines on the vehicle computer (or any machine with an NVIDIA GPU "
            "and the tensorrt Python package) and run the tensorrt backend there"
        ) from None
    return tensorrt


def cuda_platform(device: torch.device | str) -> tuple[str, str]:
    """(GPU name, compute capability such as "8.7") of the CUDA device engines run on."""
    if not torch.cuda.is_available():
        raise InputError("TensorRT engines need a CUDA GPU, and torch sees none on this machine")
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def stream_handle(device: torch.device) -> int:
    """The cudaStream_t of torch's current stream on device, as TensorRT takes it."""
    return torch.cuda.current_stream(device).cuda_stream


class TensorRTEngine:
    """One graph's engine: inputs and outputs are dicts of torch tensors by tensor name."""

    def __init__(self, folder: Path, graph: str, device: torch.device | str = "cuda") -> None:
        trt = import_tensorrt()
        folder = Path(folder)
        spec = read_manifest(folder).graph(graph)
        self.device = torch.device(device)
        _, capability = cuda_platform(self.device)
        plan = verify_engine(folder, spec, trt.__version__, capability)
        self.name = str(plan)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise InputError(
                f"engine {plan} could not be deserialized (corrupt file?): "
                f"rebuild with `vts-drive build-engine {folder}`"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(index) for index in range(self.engine.num_io_tensors)]
        self.input_names = [
            name for name in names if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        ]
        self.output_names = [name for name in names if name not in self.input_names]
        if set(self.input_names) != {tensor.name for tensor in spec.inputs}:
            expected = [tensor.name for tensor in spec.inputs]
            raise InputError(
                f"engine {plan} has inputs {self.input_names}, its manifest {expected}: "
                f"rebuild with `vts-drive build-engine {folder}`"
            )
        self.dtypes = {name: _torch_dtype(trt, self.engine.get_tensor_dtype(name)) for name in names}

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run on torch's current stream; returns the outputs (ready in stream order)."""
        check_input_names(f"engine {self.name}", self.input_names, inputs)
        # inputs in the engine's dtypes on its device; kept alive until enqueued on the same stream
        bound = {
            name: inputs[name].to(self.device, self.dtypes[name]).contiguous() for name in self.input_names
        }
        for name, tensor in bound.items():
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                low, _, high = self.engine.get_tensor_profile_shape(name, 0)
                raise InputError(
                    f"input {name} of engine {self.name} has shape {list(tensor.shape)}, outside the "
                    f"profile it was built for ({list(low)} to {list(high)})"
                )
            self.context.set_tensor_address(name, tensor.data_ptr())
        unresolved = self.context.infer_shapes()
        if unresolved:
            raise RuntimeError(f"engine {self.name}: TensorRT cannot infer the shapes of {list(unresolved)}")
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(dim < 0 for dim in shape):
                raise RuntimeError(
                    f"engine {self.name}: output {name} has a data-dependent shape {list(shape)}"
                )
            outputs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        if not self.context.execute_async_v3(stream_handle(self.device)):
            raise RuntimeError(f"TensorRT failed to run engine {self.name}")
        return outputs


def load_engines(folder: Path, device: torch.device | str = "cuda") -> dict[str, TensorRTEngine]:
    """Every graph's engine in engines/NAME, by graph name (InputError if one is missing or stale)."""
    manifest = read_manifest(folder)
    return {graph.name: TensorRTEngine(folder, graph.name, device) for graph in manifest.graphs}


def _torch_dtype(trt: ModuleType, dtype) -> torch.dtype:
    for name, torch_dtype in TORCH_DTYPES.items():
        if getattr(trt.DataType, name, None) == dtype:
            return torch_dtype
    raise InputError(f"TensorRT tensor type {dtype} has no torch equivalent the runtime can bind")
