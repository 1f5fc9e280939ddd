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


# ------------------------------------------------------------------------------ equalization (issue 15)
def imbalanced_chain(kind: str = "conv", act: str = "Relu", seed: int = 3) -> onnx.ModelProto:
    """layer1 -> act -> layer2 whose channels are badly balanced: output channel i of layer1 is
    multiplied by a_i (a over four decades) and input channel i of layer2 divided by it, so the
    float function is an ordinary one but layer2's small columns read the large activations:
    what cross-layer equalization undoes. kind: conv, depthwise (a depthwise Conv first),
    grouped, gemm, matmul (MatMul + bias Add). act: an op type, "" for none, or "PRelu"."""
    rng = np.random.default_rng(seed)
    node = helper.make_node
    c = 16
    a = (10.0 ** rng.uniform(-2, 2, c)).astype(np.float32)
    inits: dict = {}
    if kind in ("conv", "depthwise", "grouped"):
        cin = c if kind == "depthwise" else 4
        group1 = c if kind == "depthwise" else 1
        w1 = rng.normal(0, 0.3, (c, cin // group1, 3, 3)).astype(np.float32) * a[:, None, None, None]
        b1 = rng.normal(0, 0.1, c).astype(np.float32) * a
        group2 = 4 if kind == "grouped" else 1
        cpg, opg = c // group2, 8 // group2
        w2 = rng.normal(0, 0.3, (8, cpg, 3, 3)).astype(np.float32)
        factor = np.array([[a[(o // opg) * cpg + j] for j in range(cpg)] for o in range(8)], np.float32)
        w2 = w2 / factor[:, :, None, None]  # input channel (o // opg) * cpg + j of row o
        inits.update(w1=w1, b1=b1, w2=w2.astype(np.float32), b2=rng.normal(0, 0.1, 8).astype(np.float32))
        layer1 = node("Conv", ["x", "w1", "b1"], ["h"], name="conv1", pads=[1] * 4, group=group1)
        layer2 = node("Conv", ["r", "w2", "b2"], ["y"], name="conv2", pads=[1] * 4, group=group2)
        x, y, axis = fvi("x", ["N", cin, 8, 8]), fvi("y", ["N", 8, 8, 8]), 1
        extra = []
    else:
        w1 = rng.normal(0, 0.3, (8, c)).astype(np.float32) * a[None, :]
        w2 = rng.normal(0, 0.3, (c, 8)).astype(np.float32) / a[:, None]
        b1 = rng.normal(0, 0.1, c).astype(np.float32) * a
        inits.update(w1=w1, w2=w2, b1=b1, b2=rng.normal(0, 0.1, 8).astype(np.float32))
        if kind == "gemm":
            layer1 = node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1")
            layer2 = node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2")
            extra = []
            x, y = fvi("x", ["N", 8]), fvi("y", ["N", 8])
        else:
            layer1 = node("MatMul", ["x", "w1"], ["h0"], name="fc1")
            extra = [node("Add", ["h0", "b1"], ["h"], name="fc1_bias")]
            layer2 = node("MatMul", ["r", "w2"], ["y0"], name="fc2")
            extra2 = node("Add", ["y0", "b2"], ["y"], name="fc2_bias")
            x, y = fvi("x", ["N", 4, 8]), fvi("y", ["N", 4, 8])
        axis = -1
    if act == "PRelu":
        slope = np.full(c, 0.1, np.float32)
        inits["slope"] = slope.reshape((c, 1, 1) if axis == 1 else (c,))
        mid = [node("PRelu", ["h", "slope"], ["r"], name="act")]
    elif act == "LeakyRelu":
        mid = [node("LeakyRelu", ["h"], ["r"], name="act", alpha=0.05)]
    elif act == "Clip":
        inits.update(lo=np.float32(0), hi=np.float32(6))
        mid = [node("Clip", ["h", "lo", "hi"], ["r"], name="act")]
    elif act:
        mid = [node(act, ["h"], ["r"], name="act")]
    else:  # nothing between: layer2 reads layer1's output
        mid = []
        layer2.input[0] = "h"
    nodes = [layer1, *extra, *mid, layer2] + ([extra2] if kind == "matmul" else [])
    return build(nodes, [x], [y], inits)


def chain_feeds(model: onnx.ModelProto, n: int = 40, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    vi = model.graph.input[0]
    shape = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
    return [{vi.name: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def outlier_layernorm(decomposed: bool = False, reader: str = "", seed: int = 5) -> onnx.ModelProto:
    """x [N, 8, 32] -> LayerNorm whose scale has a few channels 60x the rest (activation
    outliers, as trained transformers have) -> two MatMul + Add layers -> Add: what SmoothQuant
    evens out. decomposed: ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add instead of the
    operator. reader: an extra op reading the LayerNorm output ("Add": a residual; "Relu")."""
    rng = np.random.default_rng(seed)
    node = helper.make_node
    c = 32
    gamma = rng.uniform(0.5, 1.5, c).astype(np.float32)
    gamma[[3, 17, 29]] *= 60.0
    inits = {"gamma": gamma, "beta": rng.normal(0, 0.1, c).astype(np.float32),
             "wq": rng.normal(0, 0.2, (c, 16)).astype(np.float32), "bq": rng.normal(0, 0.1, 16).astype(np.float32),
             "wk": rng.normal(0, 0.2, (c, 16)).astype(np.float32), "bk": rng.normal(0, 0.1, 16).astype(np.float32)}
    if decomposed:
        inits.update(two=np.float32(2.0), eps=np.float32(1e-5), axes=np.array([-1], np.int64))
        nodes = [node("ReduceMean", ["x", "axes"], ["mu"], name="ln_mean"),
                 node("Sub", ["x", "mu"], ["d"], name="ln_sub"),
                 node("Pow", ["d", "two"], ["d2"], name="ln_pow"),
                 node("ReduceMean", ["d2", "axes"], ["var"], name="ln_var"),
                 node("Add", ["var", "eps"], ["ve"], name="ln_eps"),
                 node("Sqrt", ["ve"], ["sd"], name="ln_sqrt"),
                 node("Div", ["d", "sd"], ["nrm"], name="ln_div"),
                 node("Mul", ["nrm", "gamma"], ["sc"], name="ln_scale"),
                 node("Add", ["sc", "beta"], ["ln"], name="ln_bias")]
        opset = 18
    else:
        nodes = [node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], name="ln", axis=-1)]
        opset = 17
    nodes += [node("MatMul", ["ln", "wq"], ["q0"], name="q"), node("Add", ["q0", "bq"], ["q"], name="q_bias"),
              node("MatMul", ["ln", "wk"], ["k0"], name="k"), node("Add", ["k0", "bk"], ["k"], name="k_bias"),
              node("Add", ["q", "k"], ["y"], name="sum")]
    outputs = [fvi("y", ["N", 8, 16])]
    if reader == "Add":
        inits["wr"] = rng.normal(0, 0.2, (c, c)).astype(np.float32)
        nodes.append(node("Add", ["ln", "x"], ["res"], name="residual"))
        outputs.append(fvi("res", ["N", 8, c]))
    elif reader:
        nodes.append(node(reader, ["ln"], ["extra"], name="extra"))
        outputs.append(fvi("extra", ["N", 8, c]))
    return build(nodes, [fvi("x", ["N", 8, c])], outputs, inits, opset=opset)


def layernorm_feeds(n: int = 40, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 8, 32)).astype(np.float32)} for _ in range(n)]


def biased_conv(seed: int = 7, bias: bool = True) -> onnx.ModelProto:
    """A 1x1 Conv over 64 channels of all-positive input (mean ~3): each output channel's weight has
    one large entry, so the per-channel INT8 step is coarse and the rounding errors of the small
    weights, summed against the large mean input, shift every output: bias correction's case.
    bias=False: a MatMul without a bias Add instead (nothing to correct)."""
    rng = np.random.default_rng(seed)
    node = helper.make_node
    if bias:
        wt = rng.normal(0, 0.02, (16, 64, 1, 1)).astype(np.float32)
        wt[np.arange(16), rng.integers(0, 64, 16), 0, 0] = 2.0
        inits = {"w": wt, "b": rng.normal(0, 0.1, 16).astype(np.float32)}
        return build([node("Relu", ["x"], ["xr"], name="relu"), node("Conv", ["xr", "w", "b"], ["y"], name="conv")],
                     [fvi("x", ["N", 64, 6, 6])], [fvi("y", ["N", 16, 6, 6])], inits)
    wt = rng.normal(0, 0.02, (64, 16)).astype(np.float32)
    return build([node("Relu", ["x"], ["xr"], name="relu"), node("MatMul", ["xr", "w"], ["y"], name="mm")],
                 [fvi("x", ["N", 4, 64])], [fvi("y", ["N", 4, 16])], {"w": wt})


def positive_feeds(shape, n: int = 40, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal(shape) + 3.0).astype(np.float32)} for _ in range(n)]


def sensitive_cnn():
    """small_cnn with one output channel of conv2 500x larger (the head compensates): with
    per-tensor weight scales conv2 alone breaks the output."""
    return one_channel_500x(small_cnn(), "conv2_w", "conv2_b", "head_w")


def one_channel_500x(model: onnx.ModelProto, weight: str, bias: str, next_weight: str) -> onnx.ModelProto:
    """Output channel 0 of a layer 500x larger and the next layer's input channel 0 500x smaller:
    the float model computes the same, but per-tensor weight scales round the layer's other
    channels to zero."""
    for name, index, factor in ((weight, 0, 500.0), (bias, 0, 500.0), (next_weight, (slice(None), 0), 1 / 500.0)):
        t = next(t for t in model.graph.initializer if t.name == name)
        a = numpy_helper.to_array(t).copy()
        a[index] *= factor
        t.CopyFrom(numpy_helper.from_array(a, name))
    return model
