"""The `fuse` passes: each where it fires and in a twin where it must not (strict runs: the
checker and onnxruntime equality are asserted by `optimized`)."""

import numpy as np
import onnx
import pytest
from helpers import optimized, run_ort
from onnx import TensorProto, helper, numpy_helper

from graphopt import driver as api
from graphopt.runtime.validate import Tolerance

RNG = np.random.default_rng(7)


def arr(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, shape).astype(np.float32)


def bn_inits(c, prefix="bn"):
    return [numpy_helper.from_array(arr(c, lo=0.5, hi=1.5), f"{prefix}_s"), numpy_helper.from_array(arr(c), f"{prefix}_b"),
            numpy_helper.from_array(arr(c), f"{prefix}_m"), numpy_helper.from_array(arr(c, lo=0.5, hi=1.5), f"{prefix}_v")]


def bn_node(x, y, prefix="bn", **attrs):
    return helper.make_node("BatchNormalization", [x, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"], [y], **attrs)


def model(nodes, inits, inputs, outputs, opset=17):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    m = onnx.shape_inference.infer_shapes(m)  # fills in the outputs' shapes
    onnx.checker.check_model(m, full_check=True)
    return m


def conv_bn(conv_op="Conv", group=1, bias=True, extra_use=False, training=False, weight_input=False):
    cin, cout = 4, 6
    w_shape = (cout, cin // group, 3, 3) if conv_op == "Conv" else (cin, cout // group, 3, 3)
    inits = [numpy_helper.from_array(arr(*w_shape), "w")] + bn_inits(cout)
    conv_in = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(arr(cout), "b"))
        conv_in.append("b")
    nodes = [helper.make_node(conv_op, conv_in, ["c"], pads=[1, 1, 1, 1], group=group),
             bn_node("c", "y", training_mode=1 if training else 0)]
    outputs = [("y", None)]
    if extra_use:
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
        outputs.append(("r", None))
    inputs = [("x", [2, cin, 5, 5])]
    if weight_input:
        inputs.append(("w", list(w_shape)))
        inits = inits[1:]
    return model(nodes, inits, inputs, outputs)


@pytest.mark.parametrize("conv_op,group,bias", [("Conv", 1, True), ("Conv", 2, False), ("ConvTranspose", 1, True),
                                                ("ConvTranspose", 2, True)])
def test_batchnorm_folds_into_conv(conv_op, group, bias):
    ops, records, _ = optimized(conv_bn(conv_op, group, bias), "fuse-batchnorm")
    assert ops == [conv_op] and records[0].stats == {"bn-into-conv": 1}


@pytest.mark.parametrize("kw,reason", [
    ({"extra_use": True}, "the conv output is read elsewhere"),
    ({"weight_input": True}, "the weight is an input, not a constant"),
])
def test_batchnorm_twins_that_must_not_fold(kw, reason):
    ops, records, _ = optimized(conv_bn(**kw), "fuse-batchnorm")
    assert "BatchNormalization" in ops and not records[0].modified, reason


def test_unfoldable_batchnorm_is_lowered_only_on_request():
    m = conv_bn(weight_input=True)
    ops, _, _ = optimized(m, "fuse-batchnorm{lower=true}")
    assert ops == ["Conv", "Mul", "Add"]
    ops, _, _ = optimized(m, "fuse-batchnorm")
    assert ops == ["Conv", "BatchNormalization"]


@pytest.mark.parametrize("trans_b", [0, 1])
def test_batchnorm_folds_into_gemm(trans_b):
    w = arr(8, 5) if not trans_b else arr(5, 8)
    m = model([helper.make_node("Gemm", ["x", "w", "c"], ["g"], transB=trans_b, beta=0.5), bn_node("g", "y")],
              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(arr(5), "c")] + bn_inits(5), [("x", [3, 8])], [("y", None)])
    ops, records, _ = optimized(m, "fuse-batchnorm")
    assert ops == ["Gemm"] and records[0].stats == {"bn-into-gemm": 1}


def test_batchnorm_after_a_2d_matmul_becomes_one_gemm_but_not_after_3d():
    m = model([helper.make_node("MatMul", ["x", "w"], ["g"]), bn_node("g", "y")],
              [numpy_helper.from_array(arr(8, 5), "w")] + bn_inits(5), [("x", [3, 8])], [("y", None)])
    ops, _, _ = optimized(m, "fuse-batchnorm")
    assert ops == ["Gemm"]
    m3 = model([helper.make_node("MatMul", ["x", "w"], ["g"]), bn_node("g", "y")],
               [numpy_helper.from_array(arr(8, 5), "w")] + bn_inits(4), [("x", [2, 4, 8])], [("y", None)])
    ops, records, _ = optimized(m3, "fuse-batchnorm")
    assert ops == ["MatMul", "BatchNormalization"] and not records[0].modified


def test_batchnorm_folds_when_the_conv_bias_is_computed_from_constants():
    """The dynamo exporter's bias-free conv: bias = Expand(CastLike(0, x), Shape(w)[0:1])."""
    text = """
    <ir_version: 8, opset_import: ["" : 18]>
    m (float[N, 4, 5, 5] x) => (float[N, 6, 5, 5] y) {
        wshape = Shape <start = 0, end = 1> (w)
        one = Constant <value_ints = [1]> ()
        n = Expand (wshape, one)
        zero = Constant <value = float {0.0}> ()
        zero_x = CastLike (zero, x)
        bias = Expand (zero_x, n)
        c = Conv <pads = [1, 1, 1, 1]> (x, w, bias)
        y = BatchNormalization (c, bn_s, bn_b, bn_m, bn_v)
    }
    """
    m = onnx.parser.parse_model(text)
    m.graph.initializer.extend([numpy_helper.from_array(arr(6, 4, 3, 3), "w")] + bn_inits(6))
    ops, records, _ = optimized(m, "fuse-batchnorm,dce")
    assert ops == ["Conv"]


def channel_model(op, c_shape, const_first=False, layer="Conv", dtype_double=False):
    c = arr(*c_shape, lo=0.5, hi=1.5)
    if dtype_double:
        c = c.astype(np.float64)
    if layer == "Conv":
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["h"], pads=[1, 1, 1, 1])]
        inits = [numpy_helper.from_array(arr(6, 4, 3, 3), "w"), numpy_helper.from_array(arr(6), "b")]
    else:
        nodes = [bn_node("x", "h")]
        inits = bn_inits(4)
    ins = ["k", "h"] if const_first else ["h", "k"]
    nodes.append(helper.make_node(op, ins, ["y"]))
    return model(nodes, inits + [numpy_helper.from_array(c, "k")], [("x", [2, 4, 5, 5])], [("y", None)])


@pytest.mark.parametrize("op,shape,first", [("Mul", (6, 1, 1), False), ("Mul", (1, 6, 1, 1), True), ("Add", (6, 1, 1), True),
                                            ("Sub", (6, 1, 1), False), ("Div", (1, 6, 1, 1), False), ("Mul", (), False)])
def test_per_channel_scale_layers_fold_into_the_conv(op, shape, first):
    ops, records, _ = optimized(channel_model(op, shape, first), "fuse-channel-affine")
    assert ops == ["Conv"] and sum(records[0].stats.values()) == 1


def test_per_channel_scale_folds_into_batchnorm():
    ops, _, _ = optimized(channel_model("Mul", (4, 1, 1), layer="BatchNormalization"), "fuse-channel-affine")
    assert ops == ["BatchNormalization"]


@pytest.mark.parametrize("shape", [(1, 1, 5, 5), (2, 6, 1, 1), (6, 5, 1)])
def test_scale_that_is_not_per_channel_is_left_alone(shape):
    ops, records, _ = optimized(channel_model("Mul", shape), "fuse-channel-affine")
    assert ops == ["Conv", "Mul"] and not records[0].modified


def test_zero_pad_folds_into_conv_but_reflect_pad_does_not():
    def build(mode, pads):
        nodes = [helper.make_node("Pad", ["x", "p"], ["xp"], mode=mode),
                 helper.make_node("Conv", ["xp", "w"], ["y"], pads=[1, 0, 1, 0])]
        inits = [numpy_helper.from_array(np.array(pads, np.int64), "p"), numpy_helper.from_array(arr(6, 4, 3, 3), "w")]
        return model(nodes, inits, [("x", [1, 4, 6, 6])], [("y", None)])

    ops, _, result = optimized(build("constant", [0, 0, 1, 2, 0, 0, 3, 0]), "fuse-pad-conv")
    assert ops == ["Conv"] and result.model.graph.nodes[0].attr("pads") == [2, 2, 4, 0]
    ops, records, _ = optimized(build("reflect", [0, 0, 1, 1, 0, 0, 1, 1]), "fuse-pad-conv")
    assert ops == ["Pad", "Conv"] and not records[0].modified
    ops, records, _ = optimized(build("constant", [1, 0, 0, 0, 0, 0, 0, 0]), "fuse-pad-conv")  # pads the batch
    assert not records[0].modified


@pytest.mark.parametrize("x_shape,c_shape,fires", [
    ([3, 8], [5], True),
    ([3, 8], [3, 5], True),
    ([2, 3, 8], [5], False),  # 3-D MatMul: Gemm is 2-D only
    ([3, 8], [2, 3, 5], False),  # Add would broadcast to a new shape
])
def test_matmul_add_becomes_gemm_where_shapes_allow(x_shape, c_shape, fires):
    m = model([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "c"], ["y"])],
              [numpy_helper.from_array(arr(8, 5), "w")], [("x", x_shape), ("c", c_shape)], [("y", None)])
    ops, records, _ = optimized(m, "fuse-matmul-add")
    assert (ops == ["Gemm"]) == fires and records[0].modified == fires


@pytest.mark.parametrize("rest, k, fires", [("int64[1] {8}", 8, True), ("int64[2] {2, 4}", 4, False)])
def test_matmul_add_after_a_reshape_by_a_computed_shape(rest, k, fires):
    """onnx's inference (at opset 11) loses the rank of a Reshape whose shape goes through a Cast
    (a Paddle export's flatten); the shape engine knows it (2-D: fires; 3-D: Gemm cannot take it)."""
    w = ", ".join(["0.5"] * (k * 5))
    proto = onnx.parser.parse_model(f"""<ir_version: 7, opset_import: ["" : 11]>
    m (float[N, 8, 1, 1] x) => (float y) <float[{k}, 5] w = {{{w}}}, float[5] c = {{1, 2, 3, 4, 5}}> {{
        sh = Shape (x)
        sh32 = Cast <to = 6> (sh)
        st = Constant <value = int64[1] {{0}}> ()
        en = Constant <value = int64[1] {{1}}> ()
        n32 = Slice (sh32, st, en)
        n = Cast <to = 7> (n32)
        tail = Constant <value = {rest}> ()
        s = Concat <axis = 0> (n, tail)
        f = Reshape (x, s)
        h = MatMul (f, w)
        y = Add (h, c)
    }}""")
    proto.graph.output[0].type.tensor_type.ClearField("shape")
    ops, records, _ = optimized(proto, "fuse-matmul-add")
    assert ("Gemm" in ops) == fires and records[0].modified == fires


def test_fused_weights_are_numerically_close_to_the_original():
    m = conv_bn()
    ops, _, result = optimized(m, "fuse")
    from graphopt.onnx_io.emit import to_proto

    x = RNG.standard_normal((2, 4, 5, 5)).astype(np.float32)
    a, b = run_ort(m, {"x": x})[0], run_ort(to_proto(result.model), {"x": x})[0]
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_fusions_recurse_into_subgraphs_with_outer_weights():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[2, 4, 5, 5] x, bool c) => (float[2, 6, 5, 5] y) {
        y = If (c) <
            then_branch = t () => (float[2, 6, 5, 5] t_out) {
                h = Conv <pads = [1, 1, 1, 1]> (x, w, b)
                t_out = BatchNormalization (h, bn_s, bn_b, bn_m, bn_v)
            },
            else_branch = e () => (float[2, 6, 5, 5] e_out) {
                e_out = Conv <pads = [1, 1, 1, 1]> (x, w, b)
            }
        >
    }
    """
    m = onnx.parser.parse_model(text)
    m.graph.initializer.extend([numpy_helper.from_array(arr(6, 4, 3, 3), "w"), numpy_helper.from_array(arr(6), "b")]
                               + bn_inits(6))
    ops, records, result = optimized(m, "fuse")
    then_ops = [n.op_type for n in result.model.graph.nodes[0].attr("then_branch").nodes]
    assert then_ops == ["Conv"]  # the new weights live in the branch; the outer ones still feed else
    assert records[0].stats == {"bn-into-conv": 1}


def test_lowered_batchnorm_uses_the_input_type():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 3, 4])
    rng = np.random.default_rng(0)
    params = [numpy_helper.from_array(rng.uniform(0.5, 1.5, 3).astype(np.float32), n) for n in ("s", "b", "m", "v")]
    g = helper.make_graph([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])], "g", [x], [y], params)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)
    result = api.optimize(m, "fuse-batchnorm{lower=true}", strict=True, tolerance=Tolerance(rtol=1e-3, atol=1e-3))
    assert [n.op_type for n in result.model.graph.nodes] == ["Mul", "Add"]


def spatial0_model(follow_with_mul: bool):
    rng = np.random.default_rng(1)
    shape = [3, 2, 3] if follow_with_mul else [3, 4, 4]
    params = [numpy_helper.from_array(rng.uniform(0.5, 1.5, shape).astype(np.float32), n) for n in ("s", "b", "m", "v")]
    if follow_with_mul:
        nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["c"], spatial=0),
                 helper.make_node("Mul", ["c", "k"], ["y"])]
        inits = params + [numpy_helper.from_array(rng.uniform(0.5, 1.5, (1, 3, 1, 1)).astype(np.float32), "k")]
        x_shape = [1, 3, 2, 3]
    else:
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
                 helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], spatial=0)]
        inits = params + [numpy_helper.from_array(rng.standard_normal((3, 2, 1, 1)).astype(np.float32), "w")]
        x_shape = [1, 2, 4, 4]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 7)], ir_version=4)


@pytest.mark.parametrize("follow_with_mul", [False, True])
def test_batchnorm_with_per_element_statistics_is_not_folded(follow_with_mul):
    result = api.optimize(spatial0_model(follow_with_mul), "fuse", strict=True)
    assert "BatchNormalization" in [n.op_type for n in result.model.graph.nodes]


def test_scoped_rules_do_not_rewrite_nodes_outside_the_scope():
    m = model([helper.make_node("Conv", ["x", "w"], ["c"], name="stem/conv"), bn_node("c", "y", name="body/bn")],
              [numpy_helper.from_array(arr(6, 4, 3, 3), "w")] + bn_inits(6), [("x", [1, 4, 5, 5])], [("y", None)])
    result = api.optimize(m, 'fuse-batchnorm except nodes ["stem/*"]', strict=True)
    assert [n.op_type for n in result.model.graph.nodes] == ["Conv", "BatchNormalization"]
