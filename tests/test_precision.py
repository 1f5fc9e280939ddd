"""fp16 / bf16: every golden model within 1e-2 relative of FP32 with nothing infinite; what stays
float32 and why; Casts only at the borders; graph inputs/outputs kept float32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import golden_params, run_ort, seeded_feeds
from int8_models import unnamed_net
from onnx import TensorProto, helper, numpy_helper

import graphopt


@pytest.mark.parametrize("m", golden_params())
def test_fp16_stays_within_one_percent_of_fp32(tmp_path, golden_path, m):
    path = golden_path(m)
    out = tmp_path / "fp16.onnx"
    graphopt.optimize(path, "fp16", output=str(out), validate=False, initializers_as_constants=True)
    ref_model = onnx.load(path)
    feeds = seeded_feeds(ref_model, seed=3, dim=2)
    ref, got = run_ort(ref_model, feeds), run_ort(onnx.load(out), feeds)
    for r, g in zip(ref, got):
        assert g.dtype == r.dtype  # inputs and outputs stay float32
        if r.dtype.kind == "f" and r.size:
            assert np.all(np.isfinite(g[np.isfinite(r)]))
            scale = max(float(np.abs(r).max()), 1e-6)
            assert float(np.abs(g.astype(np.float64) - r).max()) <= 1e-2 * scale


def model(nodes, inits, shape=(1, 8)):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
                          [numpy_helper.from_array(a, n) for n, a in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_casts_only_at_region_borders_and_sensitive_ops_stay_float32():
    w = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    m = model([helper.make_node("MatMul", ["x", "w"], ["a"], name="mm1"),
               helper.make_node("Relu", ["a"], ["b"], name="relu"),
               helper.make_node("Softmax", ["b"], ["c"], name="softmax"),
               helper.make_node("MatMul", ["c", "w"], ["y"], name="mm2")], {"w": w})
    result = graphopt.optimize(m, "fp16")
    g = result.model.graph
    dtype = {n.name: n.outputs[0].dtype for n in g.nodes}
    assert dtype["mm1"] == dtype["relu"] == dtype["mm2"] == TensorProto.FLOAT16 and dtype["softmax"] == TensorProto.FLOAT
    casts = [n for n in g.nodes if n.op_type == "Cast"]
    assert len(casts) == 4  # x in, into Softmax, out of Softmax, y out
    assert result.pass_reports["fp16"]["kept_float32"] == {"softmax": "op type kept in float32"}
    assert g.outputs[0].name == "y" and g.outputs[0].dtype == TensorProto.FLOAT
    assert len([v for v in g.initializers if v.dtype == TensorProto.FLOAT16]) == 1  # w once, shared
    assert result.validation.accuracy.cosine > 0.999


def test_values_beyond_half_range_keep_their_ops_float32():
    m = model([helper.make_node("Mul", ["x", "big"], ["a"], name="scale_up"),
               helper.make_node("Mul", ["a", "small"], ["y"], name="scale_down")],
              {"big": np.float32(1e6), "small": np.float32(1e-6)})
    result = graphopt.optimize(m, "fp16")
    kept = result.pass_reports.get("fp16", {}).get("kept_float32", {})
    assert set(kept) == {"scale_up", "scale_down"} or not result.records[0].modified
    feeds = {"x": np.ones((1, 8), np.float32)}
    out = run_ort(graphopt.onnx_io.emit.to_proto(result.model), feeds)[0]
    assert np.all(np.isfinite(out)) and np.allclose(out, 1.0, rtol=1e-3)


def test_keep_io_false_makes_the_interface_half_and_bf16_converts():
    m = model([helper.make_node("Relu", ["x"], ["y"], name="relu")], {})
    half_io = graphopt.optimize(m, "fp16{keep_io=false}")  # validation feeds it float16
    assert half_io.validation.ok
    g = half_io.model.graph
    assert not any(n.op_type == "Cast" for n in g.nodes)
    assert g.inputs[0].dtype == g.outputs[0].dtype == TensorProto.FLOAT16
    bf = graphopt.optimize(m, "bf16", validate=False)
    assert any(v.dtype == TensorProto.BFLOAT16 for v in bf.model.graph.values)


def test_bf16_keeps_ops_without_a_bfloat16_schema(tmp_path, caplog):
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                           helper.make_node("Relu", ["c"], ["y"], name="relu")], "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    out = tmp_path / "bf.onnx"
    result = graphopt.optimize(m, "bf16", output=str(out))
    assert result.pass_reports["bf16"]["kept_float32"] == {"conv": "its ONNX schema at opset 17 has no bfloat16 version"}
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert result.validation is None and "validation skipped" in caplog.text  # no bfloat16 Relu on CPU


def test_second_run_changes_nothing():
    m = model([helper.make_node("Relu", ["x"], ["y"], name="relu")], {})
    once = graphopt.optimize(m, "fp16", validate=False)
    twice = graphopt.optimize(graphopt.onnx_io.emit.to_proto(once.model), "fp16", validate=False)
    assert not twice.records[0].modified


def test_review_regressions():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 8)).astype(np.float32)
    # the float32 weights are gone, replaced by their half copies
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"w": w})
    r = graphopt.optimize(m, "fp16", validate=False)
    assert [v.dtype for v in r.model.graph.initializers] == [TensorProto.FLOAT16]
    # constants that overflow or vanish in float16 keep their op in float32
    m = model([helper.make_node("Div", ["x", "big"], ["a"]), helper.make_node("Mul", ["a", "tiny"], ["y"])],
              {"big": np.float32(1e5), "tiny": np.float32(1e-9)})
    r = graphopt.optimize(m, "fp16")
    assert set(r.pass_reports["fp16"]["kept_float32"].values()) == {"a constant it reads does not fit float16"}
    out = run_ort(graphopt.onnx_io.emit.to_proto(r.model), {"x": np.full((1, 8), 1e5, np.float32)})[0]
    assert np.allclose(out, 1e-9, rtol=1e-3)
    # an op whose output type is an attribute stays float32
    m = model([helper.make_node("Constant", [], ["c"], value_float=2.0), helper.make_node("Mul", ["x", "c"], ["y"])], {})
    r = graphopt.optimize(m, "fp16")
    assert r.validation.ok
    # shape arithmetic on sizes cast from integers stays float32
    m = model([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
               helper.make_node("Mul", ["sf", "k"], ["sm"]), helper.make_node("Cast", ["sm"], ["si"], to=TensorProto.INT64),
               helper.make_node("Reshape", ["x", "si"], ["y"])], {"k": np.float32(1.0)})
    r = graphopt.optimize(m, "fp16", validate=False)
    reason = "it computes on sizes cast from integers (shape arithmetic)"
    assert r.pass_reports["fp16"]["kept_float32"] == {"Cast -> sf": reason, "Mul -> sm": reason}
    # keep_io=false leaves an input a subgraph reads in float32
    branch = lambda op, out: helper.make_graph([helper.make_node(op, ["x"], [out])], out, [],  # noqa: E731
                                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 8])])
    m = model([helper.make_node("Relu", ["x"], ["r"]),
               helper.make_node("ReduceSum", ["r"], ["t"], keepdims=0),
               helper.make_node("Greater", ["t", "zero"], ["c"]),
               helper.make_node("If", ["c"], ["y"], then_branch=branch("Neg", "a"), else_branch=branch("Abs", "b"))],
              {"zero": np.float32(0)})
    r = graphopt.optimize(m, "fp16{keep_io=false}")
    assert r.model.graph.inputs[0].dtype == TensorProto.FLOAT and r.validation.ok


def test_unnamed_nodes_are_converted_and_reported_by_label(tmp_path):
    out = tmp_path / "fp16.onnx"
    result = graphopt.optimize(unnamed_net(), "fp16{keep_ops=Gemm}", output=str(out))
    report = result.pass_reports["fp16"]
    assert report["kept_float32"] == {"Gemm -> h": "op type kept in float32"}
    assert list(report["layer_error"]) == ["Conv -> c0", "Conv -> c1", "Conv -> c2", "MatMul -> y"]
    proto = onnx.load(out)
    inits = {t.name: t.data_type for t in proto.graph.initializer}
    weight_type = [(n.op_type, inits[n.input[1]]) for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    F16, F32 = TensorProto.FLOAT16, TensorProto.FLOAT
    assert weight_type == [("Conv", F16), ("Conv", F16), ("Conv", F16), ("Gemm", F32), ("MatMul", F16)]
    assert all(n.name == "" for n in proto.graph.node if n.op_type != "Cast")
    # keep_nodes globs match names, not labels: nothing unnamed is kept by accident
    again = graphopt.optimize(unnamed_net(), 'fp16{keep_ops=Gemm,keep_nodes="Conv*,*c0*"}', validate=False)
    assert again.pass_reports["fp16"]["kept_float32"] == {"Gemm -> h": "op type kept in float32"}
