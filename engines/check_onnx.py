"""Static checks of ONNX graphs against what TensorRT can build, without TensorRT.

The build machines have no GPU and no TensorRT, so every exported graph is
checked here against TensorRT's ONNX operator support matrix (kept in
tensorrt_onnx_support.json with the TensorRT version it describes) and against
the rules our engine runtime relies on. A violation names the graph file, the
node, the op and the reason. The rules, in the order they are applied:

1. The file loads and passes onnx.checker; strict shape inference succeeds.
2. The default-domain opset is >= 17 and within the table's opset range.
3. Every node's op is in the table for the default ONNX domain and marked
   supported. Ops from other domains (com.microsoft, custom ops) would need a
   TensorRT plugin, so they are violations. Model-local functions are inlined
   first, as TensorRT's parser does; If/Loop/Scan bodies are checked too.
4. Tensor types: float64, string, complex, unsigned >8-bit and int16 tensors
   are violations anywhere; uint8 only on graph inputs and outputs; and the
   type of each op's main operand must be in the table's types for that op.
5. Op restrictions from the table that decide whether an engine builds:
   TopK sorted=1 and K < 3840 (how K is bounded: rule 6); ScatterND and
   ScatterElements with reduction "none" (other reductions need TensorRT's
   scatter plugin); Resize without antialias; LSTM layout=0 and
   input_forget=0; CumSum axis, OneHot depth, Squeeze/Unsqueeze axes and
   Reduce* axes constant.
6. No data-dependent output shapes, because the runtime allocates every output
   from shapes known once the inputs are bound:
   - NonZero, Unique, NonMaxSuppression and Compress are violations outright;
   - an input that sets an output shape (Reshape's shape, Expand's shape,
     Range's bounds, Slice's starts/ends, Tile's repeats, Pad's pads, ...)
     must not depend on tensor *values*. A tensor depends on values unless it
     is a constant, a Shape/Size output, or computed only from those. Graph
     inputs are values: a position or length passed as an input and turned
     into a shape would need a host-side TensorRT shape tensor, which the
     runtime does not feed. Outputs of If/Loop/Scan count as values.
   - TopK's K is either a build-time constant (an initializer or a Constant
     node output, through Identity), checked against K < 3840, or computed
     from tensor shapes only (TensorRT takes it as a shape tensor, such as
     K = ceil(r * tokens per frame) for mixture-of-depths routing). A
     shape-computed K is bounded by evaluating it with every graph input at
     the max shape of its optimisation profile (from the export's
     manifest.json), assuming K grows with the shapes it is computed from; it
     is a violation when that bound is >= 3840 or cannot be evaluated (no
     profile given, or K computed inside an If/Loop body). A K computed from
     tensor values is a data-dependent shape and always a violation.
"""

from __future__ import annotations

import json
import math
from collections import ChainMap
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, inliner, numpy_helper
from onnx.reference import ReferenceEvaluator

from vts_drive.errors import InputError

TABLE_PATH = Path(__file__).with_name("tensorrt_onnx_support.json")
MIN_OPSET = 17
TOPK_K_LIMIT = 3840  # K must be strictly below this
DEFAULT_DOMAINS = ("", "ai.onnx")

# ONNX element type -> the type names the support table uses
TABLE_TYPE = {
    TensorProto.FLOAT: "FP32",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.FLOAT8E4M3FN: "FP8",
    TensorProto.FLOAT4E2M1: "FP4",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.INT8: "INT8",
    TensorProto.INT4: "INT4",
    TensorProto.UINT8: "UINT8",
    TensorProto.BOOL: "BOOL",
}
TYPE_ADVICE: dict[int, str] = {
    TensorProto.DOUBLE: "TensorRT casts float64 down to float32 with clamping: export in float32",
    TensorProto.STRING: "TensorRT has no string tensors",
}

# ops whose output shape depends on the values of their input
DATA_DEPENDENT_OPS = {"NonZero", "Unique", "NonMaxSuppression", "Compress"}
# op -> input positions that set the output's shape
SHAPE_INPUTS = {
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "ConstantOfShape": (0,),
    "Range": (0, 1, 2),
    "Slice": (1, 2, 3, 4),
    "Pad": (1,),
    "Resize": (2, 3),
    "Upsample": (1,),
    "Split": (1,),
}
REDUCE_OPS = (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
)
# op -> input positions that must be build-time constants (table restrictions, and TopK's K)
CONSTANT_INPUTS = {
    "TopK": (1,),
    "CumSum": (1,),
    "OneHot": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    **{op: (1,) for op in REDUCE_OPS},
}
# (op, attribute) -> (ONNX default, values TensorRT accepts)
ATTRIBUTE_RULES = {
    ("TopK", "sorted"): (1, (1,)),
    ("ScatterND", "reduction"): ("none", ("none",)),
    ("ScatterElements", "reduction"): ("none", ("none",)),
    ("Resize", "antialias"): (0, (0,)),
    ("LSTM", "layout"): (0, (0,)),
    ("LSTM", "input_forget"): (0, (0,)),
}
# where an op's main operand type is, when it is not input 0 (None: not checked)
TYPED_OPERAND = {
    "Where": ("input", 1),
    "Constant": ("output", 0),
    "ConstantOfShape": ("output", 0),
    "RandomNormal": ("output", 0),
    "RandomUniform": ("output", 0),
    "If": None,
    "Loop": None,
    "Scan": None,
}
CONTROL_FLOW_OPS = ("If", "Loop", "Scan")


@dataclass(frozen=True)
class Violation:
    graph: str  # the graph's file name
    node: str  # node name; subgraph nodes as parent/attribute/node
    op: str
    reason: str


@dataclass(frozen=True)
class SupportTable:
    """TensorRT's ONNX operator support matrix for one TensorRT version."""

    tensorrt_version: str
    opset_min: int
    opset_max: int
    operators: dict  # op -> {"supported": bool, "types": [...], "restrictions": str}

    @classmethod
    def load(cls, path: Path = TABLE_PATH) -> SupportTable:
        data = json.loads(Path(path).read_text())
        return cls(data["tensorrt_version"], data["opset"]["min"], data["opset"]["max"], data["operators"])

    @property
    def label(self) -> str:
        return f"TensorRT {self.tensorrt_version}"


@cache
def default_table() -> SupportTable:
    return SupportTable.load()


def find_graphs(folder: Path) -> list[Path]:
    """The *.onnx files directly in folder, sorted; InputError if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder of exported ONNX graphs")
    graphs = sorted(folder.glob("*.onnx"))
    if not graphs:
        raise InputError(f"{folder} has no .onnx files")
    return graphs


def check_onnx_file(
    path: Path, table: SupportTable | None = None, max_shapes: dict[str, list[int]] | None = None
) -> list[Violation]:
    """All violations of one graph file (external data, if any, is read from beside it).

    max_shapes: input name -> the max shape of its optimisation profile, to bound shape-computed TopK K.
    """
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # a truncated or foreign file: report it, do not crash the run
        return [Violation(path.name, "(file)", "-", f"cannot be read as ONNX: {_first_line(error)}")]
    violations = []
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as error:
        violations.append(Violation(path.name, "(model)", "-", f"onnx.checker: {_first_line(error)}"))
    return violations + check_model(model, path.name, table, path.parent, max_shapes)


def check_model(
    model: onnx.ModelProto,
    graph_name: str,
    table: SupportTable | None = None,
    base_dir: Path | None = None,
    max_shapes: dict[str, list[int]] | None = None,
) -> list[Violation]:
    """All violations of an in-memory model (the exporter calls this right after export).

    graph_name labels the violations; base_dir is where external tensor data lives;
    max_shapes as for check_onnx_file.
    """
    return _ModelChecker(model, graph_name, table or default_table(), base_dir, max_shapes).run()


def format_violations(violations: list[Violation]) -> str:
    """A plain-text table: graph | node | op | reason."""
    header = Violation("graph", "node", "op", "reason")
    rows = [header, *violations]
    widths = [max(len(getattr(row, field)) for row in rows) for field in ("graph", "node", "op")]
    lines = []
    for index, row in enumerate(rows):
        cells = [row.graph.ljust(widths[0]), row.node.ljust(widths[1]), row.op.ljust(widths[2]), row.reason]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths) + "  ------")
    return "\n".join(lines)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class _ModelChecker:
    def __init__(
        self,
        model: onnx.ModelProto,
        graph_name: str,
        table: SupportTable,
        base_dir: Path | None,
        max_shapes: dict[str, list[int]] | None,
    ) -> None:
        self.graph_name = graph_name
        self.table = table
        self.base_dir = str(base_dir or "")
        self.max_shapes = max_shapes
        self.violations: list[Violation] = []
        self.opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), None)
        model = inliner.inline_local_functions(model) if model.functions else model
        try:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        except onnx.shape_inference.InferenceError as error:
            self.add("(model)", "-", f"shape inference failed: {_first_line(error)}")
            model = onnx.shape_inference.infer_shapes(model)
        self.model = model

    def add(self, node: str, op: str, reason: str) -> None:
        self.violations.append(Violation(self.graph_name, node, op, reason))

    def run(self) -> list[Violation]:
        table = self.table
        if self.opset is None:
            self.add("(model)", "-", "imports no default-domain (ai.onnx) opset")
        elif self.opset < MIN_OPSET:
            self.add(
                "(model)",
                "-",
                f"opset {self.opset} is below {MIN_OPSET}: export with opset_version >= {MIN_OPSET}",
            )
        elif self.opset > table.opset_max:
            self.add(
                "(model)",
                "-",
                f"opset {self.opset} is above {table.opset_max}, the newest {table.label} parses",
            )
        graph = self.model.graph
        self.check_graph(graph, "", ChainMap(), ChainMap(), ChainMap())
        return self.violations

    def check_graph(
        self,
        graph: onnx.GraphProto,
        prefix: str,
        constants: ChainMap,
        value_dependent: ChainMap,
        types: ChainMap,
    ) -> None:
        """Check one graph; the ChainMaps carry the enclosing scopes of subgraphs."""
        outputs = {output.name for output in graph.output}
        for info in [*graph.input, *graph.output, *graph.value_info]:
            if info.type.HasField("tensor_type"):
                types[info.name] = info.type.tensor_type.elem_type
        for tensor in graph.initializer:
            constants[tensor.name] = tensor
            value_dependent[tensor.name] = False
            types[tensor.name] = tensor.data_type
            self.check_type(prefix + "(initializer)", "-", tensor.name, tensor.data_type, at_boundary=False)
        for info in graph.input:
            if info.name not in constants:
                value_dependent[info.name] = True
                self.check_type(prefix + "(input)", "-", info.name, types.get(info.name), at_boundary=True)
        for index, node in enumerate(graph.node):
            name = prefix + (node.name or f"{node.op_type}#{index}")
            for output in node.output:
                if output:
                    self.check_type(
                        name, node.op_type, output, types.get(output), at_boundary=output in outputs
                    )
            self.check_node(node, name, constants, value_dependent, types)
            self.record_outputs(node, constants, value_dependent)
            for attribute in node.attribute:
                subgraphs = (
                    [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
                )
                for subgraph in subgraphs:
                    self.check_graph(
                        subgraph,
                        f"{name}/{attribute.name}/",
                        constants.new_child(),
                        value_dependent.new_child(),
                        types.new_child(),
                    )

    @staticmethod
    def record_outputs(node: onnx.NodeProto, constants: ChainMap, value_dependent: ChainMap) -> None:
        if node.op_type == "Constant":
            constants[node.output[0]] = node
        elif node.op_type == "Identity" and node.input[0] in constants:
            constants[node.output[0]] = constants[node.input[0]]
        if node.op_type in ("Constant", "Shape", "Size"):
            dependent = False
        elif node.op_type in CONTROL_FLOW_OPS:
            dependent = True
        else:
            dependent = any(value_dependent.get(name, False) for name in node.input if name)
        for output in node.output:
            value_dependent[output] = dependent

    def check_node(
        self, node: onnx.NodeProto, name: str, constants: ChainMap, value_dependent: ChainMap, types: ChainMap
    ) -> None:
        op = node.op_type
        if node.domain not in DEFAULT_DOMAINS:
            self.add(
                name,
                op,
                f"op from domain '{node.domain}' is not an ONNX standard op: "
                f"{self.table.label} would need a plugin for it",
            )
            return
        entry = self.table.operators.get(op)
        if entry is None:
            self.add(name, op, f"not in {self.table.label}'s ONNX operator table")
            return
        if not entry["supported"]:
            self.add(name, op, f"not supported by {self.table.label}'s ONNX parser")
            return
        self.check_operand_type(node, name, entry, types)
        for (rule_op, attribute), (default, allowed) in ATTRIBUTE_RULES.items():
            if op == rule_op:
                value = _attribute(node, attribute, default)
                if value not in allowed:
                    self.add(
                        name,
                        op,
                        f"{attribute}={value!r}: only {attribute}={allowed[0]!r} runs in "
                        f"{self.table.label}'s core layers",
                    )
        if op in DATA_DEPENDENT_OPS:
            self.add(name, op, "output shape depends on input values (data-dependent shape)")
        for position in SHAPE_INPUTS.get(op, ()):
            source = _input(node, position)
            if source and value_dependent.get(source, False):
                self.add(
                    name,
                    op,
                    f"input '{self.input_name(node, position)}' ({source}) is computed from tensor "
                    "values, so the output shape depends on data (data-dependent shape)",
                )
        for position in CONSTANT_INPUTS.get(op, ()):
            source = _input(node, position)
            if source:
                self.check_constant_input(node, name, position, source, constants, value_dependent)

    def check_constant_input(
        self,
        node: onnx.NodeProto,
        name: str,
        position: int,
        source: str,
        constants: ChainMap,
        value_dependent: ChainMap,
    ) -> None:
        label = self.input_name(node, position)
        if source not in constants:
            if node.op_type == "TopK" and value_dependent.get(source, False):
                reason = "K is computed from tensor values at run time (data-dependent output shape)"
            elif node.op_type == "TopK":
                bound = self.value_at_max_shapes(source)
                if bound is None:
                    reason = (
                        f"K is computed from tensor shapes and could not be evaluated at the profile's max "
                        f"shapes to check K < {TOPK_K_LIMIT} (is the graph in manifest.json?)"
                    )
                elif bound >= TOPK_K_LIMIT:
                    reason = (
                        f"K reaches {bound} at the profile's max shapes: "
                        f"{self.table.label} needs K < {TOPK_K_LIMIT}"
                    )
                else:
                    return
            else:
                reason = (
                    f"input '{label}' ({source}) must be a build-time constant (an initializer or Constant)"
                )
            self.add(name, node.op_type, reason)
        elif node.op_type == "TopK":
            k = int(np.asarray(self.constant_value(constants[source])).reshape(-1)[0])
            if k >= TOPK_K_LIMIT:
                self.add(name, "TopK", f"K={k}: {self.table.label} needs K < {TOPK_K_LIMIT}")

    def check_type(self, name: str, op: str, tensor: str, elem_type: int | None, at_boundary: bool) -> None:
        """at_boundary: tensor is a graph input or output."""
        if not elem_type:  # unknown after shape inference: nothing to say
            return
        type_name = TensorProto.DataType.Name(elem_type).lower()
        if elem_type == TensorProto.UINT8 and not at_boundary:
            self.add(
                name,
                op,
                f"tensor '{tensor}' is uint8: TensorRT allows uint8 only on graph inputs and outputs",
            )
        elif elem_type not in TABLE_TYPE:
            advice = TYPE_ADVICE.get(elem_type, f"{self.table.label} does not support {type_name} tensors")
            self.add(name, op, f"tensor '{tensor}' is {type_name}: {advice}")

    def check_operand_type(self, node: onnx.NodeProto, name: str, entry: dict, types: ChainMap) -> None:
        where = TYPED_OPERAND.get(node.op_type, ("input", 0))
        if where is None:
            return
        kind, position = where
        names = node.input if kind == "input" else node.output
        tensor = names[position] if position < len(names) else ""
        elem_type = types.get(tensor) if tensor else None
        if elem_type not in TABLE_TYPE:  # unknown, or already reported by check_type
            return
        if TABLE_TYPE[elem_type] not in entry["types"]:
            type_name = TensorProto.DataType.Name(elem_type).lower()
            self.add(
                name,
                node.op_type,
                f"{kind} '{tensor}' is {type_name}; {self.table.label} runs "
                f"{node.op_type} on {', '.join(entry['types'])} only",
            )

    def value_at_max_shapes(self, tensor: str) -> int | None:
        """A top-level tensor computed from shapes only, evaluated with every input at its max profile shape."""
        graph = self.max_shape_graph
        if graph is None:
            return None
        shapes = {
            value.name: [
                dim.dim_value if dim.HasField("dim_value") else None
                for dim in value.type.tensor_type.shape.dim
            ]
            for value in [*graph.input, *graph.value_info, *graph.output]
        }
        producers = {output: node for node in graph.node for output in node.output}
        initializers = {tensor.name: tensor for tensor in graph.initializer}
        nodes, feeds, used, pending = {}, {}, {}, [tensor]
        while pending:  # walk back from tensor to constants and Shape/Size outputs
            name = pending.pop()
            if name in nodes or name in feeds or name in used:
                continue
            if name in initializers:
                used[name] = initializers[name]
                continue
            node = producers.get(name)
            if node is None:  # a graph input's values, or a tensor of an If/Loop body
                return None
            if node.op_type in ("Shape", "Size"):
                shape = shapes.get(node.input[0])
                if shape is None or None in shape:
                    return None
                if node.op_type == "Size":
                    sizes: list[int] = [int(dim) for dim in shape if dim is not None]  # none is None here
                    feeds[name] = np.array(math.prod(sizes), dtype=np.int64)
                else:
                    feeds[name] = np.array(
                        shape[_attribute(node, "start", 0) : _attribute(node, "end", None)], np.int64
                    )
                continue
            for output in node.output:
                nodes[output] = node
            pending.extend(name for name in node.input if name)
        order = {id(node): index for index, node in enumerate(graph.node)}
        subgraph = helper.make_graph(
            sorted({id(node): node for node in nodes.values()}.values(), key=lambda node: order[id(node)]),
            "bound",
            [
                helper.make_tensor_value_info(name, TensorProto.INT64, value.shape)
                for name, value in feeds.items()
            ],
            [helper.make_empty_tensor_value_info(tensor)],
            list(used.values()),
        )
        evaluator = ReferenceEvaluator(helper.make_model(subgraph, opset_imports=self.model.opset_import))
        (value, *_) = evaluator.run(None, feeds)  # the tensor's value, a numpy array
        return int(np.asarray(value).reshape(-1)[0])

    @cached_property
    def max_shape_graph(self) -> onnx.GraphProto | None:
        """The top-level graph with its inputs fixed at their max profile shapes, shapes inferred."""
        if self.max_shapes is None:
            return None
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        for value in model.graph.input:
            dims = value.type.tensor_type.shape.dim
            shape = self.max_shapes.get(value.name)
            if shape is None:
                if all(dim.HasField("dim_value") for dim in dims):
                    continue
                return None
            if len(shape) != len(dims):
                return None
            for dim, size in zip(dims, shape):
                dim.Clear()
                dim.dim_value = int(size)
        return onnx.shape_inference.infer_shapes(model, data_prop=True).graph

    def constant_value(self, source: onnx.TensorProto | onnx.NodeProto) -> np.ndarray:
        if isinstance(source, onnx.TensorProto):
            return numpy_helper.to_array(source, base_dir=self.base_dir)
        value = helper.get_attribute_value(source.attribute[0])
        return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)

    def input_name(self, node: onnx.NodeProto, position: int) -> str:
        """The schema's name for an input ("shape", "K", "axes"), or its position."""
        try:
            schema = onnx.defs.get_schema(node.op_type, self.opset or MIN_OPSET, node.domain)
            formal = schema.inputs[min(position, len(schema.inputs) - 1)]
            return formal.name
        except onnx.defs.SchemaError:
            return f"#{position}"


def _input(node: onnx.NodeProto, position: int) -> str:
    return node.input[position] if position < len(node.input) else ""


def _attribute(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            value = helper.get_attribute_value(attribute)
            return value.decode() if isinstance(value, bytes) else value
    return default
