"""The `fold` passes: each where it fires and in a twin where it must not.

`optimized()` runs a pipeline with strict=True: the output passed the ONNX checker with strict
shape inference and matched onnxruntime on seeded random inputs, or the test fails.
"""

import re

import numpy as np
import onnx
import pytest
from helpers import model_from_text, optimized, run_ort

import graphopt
from graphopt import driver as api
from graphopt.onnx_io.emit import to_proto


def header(opset=17):
    return f'<ir_version: 8, opset_import: ["" : {opset}]>'


# ------------------------------------------------------------------------------ fold-constants
def test_fold_constants_numpy_and_onnxruntime_paths():
    text = header() + """
    m (float[2, 3] x) => (float[2, 3] y) {
        a = Constant <value = float[3] {1.0, 2.0, 3.0}> ()
        b = Constant <value = float[3] {0.5, 0.5, 0.5}> ()
        c = Add (a, b)
        d = Exp (c)
        y = Mul (x, d)
    }
    """
    ops, records, result = optimized(text, "fold-constants")
    assert ops == ["Mul"]
    assert records[0].modified and records[0].stats["folded"] == 2
    (mul,) = result.model.graph.nodes
    np.testing.assert_allclose(result.model.graph.const_value(mul.inputs[1]), np.exp([1.5, 2.5, 3.5]), rtol=1e-6)


def test_fold_constants_folds_shape_of_static_values():
    text = header() + """
    m (float[2, 3] x) => (float[6] y) {
        s = Shape (x)
        n = ReduceProd <keepdims = 1> (s)
        y = Reshape (x, n)
    }
    """
    ops, _, result = optimized(text, "fold-constants")
    assert ops == ["Reshape"]
    assert list(result.model.graph.const_value(result.model.graph.nodes[0].inputs[1])) == [6]


@pytest.mark.parametrize("x, folds", [("float[12] x", True), ("float[2, N] x", False)])
def test_fold_constants_folds_what_its_own_folding_made_static(x, folds):
    # Reshape's shape is a folded Neg (onnx's shape inference does not propagate Neg): only once
    # it is a constant does y's shape become static and Shape(y) fold, in the same pass.
    # The twin: the shape folds to (-1, 4) of a run-time length, so Shape(y) stays.
    text = header() + f"""
    m ({x}) => (int64[2] s, float[A, B] y) {{
        a = Constant <value = int64[2] {{{-3 if folds else 1}, -4}}> ()
        c = Neg (a)
        y = Reshape (x, c)
        s = Shape (y)
    }}
    """
    ops, _, _ = optimized(text, "fold-constants")
    assert ("Shape" not in ops) == folds and "Reshape" in ops


@pytest.mark.parametrize("reader", ["Add (x, b)", "Neg (b)"])
def test_constants_onnxruntime_folds_run_in_one_session_beside_run_time_readers(monkeypatch, reader):
    # Sin and Cos have no numpy kernel here: onnxruntime folds them. A run-time node reading a
    # folded value (Add with x) must not join that batch: it has no data, and a failed batch
    # falls back to one session per node. The twin: a constant reader (Neg) joins the batch.
    from graphopt.analysis import constants

    batches = []
    real = constants._run_batch
    monkeypatch.setattr(constants, "_run_batch", lambda g, nodes, *a: batches.append(len(nodes)) or real(g, nodes, *a))
    text = header() + f"""
    m (float[4] x) => (float[4] y) {{
        a = Constant <value = float[4] {{1, 2, 3, 4}}> ()
        s = Sin (a)
        b = Cos (s)
        y = {reader}
    }}
    """
    ops, _, _ = optimized(text, "fold-constants")
    assert ops == (["Add"] if reader.startswith("Add") else ["Identity"])
    assert batches[0] == (2 if reader.startswith("Add") else 3)  # the first run: one session, nothing failed


def test_fold_constants_does_not_bloat_the_model():
    text = header() + """
    m (float[1024, 1024] x) => (float[1024, 1024] y) {
        one = Constant <value = float {1.0}> ()
        shape = Constant <value = int64[2] {1024, 1024}> ()
        big = Expand (one, shape)
        y = Add (x, big)
    }
    """
    ops, records, _ = optimized(text, "fold-constants")
    assert ops == ["Expand", "Add"]  # 4 MiB of ones from 4 bytes stays an Expand
    assert records[0].stats["skipped_large"] == 1
    ops, records, _ = optimized(text, "fold-constants{max_bytes=8388608}")  # the cap can be raised
    assert ops == ["Add"] and records[0].stats["skipped_large"] == 0


def test_fold_constants_leaves_random_ops_and_runtime_values():
    text = header() + """
    m (float[2, 3] x) => (float[2, 3] y) {
        r = RandomNormal <shape = [2, 3], seed = 1.0> ()
        y = Add (x, r)
    }
    """
    ops, records, _ = optimized(text, "fold-constants")
    assert ops == ["RandomNormal", "Add"] and not records[0].modified


def test_fold_constants_inside_a_loop_folds_outer_constants_but_not_carried_values():
    text = header() + """
    m (int64 trip, float[2] x) => (float[2] y) {
        k = Constant <value = float[2] {1.0, 2.0}> ()
        cond = Constant <value = bool {1}> ()
        y = Loop (trip, cond, x) <
            body = b (int64 i, bool c, float[2] a) => (bool c2, float[2] a2) {
                c2 = Identity (c)
                k2 = Mul (k, k)
                a2 = Add (a, k2)
            }
        >
    }
    """
    ops, _, result = optimized(text, "fold-constants")
    body = result.model.graph.nodes[0].attr("body")
    assert sorted(n.op_type for n in body.nodes) == ["Add", "Identity"]  # k*k folded, a+k2 not


def test_fold_constants_keeps_graph_output_names():
    text = header() + """
    m (float[2] x) => (float[2] y, float[2] c) {
        a = Constant <value = float[2] {1.0, 2.0}> ()
        c = Neg (a)
        y = Add (x, c)
    }
    """
    _, _, result = optimized(text, "fold-constants")
    assert [v.name for v in result.model.graph.outputs] == ["y", "c"]


# ------------------------------------------------------------------------------ fold-shape-chains
VIEW_HEAD = header() + """
m (float[N, 4, 2, 2] x) => (float[N, 16] y) {
    s = Shape (x)
    i0 = Constant <value = int64 {0}> ()
    n = Gather <axis = 0> (s, i0)
    ax = Constant <value = int64[1] {0}> ()
    n1 = Unsqueeze (n, ax)
    m1 = Constant <value = int64[1] {-1}> ()
    shape = Concat <axis = 0> (n1, m1)
    y = Reshape <allowzero = ALLOWZERO> (x, shape)
}
"""


@pytest.mark.parametrize("allowzero", [0, 1])
def test_view_head_becomes_a_constant_reshape_with_a_dynamic_batch(allowzero):
    ops, records, result = optimized(VIEW_HEAD.replace("ALLOWZERO", str(allowzero)), "fold-shape-chains,dce")
    assert ops == ["Reshape"]
    reshape = result.model.graph.nodes[0]
    assert list(result.model.graph.const_value(reshape.inputs[1])) == [0, -1]
    assert reshape.attr("allowzero", 0) == 0  # 0 copies the batch dim: allowzero must be off


def test_shape_chain_with_two_unknown_dims_is_left_alone():
    text = header() + """
    m (float[N, M, 4] x, float[A, B] z) => (float[A, B, 4] y) {
        s = Shape (z)
        four = Constant <value = int64[1] {4}> ()
        shape = Concat <axis = 0> (s, four)
        y = Reshape (x, shape)
    }
    """
    ops, records, _ = optimized(text, "fold-shape-chains")
    assert ops == ["Shape", "Concat", "Reshape"] and not records[0].modified


def test_allowzero_literal_zero_blocks_copying_dims():
    text = header() + """
    m (float[N, 0, 3] x) => (float[N, 0, 3] y) {
        s = Shape (x)
        i0 = Constant <value = int64[1] {0}> ()
        n = Gather <axis = 0> (s, i0)
        rest = Constant <value = int64[2] {0, 3}> ()
        shape = Concat <axis = 0> (n, rest)
        y = Reshape <allowzero = 1> (x, shape)
    }
    """
    ops, records, _ = optimized(text, "fold-shape-chains")
    assert not records[0].modified and "Shape" in ops


def test_expand_shape_with_a_dynamic_dim_keeps_it_with_1():
    text = header() + """
    m (float[N, 1] x) => (float[N, 5] y) {
        s = Shape (x)
        i0 = Constant <value = int64[1] {0}> ()
        n = Gather <axis = 0> (s, i0)
        five = Constant <value = int64[1] {5}> ()
        shape = Concat <axis = 0> (n, five)
        y = Expand (x, shape)
    }
    """
    ops, _, result = optimized(text, "fold-shape-chains,dce")
    assert ops == ["Expand"]
    assert list(result.model.graph.const_value(result.model.graph.nodes[0].inputs[1])) == [1, 5]


# ------------------------------------------------------------------------------ eliminate-noops
@pytest.mark.parametrize("body,removed", [
    ("y = Dropout (x)", "Dropout"),
    ("y = Cast <to = 1> (x)", "Cast"),
    ("t = Constant <value = int64[2] {2, 3}> ()\n y = Reshape (x, t)", "Reshape"),
    ("y = Transpose <perm = [0, 1]> (x)", "Transpose"),
    ("p = Constant <value = int64[4] {0, 0, 0, 0}> ()\n y = Pad (x, p)", "Pad"),
    ("y = Concat <axis = 0> (x)", "Concat"),
    ("y = Split <axis = 0> (x)", "Split"),
    ("one = Constant <value = float[3] {1.0, 1.0, 1.0}> ()\n y = Mul (x, one)", "Mul"),
    ("zero = Constant <value = float {0.0}> ()\n y = Sub (x, zero)", "Sub"),  # openWakeWord's mel front end
    ("zero = Constant <value = float {-0.0}> ()\n y = Add (x, zero)", "Add"),
    ("s = Constant <value = int64[2] {0, 0}> ()\n e = Constant <value = int64[2] {2, 3}> ()\n y = Slice (x, s, e)", "Slice"),
])
def test_noops_are_removed(body, removed):
    text = header() + f"""
    m (float[2, 3] x) => (float[2, 3] z) {{
        {body}
        z = Relu (y)
    }}
    """
    ops, records, _ = optimized(text, "eliminate-noops")
    assert ops == ["Relu"] and records[0].stats[f"removed_{removed}"] == 1


@pytest.mark.parametrize("body,out_type", [
    ("y = Cast <to = 11> (x)", "double[2, 3]"),  # a real conversion
    ("y = Transpose <perm = [1, 0]> (x)", "float[3, 2]"),
    ("p = Constant <value = int64[4] {0, 1, 0, 0}> ()\n y = Pad (x, p)", "float[2, 4]"),
    ("t = Constant <value = bool {1}> ()\n r = Constant <value = float {0.5}> ()\n y = Dropout (x, r, t)", "float[2, 3]"),
    ("s0 = Constant <value = int64[1] {0}> ()\n e0 = Constant <value = int64[1] {1}> ()\n y = Slice (x, s0, e0)", "float[1, 3]"),
    ("zero = Constant <value = float {0.0}> ()\n y = Add (x, zero)", "float[2, 3]"),  # -0.0 + 0.0 is +0.0
    ("zero = Constant <value = float {-0.0}> ()\n y = Sub (x, zero)", "float[2, 3]"),  # -0.0 - -0.0 is +0.0
    ("zero = Constant <value = float {0.0}> ()\n y = Sub (zero, x)", "float[2, 3]"),  # 0 - x is -x
    ("y, w = Split <axis = 0> (x)", "float[1, 3]"),  # two pieces
])
def test_real_work_is_not_removed(body, out_type):
    text = header() + f"""
    m (float[2, 3] x) => ({out_type} z) {{
        {body}
        z = Relu (y)
    }}
    """
    ops, records, _ = optimized(text, "eliminate-noops")
    assert not records[0].modified and len(ops) == 2


@pytest.mark.parametrize("starts,ends,axes,removed", [
    ("0", "9223372036854775807", "0", True),  # torch's x[:, ...] along a dim of unknown size
    ("0", "9223372036854775807", "-2", True),
    ("0, 0", "9223372036854775807, 6", "0, 1", True),  # the known dim: its end reaches it
    ("0", "2147483647", "0", False),  # a dim of unknown size might be longer than INT32_MAX
    ("1", "9223372036854775807", "0", False),  # drops the first row
    ("0, 0", "9223372036854775807, 5", "0, 1", False),  # drops the last column
])
def test_a_slice_to_int64_max_keeps_a_dim_of_unknown_size_whole(starts, ends, axes, removed):
    n = len(starts.split(","))
    text = header() + f"""
    m (float[N, 6] x) => (float[?, ?] z) {{
        s = Constant <value = int64[{n}] {{{starts}}}> ()
        e = Constant <value = int64[{n}] {{{ends}}}> ()
        a = Constant <value = int64[{n}] {{{axes}}}> ()
        y = Slice (x, s, e, a)
        z = Relu (y)
    }}
    """
    ops, records, _ = optimized(text, "eliminate-noops")
    assert (ops == ["Relu"]) == removed and records[0].modified == removed


@pytest.mark.parametrize("body,removed", [
    # tf2onnx's squeeze-excite and skl2onnx's trees: Reshape(x, [-1, C, 1, 1]) on an x already [N, C, 1, 1]
    ("t = Constant <value = int64[4] {-1, 8, 1, 1}> ()\n y = Reshape (x, t)", True),
    ("t = Constant <value = int64[4] {0, 8, 1, -1}> ()\n y = Reshape (x, t)", True),  # 0 copies N
    ("t = Constant <value = int64[4] {0, 8, 1, 1}> ()\n y = Reshape (x, t)", True),
    ("t = Constant <value = int64[4] {-1, 8, 1, 1}> ()\n y = Reshape <allowzero = 1> (x, t)", True),
    ("t = Constant <value = int64[4] {-1, 4, 2, 1}> ()\n y = Reshape (x, t)", False),  # moves elements between dims
    ("t = Constant <value = int64[3] {-1, 8, 1}> ()\n y = Reshape (x, t)", False),  # drops a dim
    ("y = Flatten <axis = 1> (x)", False),  # [N, 8, 1, 1] -> [N, 8]
])
def test_reshape_to_the_shape_a_symbolic_x_has_is_removed(body, removed):
    rank = 3 if "int64[3]" in body else 2 if "Flatten" in body else 4
    text = header() + f"""
    m (float[N, 8, 1, 1] x) => (float[{", ".join("?" * rank)}] z) {{
        {body}
        z = Relu (y)
    }}
    """
    ops, records, _ = optimized(text, "eliminate-noops")
    assert (ops == ["Relu"]) == removed and records[0].modified == removed


def _reshape_model(target, allowzero=None, opset=17, out_dims=None):
    """x [N, 8, 1, 1] -> Identity -> Reshape -> r -> Relu -> y; r is a graph output too, declared `out_dims`
    (a graph output's declaration is the interface: inference does not correct it)."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 8, 1, 1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    r = onnx.helper.make_tensor_value_info("r", onnx.TensorProto.FLOAT, out_dims)
    nodes = [onnx.helper.make_node("Identity", ["x"], ["a"])]
    if opset < 5:  # the shape was an attribute then
        nodes.append(onnx.helper.make_node("Reshape", ["a"], ["r"], shape=target))
        inits = []
    else:
        kw = {} if allowzero is None else {"allowzero": allowzero}
        nodes.append(onnx.helper.make_node("Reshape", ["a", "t"], ["r"], **kw))
        inits = [onnx.numpy_helper.from_array(np.array(target, np.int64), "t")]
    nodes.append(onnx.helper.make_node("Relu", ["r"], ["y"]))
    g = onnx.helper.make_graph(nodes, "g", [x], [y, r] if out_dims else [y], inits)
    return onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", opset)])


@pytest.mark.parametrize("target,allowzero,opset,out_dims,removed", [
    ([-1, 8, 1, 1], None, 4, None, True),  # the opset-4 attribute form
    ([0, 8, 1, 1], 1, 17, None, False),  # allowzero=1: 0 is a size of 0, not a copy of N
    ([-1, 8, 1, 1], None, 17, ["N", 4, 2, 1], False),  # the output's declared shape disagrees with x's
    ([-1, 8, 1, 1], None, 17, ["N", 8, 1, 1], True),  # its twin: the same graph output, agreeing
])
def test_reshape_no_op_rule_edges(target, allowzero, opset, out_dims, removed):
    from graphopt import driver

    result = driver.optimize(_reshape_model(target, allowzero, opset, out_dims), "eliminate-noops", validate=False)
    ops = [n.op_type for n in result.model.graph.nodes]
    assert ("Reshape" not in ops) == removed and result.records[0].modified == removed


@pytest.mark.parametrize("axis,removed", [(1, True), (-1, True), (0, False), (2, False)])
def test_flatten_of_a_matrix_at_axis_1_is_removed(axis, removed):
    text = header() + f"""
    m (float[N, 3] x) => (float[?, ?] z) {{
        y = Flatten <axis = {axis}> (x)
        z = Relu (y)
    }}
    """
    ops, records, _ = optimized(text, "eliminate-noops")
    assert (ops == ["Relu"]) == removed and records[0].modified == removed


def test_mul_by_ones_that_broadcasts_is_kept():
    text = header() + """
    m (float[3] x) => (float[2, 3] y) {
        one = Constant <value = float[2, 3] {1.0, 1.0, 1.0, 1.0, 1.0, 1.0}> ()
        y = Mul (x, one)
    }
    """
    ops, records, _ = optimized(text, "eliminate-noops")
    assert ops == ["Mul"] and not records[0].modified


def unknown_shape_times(one: str):
    """y * one where y's shape is unknown (an If whose branches differ in rank)."""
    proto = onnx.parser.parse_model(header() + f"""
    m (float[2, 3] x) => (float z) {{
        s = ReduceSum <keepdims = 0> (x)
        zero = Constant <value = float {{0.0}}> ()
        c = Greater (s, zero)
        y = If (c) <
            then_branch = t () => (float[2, 3] t_out) {{ t_out = Identity (x) }},
            else_branch = e () => (float[6] e_out) {{
                sh = Constant <value = int64[1] {{6}}> ()
                e_out = Reshape (x, sh)
            }}
        >
        one = Constant <value = {one}> ()
        z = Mul (y, one)
    }}""")
    proto.graph.output[0].type.tensor_type.ClearField("shape")  # the rank is unknown
    return proto


def test_mul_by_a_scalar_one_of_an_unknown_shape_is_removed():
    ops, records, _ = optimized(unknown_shape_times("float {1.0}"), "eliminate-noops")
    assert "Mul" not in ops and records[0].stats["removed_Mul"] == 1


def test_mul_by_a_one_element_one_of_an_unknown_shape_is_kept():
    ops, records, _ = optimized(unknown_shape_times("float[1] {1.0}"), "eliminate-noops")  # rank 0 would become 1
    assert "Mul" in ops and not records[0].modified


def test_mul_by_one_of_a_value_onnx_cannot_type_takes_the_constant_s_type():
    from onnx import TensorProto as T
    from onnx import helper as oh

    # onnx's inference leaves TreeEnsembleClassifier's probabilities untyped (an exporter's `* 1.0`)
    tree = oh.make_node("TreeEnsembleClassifier", ["x"], ["label", "prob"], domain="ai.onnx.ml",
                        classlabels_int64s=[0, 1], class_ids=[0, 1], class_nodeids=[0, 0], class_treeids=[0, 0],
                        class_weights=[0.25, 0.75], nodes_falsenodeids=[0], nodes_featureids=[0],
                        nodes_hitrates=[1.0], nodes_missing_value_tracks_true=[0], nodes_modes=["LEAF"],
                        nodes_nodeids=[0], nodes_treeids=[0], nodes_truenodeids=[0], nodes_values=[0.0],
                        post_transform="NONE")
    graph = oh.make_graph([tree, oh.make_node("Mul", ["prob", "one"], ["probabilities"])], "m",
                          [oh.make_tensor_value_info("x", T.FLOAT, [None, 2])],
                          [oh.make_tensor_value_info("label", T.INT64, [None]),
                           oh.make_tensor_value_info("probabilities", T.FLOAT, [None, 2])],
                          [oh.make_tensor("one", T.FLOAT, [], [1.0])])
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("ai.onnx.ml", 3)],
                          ir_version=8)
    ops, records, result = optimized(proto, "eliminate-noops")
    assert ops == ["TreeEnsembleClassifier"] and records[0].stats["removed_Mul"] == 1
    assert [v.name for v in result.model.graph.outputs] == ["label", "probabilities"]


# ------------------------------------------------------------------------------ cse
def test_cse_merges_identical_nodes_and_constants():
    text = header() + """
    m (float[2, 3] x) => (float[2, 3] y) {
        a = Relu (x)
        b = Relu (x)
        k1 = Constant <value = float[3] {1.0, 2.0, 3.0}> ()
        k2 = Constant <value = float[3] {1.0, 2.0, 3.0}> ()
        c = Add (a, k1)
        d = Add (b, k2)
        y = Mul (c, d)
    }
    """
    ops, records, _ = optimized(text, "fold-constants,cse,dce")
    assert ops == ["Relu", "Add", "Mul"]
    cse = next(r for r in records if r.name == "cse")
    assert cse.stats == {"nodes_merged": 2, "constants_merged": 1}


@pytest.mark.parametrize("pair", [
    ("Transpose <perm = [1, 0]> (x)", "Transpose <perm = [0, 1]> (x)"),
    ("LeakyRelu <alpha = 0.1> (x)", "LeakyRelu <alpha = 0.10000001> (x)"),
    ("RandomNormalLike <seed = 1.0> (x)", "RandomNormalLike <seed = 1.0> (x)"),
])
def test_cse_twins_that_must_not_merge(pair):
    text = header() + f"""
    m (float[3, 3] x) => (float[3, 3] y) {{
        a = {pair[0]}
        b = {pair[1]}
        y = Add (a, b)
    }}
    """
    ops, records, _ = optimized(text, "cse")
    assert len(ops) == 3 and not records[0].modified


@pytest.mark.parametrize("outputs, merged", [
    ("float[2, 3] h, float[2, 3] y", 1),  # the later Cast gives an output: it stays, the earlier goes
    ("float[2, 3] h, float[2, 3] y, float[2, 3] h2", 0),  # both give outputs: both stay
])
def test_cse_keeps_the_copy_that_gives_a_graph_output(outputs, merged):
    """imgly's ISNet casts one float16 value to float32 twice: for a graph output and for a Resize."""
    two = "h2 = Cast <to = 1> (a)" if "h2" in outputs else "c = Cast <to = 1> (a)"
    text = header() + f"""
    m (float[2, 3] x) => ({outputs}) {{
        a = Cast <to = 10> (x)
        {two}
        h = Cast <to = 1> (a)
        y = Relu ({'h2' if 'h2' in outputs else 'c'})
    }}
    """
    ops, records, result = optimized(text, "cse")
    assert records[0].stats["nodes_merged"] == merged and ops.count("Cast") == 3 - merged
    assert [v.name for v in result.model.graph.outputs] == re.findall(r"(\w+)(?:,|$)", outputs.replace(", 3]", "]"))


@pytest.mark.parametrize("second, merges", [
    ("[0.0, 1.5, 2.0]", True),
    ("[-0.0, 1.5, 2.0]", False),  # equal as numbers, not as bits
    ("[0.0, 1.5, 2.5]", False),
])
def test_cse_compares_whole_attribute_lists_exactly(second, merges):
    # list attributes are keyed whole (a tree ensemble's hold 100k numbers), floats by their bits
    text = header() + f"""
    m (float[3] x) => (float[3] y) {{
        k1 = Constant <value_floats = [0.0, 1.5, 2.0]> ()
        k2 = Constant <value_floats = {second}> ()
        s1 = Constant <value_strings = ["a", "b"]> ()
        s2 = Constant <value_strings = ["a", "b"]> ()
        a = Add (x, k1)
        b = Add (x, k2)
        y = Mul (a, b)
    }}
    """
    model = graphopt.load(model_from_text(text))
    for n in model.graph.nodes:  # as an exporter writes them: Constant nodes with list attributes
        assert n.op_type != "Constant" or isinstance(next(iter(n.attrs.values())).value, list)
    ops, records, _ = optimized(text, "cse")
    assert records[0].stats["nodes_merged"] == (3 if merges else 1)  # the strings always, then the Add


# ------------------------------------------------------------------------------ merge-reshapes / merge-transposes
def test_reshape_chain_merges_into_one_reshape():
    text = header() + """
    m (float[N, 6] x) => (float[N, 3, 2] y) {
        f = Flatten <axis = 1> (x)
        s = Constant <value = int64[3] {0, 3, 2}> ()
        r = Reshape (f, s)
        u = Constant <value = int64[1] {0}> ()
        q = Unsqueeze (r, u)
        y = Squeeze (q, u)
    }
    """
    ops, records, result = optimized(text, "merge-reshapes,dce")
    assert ops == ["Reshape"]
    g = result.model.graph
    assert list(g.const_value(g.nodes[0].inputs[1])) == [0, 3, 2]


def test_reshape_chain_with_a_shared_middle_is_left_alone():
    text = header() + """
    m (float[2, 6] x) => (float[3, 4] y, float[12] z) {
        a = Constant <value = int64[1] {12}> ()
        r = Reshape (x, a)
        b = Constant <value = int64[2] {3, 4}> ()
        y = Reshape (r, b)
        z = Relu (r)
    }
    """
    ops, records, _ = optimized(text, "merge-reshapes")
    assert ops.count("Reshape") == 2 and not records[0].modified


def test_a_transpose_that_moves_only_ones_merges_with_the_reshape_after_it():
    from helpers import model_from_text, seeded_feeds

    proto = model_from_text(header() + """
    m (float[N, 1, 1, 5] x) => (float[N, 5] y, float[1, N, 5] z) {
        t = Transpose <perm = [0, 3, 1, 2]> (x)
        s = Constant <value = int64[2] {-1, 5}> ()
        y = Reshape <allowzero = 1> (t, s)
        s2 = Constant <value = int64[3] {1, -1, 5}> ()
        r = Reshape (x, s2)
        z = Transpose <perm = [0, 1, 2]> (r)
    }""")
    ops, records, result = optimized(proto, "merge-reshapes,dce")
    assert ops == ["Reshape", "Reshape"] and records[0].stats == {"merged": 2}
    out = to_proto(result.model)
    for seed in range(3):
        feeds = seeded_feeds(proto, seed, dim=3)
        for a, b in zip(run_ort(proto, feeds), run_ort(out, feeds)):
            np.testing.assert_array_equal(a, b)


def test_a_transpose_that_reorders_dims_is_not_a_reshape():
    text = header() + """
    m (float[N, 2, 1, 5] x) => (float[N, 10] y) {
        t = Transpose <perm = [0, 3, 1, 2]> (x)
        s = Constant <value = int64[2] {-1, 10}> ()
        y = Reshape (t, s)
    }"""
    ops, records, _ = optimized(text, "merge-reshapes")
    assert ops == ["Transpose", "Reshape"] and not records[0].modified


def test_concat_of_a_concat_along_the_same_axis_is_one_concat():
    from helpers import model_from_text, seeded_feeds

    proto = model_from_text(header() + """
    m (float[2, 3] a, float[2, 4] b, float[2, 5] c) => (float[2, 12] y) {
        inner = Concat <axis = 1> (b, c)
        y = Concat <axis = -1> (a, inner)
    }""")
    ops, records, result = optimized(proto, "merge-concats")
    assert ops == ["Concat"] and records[0].stats == {"merged": 1}
    (node,) = result.model.graph.nodes
    assert [v.name for v in node.inputs] == ["a", "b", "c"] and node.outputs[0].name == "y"
    out = to_proto(result.model)
    feeds = seeded_feeds(proto)
    np.testing.assert_array_equal(run_ort(out, feeds)[0], run_ort(proto, feeds)[0])


@pytest.mark.parametrize("body", [
    # the inner Concat is along another axis
    "inner = Concat <axis = 0> (a, b)\n y = Concat <axis = 1> (inner, c)\n z = Relu (c)",
    # the inner Concat is read elsewhere too
    "inner = Concat <axis = 1> (a, b)\n y = Concat <axis = 1> (inner, a, a)\n z = Relu (inner)",
])
def test_concat_of_a_concat_on_another_axis_or_read_elsewhere_stays(body):
    text = header() + f"""
    m (float[2, 4] a, float[2, 4] b, float[4, 4] c) => (float[4, 8] y, float[4, 4] z) {{
        {body}
    }}"""
    proto = onnx.parser.parse_model(text)
    for o in proto.graph.output:
        o.type.tensor_type.ClearField("shape")
    ops, records, _ = optimized(proto, "merge-concats")
    assert not records[0].modified and ops.count("Concat") == 2


def test_transposes_cancel_or_merge():
    text = header() + """
    m (float[2, 3, 4] x) => (float[2, 3, 4] y, float[4, 2, 3] z) {
        a = Transpose <perm = [1, 2, 0]> (x)
        a2 = Transpose <perm = [2, 0, 1]> (a)
        y = Relu (a2)
        b = Transpose <perm = [1, 0, 2]> (x)
        b2 = Transpose <perm = [2, 1, 0]> (b)
        z = Relu (b2)
    }
    """
    ops, records, result = optimized(text, "merge-transposes")
    assert sorted(ops) == ["Relu", "Relu", "Transpose"] and records[0].stats == {"merged": 2}
    (t,) = [n for n in result.model.graph.nodes if n.op_type == "Transpose"]
    assert t.attr("perm") == [2, 0, 1]  # out[i] = x[p1[p2[i]]]


def test_transpose_read_twice_is_not_merged():
    text = header() + """
    m (float[2, 3] x) => (float[2, 3] y, float[3, 2] a) {
        a = Transpose <perm = [1, 0]> (x)
        y = Transpose <perm = [1, 0]> (a)
    }
    """
    ops, records, _ = optimized(text, "merge-transposes")
    assert ops == ["Transpose", "Transpose"] and not records[0].modified


def test_dequantize_of_a_quantized_weight_is_never_folded():
    text = header() + """
    m (float[2, 4] x) => (float[2, 4] y) {
        w = Constant <value = int8[4] {1, -2, 3, -4}> ()
        s = Constant <value = float {0.5}> ()
        z = Constant <value = int8 {0}> ()
        wf = DequantizeLinear (w, s, z)
        y = Mul (x, wf)
    }
    """
    ops, records, _ = optimized(text, "fold-constants")
    assert ops == ["DequantizeLinear", "Mul"]


def test_castlike_of_a_constant_folds_when_the_target_type_is_known():
    text = header() + """
    m (float[2] x) => (float[2] y) {
        one = Constant <value = double {1.5}> ()
        c = CastLike (one, x)
        y = Add (x, c)
    }
    """
    ops, _, result = optimized(text, "fold-constants")
    assert ops == ["Add"]
    assert result.model.graph.const_value(result.model.graph.nodes[0].inputs[1]).dtype == np.float32


# ------------------------------------------------------------------------------ folding against onnxruntime
# Each model once made a lossless pass change outputs, fail the checker or crash.
FOLDS = {
    "flatten_axis_equals_rank": ("13", """
        g (float[6, 1] x) => (float[6, 1] y) {
            c = Constant <value = float[2, 3] {1, 2, 3, 4, 5, 6}> ()
            f = Flatten <axis = 2> (c)
            y = Add (x, f)
        }"""),
    "slice_negative_step_start_below_minus_dim": ("13", """
        g (float[1] x) => (float[1] y) {
            c = Constant <value = float[4] {1, 2, 3, 4}> ()
            s = Constant <value = int64[1] {-5}> ()
            e = Constant <value = int64[1] {-10}> ()
            a = Constant <value = int64[1] {0}> ()
            st = Constant <value = int64[1] {-1}> ()
            f = Slice (c, s, e, a, st)
            y = Add (x, f)
        }"""),
    "reduce_noop_with_empty_axes": ("13", """
        g (int64[2, 3] x) => (int64[2, 3] y) {
            c = Constant <value = int64[2, 3] {1, 2, 3, 4, 5, 6}> ()
            f = ReduceSum <noop_with_empty_axes = 1> (c)
            y = Add (x, f)
        }"""),
    "int64_div_beyond_float64": ("13", """
        g (int64[1] x) => (int64[1] y) {
            c = Constant <value = int64[1] {9007199254740993}> ()
            d = Constant <value = int64[1] {1}> ()
            f = Div (c, d)
            y = Add (x, f)
        }"""),
    "cast_int_to_string": ("13", """
        g (float[2] x) => (int64[2] y) {
            c = Constant <value = int64[2] {1, 2}> ()
            s = Cast <to = 8> (c)
            y = Cast <to = 7> (s)
        }"""),
    "cast_to_float8_saturates": ("19", """
        g (float[3] x) => (float[3] y) {
            c = Constant <value = int64[3] {1000, 16777217, -70000}> ()
            f = Cast <to = 17> (c)
            g2 = Cast <to = 1> (f)
            y = Add (x, g2)
        }"""),
}


@pytest.mark.parametrize("case", sorted(FOLDS))
def test_folding_matches_onnxruntime(case):
    opset, body = FOLDS[case]
    ir = 9 if int(opset) >= 19 else 8
    proto = onnx.parser.parse_model(f'<ir_version: {ir}, opset_import: ["" : {opset}]>' + body)
    result = api.optimize(proto, "fold", strict=True)
    assert result.validation.ok


def test_negative_step_slice_of_a_shape_keeps_the_rank():
    proto = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N] x) => (float[N] y) {
        sh = Shape (x)
        s = Constant <value = int64[1] {-2}> ()
        e = Constant <value = int64[1] {-10}> ()
        a = Constant <value = int64[1] {0}> ()
        st = Constant <value = int64[1] {-1}> ()
        t = Slice (sh, s, e, a, st)
        y = Reshape (x, t)
    }""")
    api.optimize(proto, "fold", strict=True)


def test_no_new_minus_one_next_to_a_dim_that_may_be_zero():
    proto = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 15]>
    g (float[N, 3] x, float[M] z) => (float[A, B] y) {
        s1 = Shape <start = 0, end = 1> (x)
        s2 = Shape (z)
        t = Concat <axis = 0> (s1, s2)
        y = Reshape (x, t)
    }""")
    result = api.optimize(proto, "fold,promote", strict=True, input_shapes={"x": (2, 3), "z": (3,)})
    out = to_proto(api.optimize(proto, "fold,promote", strict=True, validate=False).model)
    assert result.validation.ok
    feeds = {"x": np.zeros((0, 3), np.float32), "z": np.zeros(5, np.float32)}  # an empty batch
    assert run_ort(out, feeds)[0].shape == run_ort(proto, feeds)[0].shape == (0, 5)


# ------------------------------------------------------------------------------ fold-if
IF_STATIC_DIM = header() + """
m (float[N, 3] x) => (float[N, 3] y) {
    sh = Shape (x)
    one = Constant <value = int64 {1}> ()
    d1 = Gather <axis = 0> (sh, one)
    three = Constant <value = int64 {3}> ()
    c = Equal (d1, three)
    a = Neg (x)
    y = If (c) <
        then_branch = t () => (float[N, 3] t_out) {
            k = Constant <value = float[3] {1.0, 2.0, 3.0}> ()
            kz = Constant <value = float {0.0}> ()
            s = ReduceSum <keepdims = 0> (a)
            p = Greater (s, kz)
            t_mid = If (p) <
                then_branch = tt () => (float[N, 3] tt_out) { tt_out = Mul (a, k) },
                else_branch = te () => (float[N, 3] te_out) { te_out = Sub (x, k) }
            >
            t_out = Add (t_mid, a)
        },
        else_branch = e () => (float[N, 3] e_out) { e_out = Abs (x) }
    >
}
"""


def test_fold_if_inlines_the_branch_a_static_dim_selects():
    from helpers import model_from_text, seeded_feeds

    proto = model_from_text(IF_STATIC_DIM)
    ops, records, result = optimized(proto, "fold")
    # the outer If is gone; the data-dependent inner If (it reads the outer `a` and the branch's `k`) stays
    assert ops == ["Neg", "ReduceSum", "Greater", "If", "Add"], ops
    assert sum(r.stats.get("inlined", 0) for r in records if r.name == "fold-if") == 1
    out = to_proto(result.model)
    onnx.checker.check_model(out, full_check=True)
    g = out.graph
    assert g.node[-1].output == ["y"]  # the branch's Add took the If's output name
    inner = next(n for n in g.node if n.op_type == "If")
    assert list(inner.input) == ["p"]  # the branch's names are kept
    for seed in range(3):
        feeds = seeded_feeds(proto, seed, dim=4)
        for a, b in zip(run_ort(proto, feeds), run_ort(out, feeds)):
            np.testing.assert_array_equal(a, b)


def test_fold_if_inlines_a_constant_condition_and_keeps_names_unique():
    from helpers import model_from_text, seeded_feeds

    proto = model_from_text(header() + """
    m (float[2] x) => (float[2] y, float[2] z) {
        c = Constant <value = bool {0}> ()
        a = Neg (x)
        y, z = If (c) <
            then_branch = t () => (float[2] t1, float[2] t2) { t1 = Relu (a)  t2 = Identity (a) },
            else_branch = e () => (float[2] e1, float[2] e2) {
                w = Constant <value = float[2] {2.0, 3.0}> ()
                e1 = Mul (a, w)
                e2 = Sigmoid (x)
            }
        >
    }""")
    ops, _, result = optimized(proto, "fold-if")
    assert sorted(ops) == ["Mul", "Neg", "Sigmoid"]
    out = to_proto(result.model)
    assert [o.name for o in out.graph.output] == ["y", "z"]
    feeds = seeded_feeds(proto)
    for a, b in zip(run_ort(proto, feeds), run_ort(out, feeds)):
        np.testing.assert_array_equal(a, b)


def test_fold_if_leaves_a_data_dependent_condition():
    proto = onnx.parser.parse_model(header() + """
    m (float[N, 3] x) => (float[N, 3] y) {
        s = ReduceSum <keepdims = 0> (x)
        zero = Constant <value = float {0.0}> ()
        c = Greater (s, zero)
        y = If (c) <
            then_branch = t () => (float[N, 3] t_out) { t_out = Relu (x) },
            else_branch = e () => (float[N, 3] e_out) { e_out = Abs (x) }
        >
    }""")
    ops, records, _ = optimized(proto, "fold")
    assert ops == ["ReduceSum", "Greater", "If"]
    assert not any(r.modified for r in records if r.name == "fold-if")


# ------------------------------------------------------------------------------ drop-default-inputs
def lstm_with_initial_state(fill: str, make: str = "h0 = ConstantOfShape <value = FILL> (hs)"):
    """An LSTM whose initial_h/initial_c are ConstantOfShape([1, batch, 4]) of `fill` (or what
    `make` computes from `hs`): the batch is dynamic."""
    rng = np.random.default_rng(0)
    w = ", ".join(f"{x:.3f}" for x in rng.standard_normal(16 * 3))
    r = ", ".join(f"{x:.3f}" for x in rng.standard_normal(16 * 4))
    return header() + f"""
    m (float[T, B, 3] x) => (float[T, 1, B, 4] y) {{
        w = Constant <value = float[1, 16, 3] {{{w}}}> ()
        r = Constant <value = float[1, 16, 4] {{{r}}}> ()
        sh = Shape (x)
        i1 = Constant <value = int64[1] {{1}}> ()
        b = Gather <axis = 0> (sh, i1)
        one = Constant <value = int64[1] {{1}}> ()
        four = Constant <value = int64[1] {{4}}> ()
        hs = Concat <axis = 0> (one, b, four)
        {make.replace("FILL", fill)}
        y, yh, yc = LSTM <hidden_size = 4> (x, w, r, , , h0, h0)
    }}
    """


def test_zero_initial_lstm_state_is_dropped():
    from helpers import model_from_text, seeded_feeds

    proto = model_from_text(lstm_with_initial_state("float[1] {0.0}"))
    ops, records, result = optimized(proto, "fold")
    assert ops == ["LSTM"]
    stats = next(r.stats for r in records if r.name == "drop-default-inputs" and r.modified)
    assert stats == {"dropped": 2}
    (lstm,) = to_proto(result.model).graph.node
    assert list(lstm.input[5:]) in ([], ["", ""])
    out = to_proto(result.model)
    for seed in range(3):
        feeds = seeded_feeds(proto, seed, dim=3)
        np.testing.assert_allclose(run_ort(out, feeds)[0], run_ort(proto, feeds)[0], rtol=0, atol=0)


# tf2onnx's Keras LSTM: zeros Expanded to [batch, hidden], then Unsqueezed and Concatenated per direction
EXPANDED_ZEROS = """z = Constant <value = FILL> ()
        bh = Concat <axis = 0> (b, four)
        e = Expand (z, bh)
        ax = Constant <value = int64[1] {0}> ()
        u = Unsqueeze (e, ax)
        h0 = Concat <axis = 0> (u)"""


@pytest.mark.parametrize("fill,make", [
    ("float {0.0}", EXPANDED_ZEROS),
    ("int64 {0}", EXPANDED_ZEROS.replace("e = Expand (z, bh)", "zf = Cast <to = 1> (z)\n        e = Expand (zf, bh)")),
    ("float[1, 1] {0.0}", EXPANDED_ZEROS.replace("e = Expand (z, bh)", "e = Tile (z, bh)")),
])
def test_zeros_expanded_and_concatenated_are_dropped(fill, make):
    from helpers import model_from_text, seeded_feeds

    proto = model_from_text(lstm_with_initial_state(fill, make))
    ops, records, result = optimized(proto, "fold")
    assert ops == ["LSTM"]
    out = to_proto(result.model)
    feeds = seeded_feeds(proto, 0, dim=3)
    np.testing.assert_array_equal(run_ort(out, feeds)[0], run_ort(proto, feeds)[0])


@pytest.mark.parametrize("fill,make", [
    ("float[1] {0.0}", "c0 = ConstantOfShape <value = FILL> (hs)\n        cb = Cast <to = 9> (c0)\n"
                       "        h0 = Cast <to = 1> (cb)"),  # through bool: not followed
    ("float[1] {0.5}", "h0 = ConstantOfShape <value = FILL> (hs)"),
    ("float[1] {-0.0}", "h0 = ConstantOfShape <value = FILL> (hs)"),
    ("float {0.5}", EXPANDED_ZEROS),
    ("float {-0.0}", EXPANDED_ZEROS),
    ("float {0.0}", EXPANDED_ZEROS.replace("h0 = Concat <axis = 0> (u)", "h0 = Exp (u)")),  # exp(0) is 1
])
def test_a_non_default_initial_lstm_state_stays(fill, make):
    ops, records, _ = optimized(lstm_with_initial_state(fill, make), "fold")
    assert ops[-1] == "LSTM" and len(ops) > 1
    assert not any(r.modified for r in records if r.name == "drop-default-inputs")


def test_fold_if_does_not_trust_the_shapes_an_exporter_declared_for_a_branch():
    # torch writes a branch's outputs with the other branch's shapes; Size(Shape(x)) is x's rank, a constant
    proto = onnx.parser.parse_model(header() + """
    m (float[N, 3] x) => (float[N, 3] y) {
        sh = Shape (x)
        rank = Size (sh)
        zero = Constant <value = int64 {0}> ()
        c = Equal (rank, zero)
        r = If (c) <
            then_branch = t () => (float[N] t_out) { t_out = ReduceSum <keepdims = 0> (x) },
            else_branch = e () => (float[N] e_out) { e_out = Neg (x) }
        >
        y = Relu (r)
    }""")
    ops, records, result = optimized(proto, "fold")
    assert ops == ["Neg", "Relu"] and not any(r.rolled_back for r in records)
    onnx.checker.check_model(to_proto(result.model), full_check=True)
