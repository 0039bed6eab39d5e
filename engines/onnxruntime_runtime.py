"""Run the exported ONNX graphs with ONNX Runtime (the onnxruntime backend).

One OnnxRuntimeGraph per graph of engines/NAME, called like TensorRTEngine:
a dict of torch tensors in, a dict of torch tensors out, by tensor name, so the
pipeline stages in stages.py run on either. Inputs are handed to ONNX Runtime as
numpy arrays (no copy for contiguous CPU tensors) and outputs come back on the
pipeline's device.

Execution providers: on --device cpu the CPU provider only; on --device cuda
TensorRT's and CUDA's providers first, where this onnxruntime build has them
(onnxruntime-gpu), with the CPU provider for whatever they do not take.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from vts_drive.engines.manifest import GraphSpec, check_input_names, read_manifest

from vts_drive.errors import InputError

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
# ONNX Runtime's type strings -> numpy dtypes, for the graph inputs' types
NUMPY_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8,
}


def providers_for(device: torch.device) -> list[str]:
    """Execution providers for a pipeline device, best first, among those this onnxruntime build has."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    return [provider for provider in GPU_PROVIDERS if provider in available] + ["CPUExecutionProvider"]


class OnnxRuntimeGraph:
    """One graph's session: inputs and outputs are dicts of torch tensors by tensor name."""

    def __init__(self, folder: Path, spec: GraphSpec, device: torch.device | str = "cpu") -> None:
        path = Path(folder) / spec.file
        if not path.is_file():
            raise InputError(
                f"graph {path} named in {Path(folder) / 'manifest.json'} is missing: export again"
            )
        self.name = str(path)
        self.device = torch.device(device)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        options.intra_op_num_threads = torch.get_num_threads()  # the thread budget torch was given
        # Between graph runs the pipeline's own torch code runs (token selection, sampling):
        # threads left spinning after a run would take the cores it needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.providers = providers_for(self.device)
        self.session = ort.InferenceSession(str(path), options, providers=self.providers)
        self.input_types = {value.name: NUMPY_DTYPES.get(value.type) for value in self.session.get_inputs()}
        self.output_names = [value.name for value in self.session.get_outputs()]

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        check_input_names(f"graph {self.name}", list(self.input_types), inputs)
        feeds = {name: _numpy(inputs[name], dtype) for name, dtype in self.input_types.items()}
        outputs = self.session.run(self.output_names, feeds)
        return {
            name: torch.from_numpy(array).to(self.device) for name, array in zip(self.output_names, outputs)
        }


def load_sessions(folder: Path, device: torch.device | str = "cpu") -> dict[str, OnnxRuntimeGraph]:
    """Every graph of engines/NAME in an ONNX Runtime session, by graph name."""
    manifest = read_manifest(folder)
    return {graph.name: OnnxRuntimeGraph(folder, graph, device) for graph in manifest.graphs}


def _numpy(tensor: torch.Tensor, dtype: type | None) -> np.ndarray:
    array = tensor.detach().to("cpu").contiguous().numpy()
    return array if dtype is None else array.astype(dtype, copy=False)
