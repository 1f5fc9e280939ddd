"""Small models for the int8 tests, built with onnx.helper (seeded weights)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphopt.runtime.validate import LossyThresholds

# The default accuracy floor switched off: for tests of placement and budgets on toy models with
# random weights, whose few held-out samples say little about accuracy.
NO_FLOOR = LossyThresholds(min_cosine=0, min_norm_cosine=0, min_top1=0)


def _w(rng, *shape, scale=0.3):
    return rng.normal(0, scale, shape).astype(np.float32)


def small_cnn(opset: int = 17, seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu, a residual block, MaxPool, a two-branch Concat, GlobalAveragePool, Gemm:
    every placement rule of quantize-int8 has something to do."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(array, name))
        return name

    def conv(x, y, cin, cout, k, name, bn=False):
        w = init(f"{name}_w", _w(rng, cout, cin, k, k, scale=1.0 / np.sqrt(cin * k * k)))
        b = init(f"{name}_b", _w(rng, cout, scale=0.1))
        out = f"{name}_conv" if bn else y
        nodes.append(helper.make_node("Conv", ["x" if x is None else x, w, b], [out], name=name, pads=[k // 2] * 4))
        if bn:
            params = [init(f"{name}_bn_{p}", v) for p, v in (
                ("s", rng.uniform(0.5, 1.5, cout).astype(np.float32)), ("b", _w(rng, cout, scale=0.1)),
                ("m", _w(rng, cout, scale=0.1)), ("v", rng.uniform(0.5, 1.5, cout).astype(np.float32)))]
            nodes.append(helper.make_node("BatchNormalization", [out, *params], [y], name=f"{name}_bn"))

    conv("x", "c0", 3, 8, 3, "conv0", bn=True)
    nodes.append(helper.make_node("Relu", ["c0"], ["a0"], name="relu0"))
    conv("a0", "c1", 8, 8, 3, "conv1", bn=True)
    nodes.append(helper.make_node("Add", ["c1", "a0"], ["s1"], name="residual"))
    nodes.append(helper.make_node("Relu", ["s1"], ["r1"], name="relu1"))
    nodes.append(helper.make_node("MaxPool", ["r1"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]))
    conv("p", "ca", 8, 8, 1, "branch_a")
    conv("p", "cb", 8, 8, 3, "branch_b")
    nodes.append(helper.make_node("Relu", ["ca"], ["ra"], name="relu_a"))
    nodes.append(helper.make_node("Relu", ["cb"], ["rb"], name="relu_b"))
    nodes.append(helper.make_node("Concat", ["ra", "rb"], ["cat"], name="concat", axis=1))
    conv("cat", "c2", 16, 16, 3, "conv2")
    nodes.append(helper.make_node("Relu", ["c2"], ["r2"], name="relu2"))
    nodes.append(helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
    init("head_w", _w(rng, 10, 16, scale=0.5))
    init("head_b", _w(rng, 10, scale=0.1))
    nodes.append(helper.make_node("Gemm", ["flat", "head_w", "head_b"], ["logits"], name="head", transB=1))
    g = helper.make_graph(nodes, "small_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(m, full_check=True)
    return m


def mlp(opset: int = 17, seed: int = 0, softmax_bmm: bool = False) -> onnx.ModelProto:
    """MatMul+Add -> Gelu (Erf spelling) -> MatMul, a GEMV-shaped MatMul, and optionally an
    attention-style Softmax(Q K^T) V product."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(a, n) for n, a in (
        ("w1", _w(rng, 16, 32)), ("b1", _w(rng, 32, scale=0.1)), ("w2", _w(rng, 32, 16)),
        ("wv", _w(rng, 16, 1)), ("half", np.float32(0.5)), ("one", np.float32(1.0)),
        ("sqrt2", np.float32(np.sqrt(2.0))))]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="fc1_bias"),
        helper.make_node("Div", ["hb", "sqrt2"], ["g0"], name="gelu_div"),
        helper.make_node("Erf", ["g0"], ["g1"], name="gelu_erf"),
        helper.make_node("Add", ["g1", "one"], ["g2"], name="gelu_add"),
        helper.make_node("Mul", ["hb", "g2"], ["g3"], name="gelu_mul"),
        helper.make_node("Mul", ["g3", "half"], ["g"], name="gelu_half"),
        helper.make_node("MatMul", ["g", "w2"], ["y"], name="fc2"),
        helper.make_node("MatMul", ["y", "wv"], ["v"], name="gemv"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
               helper.make_tensor_value_info("v", TensorProto.FLOAT, None)]
    if softmax_bmm:
        nodes += [
            helper.make_node("Transpose", ["y"], ["yt"], name="kt", perm=[0, 2, 1]),
            helper.make_node("MatMul", ["y", "yt"], ["scores"], name="qk"),
            helper.make_node("Softmax", ["scores"], ["probs"], name="softmax", axis=-1),
            helper.make_node("MatMul", ["probs", "y"], ["att"], name="pv"),
        ]
        outputs.append(helper.make_tensor_value_info("att", TensorProto.FLOAT, None))
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 16])],
                          outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    m = onnx.shape_inference.infer_shapes(m)
    onnx.checker.check_model(m, full_check=True)
    return m


def unnamed_net(opset: int = 17, seed: int = 0, residual: bool = True) -> onnx.ModelProto:
    """Every node unnamed (as many exporters leave them): Conv -> Relu -> Conv (-> residual Add
    with the first Relu) -> Relu -> 1x1 Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm ->
    Relu -> MatMul. Value names: c0 a0 c1 [s1] a1 c2 a2 g f h hr y."""
    rng = np.random.default_rng(seed)
    arrays = {"w0": _w(rng, 8, 3, 3, 3, scale=0.2), "b0": _w(rng, 8, scale=0.1),
              "w1": _w(rng, 8, 8, 3, 3, scale=0.12), "b1": _w(rng, 8, scale=0.1),
              "w2": _w(rng, 8, 8, 1, 1, scale=0.35), "b2": _w(rng, 8, scale=0.1),
              "wg": _w(rng, 16, 8, scale=0.35), "bg": _w(rng, 16, scale=0.1), "wm": _w(rng, 16, 10, scale=0.25)}
    node = helper.make_node
    nodes = [node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
             node("Relu", ["c0"], ["a0"]),
             node("Conv", ["a0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1])]
    if residual:
        nodes += [node("Add", ["c1", "a0"], ["s1"]), node("Relu", ["s1"], ["a1"])]
    else:
        nodes.append(node("Relu", ["c1"], ["a1"]))
    nodes += [node("Conv", ["a1", "w2", "b2"], ["c2"]),
              node("Relu", ["c2"], ["a2"]),
              node("GlobalAveragePool", ["a2"], ["g"]),
              node("Flatten", ["g"], ["f"]),
              node("Gemm", ["f", "wg", "bg"], ["h"], transB=1),
              node("Relu", ["h"], ["hr"]),
              node("MatMul", ["hr", "wm"], ["y"])]
    assert all(n.name == "" for n in nodes)
    g = helper.make_graph(nodes, "unnamed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                          [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(m, full_check=True)
    return m


def unnamed_feeds(n: int = 32, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


# ------------------------------------------------------------------------------ small builders for single cases
REVIEW_RNG = np.random.default_rng(11)


def w(*shape, scale=0.3):
    return (REVIEW_RNG.standard_normal(shape) * scale).astype(np.float32)


def build(nodes, inputs, outputs, inits, opset=17, check=True):
    g = helper.make_graph(nodes, "m", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    if check:
        onnx.checker.check_model(m, full_check=True)
    return m


def fvi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def qdq_count(result):
    return sum(n.op_type == "QuantizeLinear" for n in result.model.graph.nodes)


def argmax_model():
    return build([helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1"),
                  helper.make_node("Relu", ["h"], ["r"]),
                  helper.make_node("Gemm", ["r", "w2"], ["s"], name="fc2"),
                  helper.make_node("ArgMax", ["s"], ["cls"], axis=1, keepdims=0)],
                 [fvi("x", ["N", 16])], [fvi("cls", ["N"], TensorProto.INT64)],
                 {"w1": w(16, 32), "w2": w(32, 8)})

def concat_model():
    """conv_a, conv_b -> inner Concat; that and a constant -> outer Concat -> conv."""
    return build([helper.make_node("Conv", ["x", "wa"], ["a"], name="ca"),
                  helper.make_node("Conv", ["x", "wb"], ["b"], name="cb"),
                  helper.make_node("Concat", ["a", "b"], ["ab"], axis=1, name="inner"),
                  helper.make_node("Concat", ["ab", "k"], ["abk"], axis=1, name="outer"),
                  helper.make_node("Conv", ["abk", "wc"], ["y"], name="cc")],
                 [fvi("x", ["N", 4, 5, 5])], [fvi("y", ["N", 4, 5, 5])],
                 {"wa": w(4, 4, 1, 1), "wb": w(4, 4, 1, 1), "k": w(1, 4, 5, 5, scale=3.0), "wc": w(4, 12, 1, 1)})
