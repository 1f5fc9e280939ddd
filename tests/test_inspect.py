"""graphopt inspect: params exact, FLOPs against a hand count, formulas in symbolic dims, peak
activation memory, diff, and the CLI's JSON."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from helpers import GOLDEN, golden
from onnx import numpy_helper, shape_inference

import graphopt
from graphopt.analysis.cost import Poly
from graphopt.cli import main
from graphopt.driver import pin_input_shapes
from graphopt.report.inspect import inspect


def hand_count(path: str) -> tuple[int, int]:
    """(float params the graph reads, Conv + Gemm FLOPs) counted straight from the ONNX file."""
    m = onnx.load(path)
    read = {i for n in m.graph.node for i in n.input}
    params = sum(int(np.prod(t.dims)) for t in m.graph.initializer
                 if t.data_type == onnx.TensorProto.FLOAT and t.name in read)
    m = shape_inference.infer_shapes(m)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)}
    inits = {t.name: list(t.dims) for t in m.graph.initializer}
    flops = 0
    for n in m.graph.node:
        if n.op_type == "Conv":
            out = shapes[n.output[0]]  # [N, Cout, Hout, Wout]
            cout, cin_g, kh, kw = inits[n.input[1]]
            flops += 2 * out[0] * out[2] * out[3] * cout * cin_g * kh * kw + (out[0] * cout * out[2] * out[3] if len(n.input) > 2 else 0)
        elif n.op_type == "Gemm":
            w = inits[n.input[1]]
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            n_out, k = (w[0], w[1]) if trans_b else (w[1], w[0])
            m_rows = shapes[n.output[0]][0]
            flops += 2 * m_rows * n_out * k + (m_rows * n_out if len(n.input) > 2 else 0)
    return params, flops


def layer_flops(report) -> int:
    return sum(report["by_op_type"][op]["flops"] for op in ("Conv", "Gemm") if op in report["by_op_type"])


@pytest.mark.parametrize("name", ["resnet50", pytest.param("vgg19", marks=pytest.mark.large)])
def test_params_exact_and_flops_match_a_hand_count(golden_path, name):
    path = golden_path(next(m for m in golden.CORPUS if m.name == name))
    report = inspect(graphopt.load(path))
    params, flops = hand_count(path)
    assert report["params"] == params
    assert abs(layer_flops(report) - flops) <= 0.01 * flops
    assert report["macs"] == {"resnet50": 4_089_184_256, "vgg19": 19_632_062_464}[name]


def test_transformer_costs_are_formulas_until_pinned(golden_path):
    path = golden_path(next(m for m in golden.CORPUS if m.name == "encoder_dynamo"))
    free = inspect(graphopt.load(path))
    assert free["dynamic_dims"] == ["batch", "seq"]
    assert "batch*seq*seq" in free["macs"]  # attention: quadratic in the sequence
    pinned = graphopt.load(path)
    pin_input_shapes(pinned, {"input_ids": (2, 16), "attention_mask": (2, 16)})
    fixed = inspect(pinned)
    assert fixed["dynamic_dims"] == [] and isinstance(fixed["macs"], int)
    # the formula at batch=2, seq=16 is the pinned count
    poly = Poly()
    for term in free["macs"].split(" + "):
        factors = term.split("*")
        value = int(factors[0]) if factors[0].isdigit() else 1
        for f in factors[1 if factors[0].isdigit() else 0:]:
            value *= {"batch": 2, "seq": 16}[f]
        poly = poly + value
    assert poly.value() == fixed["macs"]


def test_peak_activation_memory_in_execution_order():
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
                           helper.make_node("MatMul", ["b", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1000])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                          [numpy_helper.from_array(np.zeros((1000, 10), np.float32), "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    report = inspect(graphopt.load(m))
    # each Relu's input dies once it has run: at most two 4000-byte tensors are alive at once
    assert report["peak_activation_bytes"] == 8000
    assert report["params"] == 10000 and report["weight_bytes"] == {"float32": 40000}
    assert report["macs"] == 10000 and report["flops"] == 2000 + 20000


def test_cli_json_and_diff(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    from int8_models import small_cnn

    onnx.save(small_cnn(), path)
    assert main(["inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"params", "flops", "macs", "weight_bytes", "peak_activation_bytes", "ops"} <= set(report)
    assert report["ops"]["BatchNormalization"] == 2
    out = tmp_path / "p.onnx"
    graphopt.optimize(str(path), "prune{method=channel,ratio=0.5}", output=str(out), validate=False)
    assert main(["inspect", str(path), "--diff", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ops"]["BatchNormalization"] == [2, 0] and d["params"][1] < d["params"][0]
    assert d["outputs"] == {}  # same outputs, same shapes


def test_markdown_report_with_per_layer_error_chart(tmp_path, capsys):
    from int8_models import small_cnn

    path = tmp_path / "m.onnx"
    onnx.save(small_cnn(), path)
    rep = tmp_path / "run.md"
    feeds = tmp_path / "c.npz"
    np.savez(feeds, x=np.random.default_rng(0).standard_normal((20, 3, 16, 16)).astype(np.float32))
    assert main([str(path), "-p", "int8", "--calib", str(feeds), "-o", str(tmp_path / "o.onnx"), "--report", str(rep)]) == 0
    text = rep.read_text()
    assert text.startswith("# graphopt report: m.onnx")
    assert "| 0 | raise-opset |" in text and "## What changed" in text and "| BatchNormalization nodes | 2 | 0 |" in text
    # one row per pass of int8 (raise-opset, fuse's members, fold's, quantize-int8, dce), not one per round
    from graphopt.passes import default_registry

    aliases = default_registry().aliases
    n = 1 + len(aliases["fuse"].members) + len(aliases["fold"].members) + 2
    rows = [line for line in text.split("## Passes")[1].split("##")[0].splitlines() if line.startswith("| ")]
    assert len(rows) - 1 == n and sum(row.startswith(f"| {n - 1} | dce | ") for row in rows) == 1
    assert "![per-layer error of quantize-int8](<run.quantize-int8.svg>)" in text
    svg = (tmp_path / "run.quantize-int8.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<rect") == 7  # the background, 5 convs and the Gemm
    capsys.readouterr()


def test_json_report_has_the_inspect_diff(tmp_path, capsys):
    from int8_models import small_cnn

    path = tmp_path / "m.onnx"
    onnx.save(small_cnn(), path)
    rep = tmp_path / "r.json"
    assert main([str(path), "-p", "fuse", "-o", str(tmp_path / "o.onnx"), "--report", str(rep)]) == 0
    d = json.loads(rep.read_text())["inspect_diff"]
    assert d["ops"]["BatchNormalization"] == [2, 0] and d["macs"][0] == d["macs"][1]
    capsys.readouterr()


def test_encoder_flops_match_a_hand_count(golden_path):
    """MatMul/Gemm FLOPs of the transformer encoder at batch 2, sequence 16, against shapes
    onnxruntime itself produces."""
    import onnxruntime as ort

    path = golden_path(next(m for m in golden.CORPUS if m.name == "encoder_dynamo"))
    m = onnx.load(path)
    layers = [n for n in m.graph.node if n.op_type in ("MatMul", "Gemm")]
    names = [x for n in layers for x in (n.input[0], n.output[0])]
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    known = {o.name for o in probe.graph.output}
    for name in dict.fromkeys(names):
        if name not in known and name not in {i.name for i in probe.graph.input}:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": np.ones((2, 16), np.int64), "attention_mask": np.ones((2, 16), np.int64)}
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    hand = 0
    for n in layers:
        a, y = outs.get(n.input[0], feeds.get(n.input[0])), outs[n.output[0]]
        k = a.shape[0] if n.op_type == "Gemm" and any(x.name == "transA" and x.i for x in n.attribute) else a.shape[-1]
        hand += 2 * y.size * k + (y.size if n.op_type == "Gemm" and len(n.input) > 2 else 0)
    pinned = graphopt.load(path)
    pin_input_shapes(pinned, {"input_ids": (2, 16), "attention_mask": (2, 16)})
    report = inspect(pinned)
    mine = sum(report["by_op_type"].get(op, {}).get("flops", 0) for op in ("MatMul", "Gemm"))
    assert abs(mine - hand) <= 0.01 * hand


def test_review_regressions(tmp_path, capsys):
    from onnx import TensorProto, helper

    # an output nothing reads (b) is freed at once: the peak is t + y, not t + y + b
    g = helper.make_graph([helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2),
                           helper.make_node("Tile", ["a", "reps"], ["t"]), helper.make_node("Relu", ["t"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1000])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4000])],
                          [numpy_helper.from_array(np.array([1, 8], np.int64), "reps")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    assert inspect(graphopt.load(m))["peak_activation_bytes"] == 16000 + 16000
    # bfloat16 weights are params
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [1, 4])],
                          [helper.make_tensor("w", TensorProto.BFLOAT16, [4, 4], np.zeros(16, np.uint16).tobytes(), raw=True)])
    bf = helper.make_model(g, opset_imports=[helper.make_opsetid("", 22)], ir_version=10)
    assert inspect(graphopt.load(bf))["params"] == 16
    # a cycle: one line, exit 1
    g = helper.make_graph([helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
                           helper.make_node("Identity", ["a"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "cycle.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    assert main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has a cycle" in err


def test_int8_weights_count_as_params_and_dequantized_weights_are_not_activations():
    """After int8 the model has as many params as the float model it came from (INT8 weights
    count, scales and zero points do not), and its peak activations are the float model's."""
    from int8_models import small_cnn

    from graphopt.onnx_io.emit import to_proto

    model = small_cnn()
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)} for i in range(8)]
    fp32 = graphopt.optimize(model, "fuse,fold", validate=False).model
    q = graphopt.optimize(to_proto(fp32), "int8", calibration=feeds, validate=False).model
    assert any(n.op_type == "DequantizeLinear" for n in q.graph.nodes)
    a, b = inspect(fp32), inspect(q)
    assert b["params"] == a["params"] > 1000
    assert b["peak_activation_bytes"] == a["peak_activation_bytes"]


def test_pruning_summary_and_inspect_agree_on_flops(tmp_path):
    """One cost model: prune-channels' before/after FLOPs are inspect's (formulas in N alike)."""
    model = graphopt.load(os.path.join(GOLDEN, "trained", "digits_cnn.onnx"))
    r = graphopt.optimize(os.path.join(GOLDEN, "trained", "digits_cnn.onnx"),
                          "prune-channels{method=channel,ratio=0.3}", validate=False)
    report = r.pass_reports["prune-channels"]
    assert isinstance(report["after"]["flops"], str) and report["after"]["flops"].endswith("*N")
    assert report["after"]["flops"] == inspect(r.model)["flops"] != inspect(model)["flops"]
    assert report["after"]["params"] == inspect(r.model)["params"]
    assert {k: report["before"][k] for k in ("params", "macs", "flops")} == {
        k: inspect(model)[k] for k in ("params", "macs", "flops")}


def test_weights_in_constant_nodes_are_weights_not_activations():
    """The same 64x64 weight as an initializer or a Constant node: same params, bytes and peak."""
    from onnx import TensorProto, helper

    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    io = ([helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])])
    as_init = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", *io,
                                                  [numpy_helper.from_array(w, "w")]))
    as_node = helper.make_model(helper.make_graph(
        [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w)),
         helper.make_node("MatMul", ["x", "w"], ["y"])], "g", *io))
    a, b = inspect(graphopt.load(as_init)), inspect(graphopt.load(as_node))
    assert a["params"] == b["params"] == 4096
    assert a["peak_activation_bytes"] == b["peak_activation_bytes"] == 2 * 64 * 4
    assert a["weight_bytes"] == b["weight_bytes"] == {"float32": 4096 * 4}
