"""check-onnx: graphs built with onnx.helper and exported by torch.onnx, checked against TensorRT's ONNX support."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from vts_drive.engines.check_onnx import Violation, check_model, check_onnx_file, find_graphs
from vts_drive.engines.manifest import Manifest, describe_graph, write_manifest

from vts_drive.cli import main
from vts_drive.errors import InputError

FLOAT = TensorProto.FLOAT


def value(name: str, elem_type: int = FLOAT, shape=("batch", 8)) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, list(shape))


def const(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def model(nodes, inputs=None, outputs=None, initializers=(), opset: int = 17, domains=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs or [value("x")], outputs or [value("y")], list(initializers))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(domain, 1) for domain in domains]
    return helper.make_model(graph, opset_imports=opsets)


def save(tmp_path: Path, proto: onnx.ModelProto, name: str = "graph.onnx") -> Path:
    path = tmp_path / name
    onnx.save(proto, str(path))
    return path


def reasons(violations: list[Violation], node: str) -> list[str]:
    return [violation.reason for violation in violations if violation.node == node]


def topk_model(k: int = 4, sorted_: int = 1) -> onnx.ModelProto:
    nodes = [helper.make_node("TopK", ["x", "k"], ["y", "idx"], name="router_topk", axis=-1, sorted=sorted_)]
    outputs = [value("y", shape=("batch", k)), value("idx", TensorProto.INT64, shape=("batch", k))]
    return model(
        nodes,
        inputs=[value("x", shape=("batch", 4096))],
        outputs=outputs,
        initializers=[const("k", np.array([k], dtype=np.int64))],
    )


def test_clean_graph_passes(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
        helper.make_node("TopK", ["h", "k"], ["top", "idx"], name="router_topk", axis=-1),
        helper.make_node("GatherElements", ["h", "idx"], ["picked"], name="gather", axis=-1),
        helper.make_node("ScatterElements", ["h", "idx", "picked"], ["scattered"], name="scatter", axis=-1),
        helper.make_node("Shape", ["x"], ["x_shape"], name="shape"),
        helper.make_node(
            "Reshape", ["scattered", "x_shape"], ["y"], name="reshape"
        ),  # shape from shapes: fine
    ]
    proto = model(nodes, initializers=[const("w", np.ones((8, 8), np.float32)), const("k", np.array([4]))])
    path = save(tmp_path, proto)
    assert check_onnx_file(path) == []
    assert check_model(proto, "in-memory") == []


def test_custom_domain_op_is_rejected_with_its_node_name(tmp_path: Path) -> None:
    proto = model(
        [helper.make_node("FancyAttention", ["x"], ["y"], name="attn_3", domain="vts.custom")],
        domains=["vts.custom"],
    )
    violations = check_onnx_file(save(tmp_path, proto))
    assert violations == [Violation("graph.onnx", "attn_3", "FancyAttention", violations[0].reason)]
    assert "domain 'vts.custom'" in violations[0].reason and "plugin" in violations[0].reason


def test_op_absent_from_the_table_is_rejected(tmp_path: Path) -> None:
    proto = model([helper.make_node("Swish", ["x"], ["y"], name="act")], opset=24)
    assert reasons(check_onnx_file(save(tmp_path, proto)), "act") == [
        "not in TensorRT 10.15's ONNX operator table"
    ]


def test_op_marked_unsupported_is_rejected(tmp_path: Path) -> None:
    proto = model(
        [helper.make_node("Det", ["x"], ["y"], name="det")],
        inputs=[value("x", shape=(4, 4))],
        outputs=[value("y", shape=())],
    )
    assert reasons(check_onnx_file(save(tmp_path, proto)), "det") == [
        "not supported by TensorRT 10.15's ONNX parser"
    ]


def test_topk_rules(tmp_path: Path) -> None:
    assert check_onnx_file(save(tmp_path, topk_model(k=3839))) == []
    unsorted = check_onnx_file(save(tmp_path, topk_model(sorted_=0)))
    assert len(unsorted) == 1 and "sorted=0" in unsorted[0].reason and unsorted[0].node == "router_topk"
    too_big = check_onnx_file(save(tmp_path, topk_model(k=3840)))
    assert reasons(too_big, "router_topk") == ["K=3840: TensorRT 10.15 needs K < 3840"]


def test_topk_with_k_computed_at_run_time(tmp_path: Path) -> None:
    outputs = [value("y", shape=("batch", "k")), value("idx", TensorProto.INT64, shape=("batch", "k"))]
    from_shape = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape", start=1),
        helper.make_node("TopK", ["x", "shape"], ["y", "idx"], name="topk"),
    ]
    path = save(
        tmp_path, model(from_shape, inputs=[value("x", shape=("batch", "n"))], outputs=outputs)
    )  # K = n
    assert check_onnx_file(path, max_shapes={"x": [4, 3839]}) == []
    assert reasons(check_onnx_file(path, max_shapes={"x": [4, 5000]}), "topk") == [
        "K reaches 5000 at the profile's max shapes: TensorRT 10.15 needs K < 3840"
    ]
    found = reasons(check_onnx_file(path), "topk")
    assert len(found) == 1 and "computed from tensor shapes and could not be evaluated" in found[0]
    from_values = [helper.make_node("TopK", ["x", "k"], ["y", "idx"], name="topk")]
    inputs = [value("x"), value("k", TensorProto.INT64, shape=(1,))]
    found = reasons(
        check_onnx_file(save(tmp_path, model(from_values, inputs=inputs, outputs=outputs))), "topk"
    )
    assert len(found) == 1 and "data-dependent" in found[0]


def test_scatter_nd_with_reduction_is_rejected(tmp_path: Path) -> None:
    node = helper.make_node("ScatterND", ["x", "indices", "updates"], ["y"], name="kv_write", reduction="add")
    inputs = [
        value("x", shape=(4, 8)),
        value("indices", TensorProto.INT64, (2, 1)),
        value("updates", shape=(2, 8)),
    ]
    violations = check_onnx_file(save(tmp_path, model([node], inputs=inputs)))
    assert [(v.node, v.op) for v in violations] == [("kv_write", "ScatterND")]
    assert "reduction='add'" in violations[0].reason


def test_nonzero_and_value_dependent_shapes_are_rejected(tmp_path: Path) -> None:
    nonzero = model(
        [helper.make_node("NonZero", ["x"], ["y"], name="nz")],
        outputs=[value("y", TensorProto.INT64, shape=(2, "nonzero"))],
    )
    assert reasons(check_onnx_file(save(tmp_path, nonzero)), "nz") == [
        "output shape depends on input values (data-dependent shape)"
    ]
    # a length passed as a graph input and turned into a shape: TensorRT would need a host shape tensor
    nodes = [
        helper.make_node("Concat", ["minus_one", "length"], ["shape"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape"),
    ]
    inputs = [value("x"), value("length", TensorProto.INT64, shape=(1,))]
    proto = model(nodes, inputs=inputs, initializers=[const("minus_one", np.array([-1]))])
    found = reasons(check_onnx_file(save(tmp_path, proto)), "reshape")
    assert len(found) == 1 and "input 'shape'" in found[0] and "data-dependent" in found[0]


def test_old_opset_is_rejected(tmp_path: Path) -> None:
    proto = model([helper.make_node("Relu", ["x"], ["y"], name="relu")], opset=13)
    assert reasons(check_onnx_file(save(tmp_path, proto)), "(model)") == [
        "opset 13 is below 17: export with opset_version >= 17"
    ]


def test_unsupported_types_are_rejected(tmp_path: Path) -> None:
    double = model(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        inputs=[value("x", TensorProto.DOUBLE)],
        outputs=[value("y", TensorProto.DOUBLE)],
    )
    found = check_onnx_file(save(tmp_path, double))
    assert {v.node for v in found} == {"(input)", "relu"} and all("float64" in v.reason for v in found)
    integer_matmul = model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="int_mm")],
        inputs=[value("x", TensorProto.INT64)],
        outputs=[value("y", TensorProto.INT64, shape=("batch", 2))],
        initializers=[const("w", np.ones((8, 2), np.int64))],
    )
    found = reasons(check_onnx_file(save(tmp_path, integer_matmul)), "int_mm")
    assert found == ["input 'x' is int64; TensorRT 10.15 runs MatMul on FP32, FP16, BF16 only"]
    # uint8 is fine on a graph input (camera pixels), not inside the graph
    pixels = model(
        [
            helper.make_node("Cast", ["x"], ["y"], name="to_float", to=FLOAT),
            helper.make_node("Cast", ["y"], ["again"], name="to_uint8", to=TensorProto.UINT8),
            helper.make_node("Cast", ["again"], ["z"], name="back", to=FLOAT),
        ],
        inputs=[value("x", TensorProto.UINT8)],
        outputs=[value("y"), value("z")],
    )
    found = check_onnx_file(save(tmp_path, pixels))
    assert [(v.node, v.reason) for v in found] == [
        ("to_uint8", "tensor 'again' is uint8: TensorRT allows uint8 only on graph inputs and outputs")
    ]


def test_nodes_inside_if_branches_are_checked(tmp_path: Path) -> None:
    then_branch = helper.make_graph(
        [helper.make_node("NonZero", ["x"], ["nz"], name="inner")],
        "then",
        [],
        [value("nz", TensorProto.INT64, shape=(2, "n"))],
    )
    empty = const("", np.zeros((2, 0), np.int64))
    nothing = helper.make_node("Constant", [], ["none"], name="inner_const", value=empty)
    else_branch = helper.make_graph([nothing], "else", [], [value("none", TensorProto.INT64, shape=(2, 0))])
    node = helper.make_node(
        "If", ["cond"], ["y"], name="branch", then_branch=then_branch, else_branch=else_branch
    )
    proto = model(
        [node],
        inputs=[value("x"), value("cond", TensorProto.BOOL, shape=())],
        outputs=[value("y", TensorProto.INT64, shape=(2, "n"))],
    )
    violations = check_onnx_file(save(tmp_path, proto))
    assert [(v.node, v.op) for v in violations] == [("branch/then_branch/inner", "NonZero")]


def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a protobuf at all \xff\xfe")
    violations = check_onnx_file(path)
    assert [(v.graph, v.node) for v in violations] == [("broken.onnx", "(file)")]


class Router(torch.nn.Module):
    """Exporter patterns of mixture-of-depths routing: per-frame top-k with k = ceil(r * tokens per frame)
    computed from the (dynamic) token axis, gather the chosen tokens, scatter them back."""

    def __init__(self, sorted_topk: bool = True, accumulate: bool = False) -> None:
        super().__init__()
        self.score = torch.nn.Linear(8, 1)
        self.sorted_topk = sorted_topk
        self.accumulate = accumulate

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [F, N, 8]
        scores = self.score(tokens).squeeze(-1)  # [F, N]
        k = max(1, math.ceil(0.2 * tokens.shape[1] - 1e-9))
        _, chosen = torch.topk(scores, k=k, dim=-1, sorted=self.sorted_topk)  # [F, k]
        index = chosen.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])  # [F, k, 8]
        picked = torch.gather(tokens, 1, index) * 2.0
        if self.accumulate:
            return tokens.scatter_add(1, index, picked)
        return tokens.scatter(1, index, picked)


def export(module: torch.nn.Module, path: Path) -> Path:
    """torch.onnx.export as the project's exporter runs it (torch.export based), frames and tokens dynamic."""
    dims = {0: torch.export.Dim("frames", max=64), 1: torch.export.Dim("tokens", max=1024)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.randn(3, 16, 8),),
            str(path),
            dynamo=True,
            verbose=False,
            dynamic_shapes=(dims,),
            opset_version=18,
        )
    return path


def test_torch_export_of_a_router_passes_and_its_bad_variants_fail(tmp_path: Path) -> None:
    profile = {"tokens": [64, 1024, 8]}  # max shapes: K reaches ceil(0.2 * 1024) = 205
    good = export(Router(), tmp_path / "router.onnx")
    assert check_onnx_file(good, max_shapes=profile) == []
    too_many = check_onnx_file(good, max_shapes={"tokens": [64, 19200, 8]})
    assert [v.op for v in too_many] == ["TopK"] and "K reaches 3840 at the profile's max shapes" in too_many[
        0
    ].reason
    unbounded = check_onnx_file(good)  # no profile: K cannot be bounded
    assert [v.op for v in unbounded] == ["TopK"] and "could not be evaluated" in unbounded[0].reason
    unsorted = check_onnx_file(
        export(Router(sorted_topk=False), tmp_path / "unsorted.onnx"), max_shapes=profile
    )
    assert [v.op for v in unsorted] == ["TopK"] and "sorted=0" in unsorted[0].reason
    scatter_add = check_onnx_file(
        export(Router(accumulate=True), tmp_path / "scatter_add.onnx"), max_shapes=profile
    )
    assert [v.op for v in scatter_add] == ["ScatterElements"] and "reduction='add'" in scatter_add[0].reason


def test_cli_prints_violations_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    save(tmp_path, model([helper.make_node("Relu", ["x"], ["y"], name="relu")]), "clean.onnx")
    assert main(["check-onnx", str(tmp_path)]) == 0
    assert "clean.onnx: OK for TensorRT 10.15" in capsys.readouterr().out
    save(tmp_path, topk_model(sorted_=0), "router.onnx")
    assert main(["check-onnx", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("router.onnx"))
    assert "router_topk" in row and "TopK" in row and "sorted=0" in row
    assert "1 violation(s) in 1 graph(s)" in out


def test_cli_bounds_k_with_the_manifest_profiles(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    export(Router(), tmp_path / "router.onnx")
    assert main(["check-onnx", str(tmp_path)]) == 1  # no manifest: K computed from shapes is unbounded
    capsys.readouterr()
    spec = describe_graph(
        "router", tmp_path / "router.onnx", {"tokens": ([1, 2, 8], [3, 196, 8], [64, 1024, 8])}
    )
    write_manifest(tmp_path, Manifest("toy", "model", "sha256:0", "mod", 0.2, 18, "float32", {}, [spec]))
    assert main(["check-onnx", str(tmp_path)]) == 0
    assert "router.onnx: OK" in capsys.readouterr().out


def test_cli_rejects_a_folder_without_graphs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check-onnx", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"vts-drive check-onnx: error: {tmp_path} has no .onnx files"
    with pytest.raises(InputError):
        find_graphs(tmp_path / "missing")
