"""qdq-lint: each finding on a model that has the problem, and the clean twin; the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from int8_models import build, fvi, small_cnn
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.lint.qdq_lint import qdq_lint


def conv_model(*, zp_type=TensorProto.INT8, zp_value=0, scale=0.1, w_axis=0, w_scales=None, bias_dq=False,
               q_zero_point=True, add_both=False, dangling_q=False):
    """x -> Q/DQ -> Conv(W via DQ) [-> Add]: each argument breaks one rule."""
    w = np.ones((4, 2, 1, 1), np.int8)
    w_scales = np.full(4, 0.05, np.float32) if w_scales is None else np.asarray(w_scales, np.float32)
    inits = [numpy_helper.from_array(np.float32(scale), "s"),
             helper.make_tensor("zp", zp_type, [], [zp_value]),
             numpy_helper.from_array(w, "wq"), numpy_helper.from_array(w_scales, "ws"),
             numpy_helper.from_array(np.zeros(w_scales.shape, np.int8), "wzp"),
             numpy_helper.from_array(np.zeros(4, np.int32), "bq"), numpy_helper.from_array(np.float32(0.01), "bs"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b")]
    q_inputs = ["x", "s", "zp"] if q_zero_point else ["x", "s"]
    nodes = [helper.make_node("QuantizeLinear", q_inputs, ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"] if q_zero_point else ["xq", "s"], ["xd"], name="dq"),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["w"], name="wdq",
                              **({"axis": w_axis} if w_axis is not None else {}))]
    bias = "b"
    if bias_dq:
        nodes.append(helper.make_node("DequantizeLinear", ["bq", "bs"], ["bd"], name="bdq"))
        bias = "bd"
    nodes.append(helper.make_node("Conv", ["xd", "w", bias], ["y"], name="conv"))
    out = "y"
    if add_both:
        nodes += [helper.make_node("QuantizeLinear", ["y", "s", "zp"], ["yq"], name="q2"),
                  helper.make_node("DequantizeLinear", ["yq", "s", "zp"], ["yd"], name="dq2"),
                  helper.make_node("Add", ["yd", "xd2"], ["z"], name="residual"),
                  helper.make_node("QuantizeLinear", ["x2", "s", "zp"], ["x2q"], name="q3"),
                  helper.make_node("DequantizeLinear", ["x2q", "s", "zp"], ["xd2"], name="dq3")]
        out = "z"
    outputs = [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)]
    if dangling_q:
        nodes.append(helper.make_node("QuantizeLinear", ["y", "s", "zp"], ["lonely"], name="lonely_q"))
        outputs.append(helper.make_tensor_value_info("lonely", TensorProto.INT8, None))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])]
    if add_both:
        inputs.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 4, 4, 4]))
    g = helper.make_graph(nodes, "lint", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def lint(model):
    m = graphopt.load(model)
    from graphopt.analysis.shapes import infer_shapes

    infer_shapes(m)
    return [(f.severity, f.node, f.message) for f in qdq_lint(m)]


def test_clean_model_has_no_findings():
    assert lint(conv_model()) == []


@pytest.mark.parametrize("kwargs, node, message", [
    ({"zp_type": TensorProto.UINT8}, "q", "its zero point is not INT8 (TensorRT quantization is signed and symmetric)"),
    ({"zp_value": 3}, "q", "non-zero zero point (TensorRT quantization is symmetric)"),
    ({"scale": 0.0}, "q", "its scale is not strictly positive and finite"),
    ({"w_scales": [0.1, -0.1, 0.1, 0.1]}, "wdq", "its scale is not strictly positive and finite"),
    ({"w_axis": None}, "wdq", "per-channel scale without an explicit axis (ONNX's default axis is 1)"),
    ({"w_scales": [0.1, 0.1]}, "wdq", "2 scales along axis 0, which has 4 entries"),
    ({"bias_dq": True}, "conv", "its bias comes through DequantizeLinear; TensorRT fails to parse a quantized bias "
                                "(keep the bias in float)"),
    ({"q_zero_point": False}, "q", "no zero point: QuantizeLinear then outputs UINT8; TensorRT needs an INT8 zero "
                                   "point of 0"),
    ({"add_both": True}, "residual", "Q/DQ on both inputs of a residual Add; TensorRT fuses the Add into the conv "
                                     "only when the conv's side is not quantized"),
    ({"dangling_q": True}, "lonely_q", "QuantizeLinear not followed by DequantizeLinear"),
])
def test_each_problem_is_found(kwargs, node, message):
    findings = lint(conv_model(**kwargs))
    assert any(n == node and m == message for _, n, m in findings), findings


def test_per_channel_scales_on_an_activation_are_an_error():
    m = onnx.parser.parse_model("""<ir_version: 9, opset_import: ["" : 19]>
        g (float[1, 3] x) => (float[1, 3] y) <float[3] s = {0.1, 0.2, 0.3}, int8[3] zp = {0, 0, 0}> {
            q = QuantizeLinear <axis = 1> (x, s, zp)
            y = DequantizeLinear <axis = 1> (q, s, zp)
        }""")
    messages = {msg for _, _, msg in lint(m)}
    assert "per-channel scales on an activation; TensorRT takes them only for constant weights" in messages


def test_cli_exit_codes(tmp_path):
    bad = tmp_path / "bad.onnx"
    onnx.save(conv_model(zp_value=3), bad)
    run = subprocess.run([sys.executable, "-m", "graphopt", "qdq-lint", str(bad)], capture_output=True, text=True)
    assert run.returncode == 4
    assert "error: QuantizeLinear 'q': non-zero zero point" in run.stdout
    assert run.stdout.strip().endswith("graphopt qdq-lint: 2 errors, 0 warnings")
    good = tmp_path / "good.onnx"
    graphopt.optimize(small_cnn(), "int8", output=str(good), calibration=[{"x": np.ones((1, 3, 16, 16), np.float32)}] * 4)
    run = subprocess.run([sys.executable, "-m", "graphopt", "qdq-lint", str(good)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout
    assert run.stdout.strip() == "graphopt qdq-lint: 0 errors, 0 warnings"


def test_qdq_lint_checks_the_weight_axis():
    wq = np.ones((4, 2, 1, 1), np.int8)
    for axis, message in ((7, "axis 7 is out of range for a rank-4 tensor"),
                          (1, "per-channel scales along axis 1 of the weight of Conv 'conv'; its output channels are axis 0")):
        scales = np.full(2 if axis == 1 else 4, 0.1, np.float32)
        m = build([helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=axis),
                   helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
                  [fvi("x", [1, 2, 3, 3])], [fvi("y", [1, 4, 3, 3])],
                  {"wq": wq, "ws": scales, "wz": np.zeros(scales.shape, np.int8)}, opset=19, check=False)
        model = graphopt.load(m)
        model.graph.value("w").shape = (4, 2, 1, 1)
        assert message in {f.message for f in qdq_lint(model)}
