"""The symbolic shape engine (analysis/symexpr.py, analysis/symbolic.Engine), fold-shape-values
and fuse-input-scale: each where it fires and a twin where it must not."""

import numpy as np
import onnx
from helpers import model_from_text
from onnx import helper, numpy_helper

from graphopt import driver as api
from graphopt.analysis import symexpr as sx
from graphopt.onnx_io.emit import to_proto


def optimized(proto, pipeline: str, **kw):
    proto = model_from_text(proto) if isinstance(proto, str) else proto
    result = api.optimize(proto, pipeline, strict=True, **kw)
    assert result.validation.ok
    again = api.optimize(to_proto(result.model), pipeline, strict=True, validate=False, **kw)
    assert not any(r.modified for r in again.records), [r.name for r in again.records if r.modified]
    ops = [n.op_type for n in result.model.graph.toposort() if n.op_type != "Constant"]
    return ops, result


H = '<ir_version: 8, opset_import: ["" : 17]>'


# ------------------------------------------------------------------------------ the algebra
def test_expressions_are_canonical():
    b, s = sx.atom(sx.Sym("b")), sx.atom(sx.Sym("s"))
    assert sx.add(sx.mul(b, s), sx.mul(s, b)) == sx.mul(2, sx.mul(b, s))
    assert sx.sub(sx.add(b, 3), b) == 3
    assert sx.floordiv(sx.add(sx.mul(7, b), 9), 7) == sx.add(b, 1)
    assert sx.mod(sx.add(sx.mul(7, b), 9), 7) == 2
    assert sx.truncdiv(sx.mul(b, 64), 64) == b
    assert sx.mod(b, 7) != 0 and sx.mod(sx.mod(b, 7), 7) == sx.mod(b, 7)
    assert sx.maximum(b, 0) == b and sx.minimum(b, -1) == -1
    assert sx.equal(sx.add(b, 1), b) is False and sx.equal(b, s) is None
    assert sx.truncdiv(sx.sub(1, b), 2) != sx.floordiv(sx.sub(1, b), 2)  # sign unknown: opaque


# ------------------------------------------------------------------------------ fold-shape-values
def test_static_dims_of_dynamic_shapes_fold_through_mod_and_floats():
    # timm's window padding and a ViT attention scale, with a dynamic batch
    text = H + """
    m (float[N, 3, 14, 64] x) => (float[N, 3, 14, 64] y, float[N, 3, P, 64] z) {
        s = Shape (x)
        i2 = Constant <value = int64 {2}> ()
        h = Gather <axis = 0> (s, i2)
        seven = Constant <value = int64 {7}> ()
        r = Mod (h, seven)
        pad = Sub (seven, r)
        pad7 = Mod (pad, seven)
        z0 = Constant <value = int64[1] {0}> ()
        z6 = Constant <value = int64[6] {0, 0, 0, 0, 0, 0}> ()
        p1 = Unsqueeze (pad7, z0)
        pads1 = Concat <axis = 0> (z6, p1, z0)
        m1 = Constant <value = int64[1] {-1}> ()
        padsv = Reshape (pads1, m1)
        z = Pad (x, padsv)
        st = Constant <value = int64[1] {-1}> ()
        en = Constant <value = int64[1] {9223372036854775807}> ()
        last = Slice (s, st, en)
        f = Cast <to = 1> (last)
        q = Sqrt (f)
        one = Constant <value = float {1.0}> ()
        inv = Div (one, q)
        sc = Sqrt (inv)
        y = Mul (x, sc)
    }
    """
    ops, result = optimized(text, "fold")
    assert sorted(ops) == ["Mul", "Pad"]
    g = result.model.graph
    mul = next(n for n in g.nodes if n.op_type == "Mul")
    scale = g.const_value(mul.inputs[1])
    assert scale.dtype == np.float32 and scale.tobytes() == np.sqrt(np.float32(1) / np.sqrt(np.float32(64))).reshape(1).tobytes()
    pad = next(n for n in g.nodes if n.op_type == "Pad")
    assert list(g.const_value(pad.inputs[1])) == [0, 0, 0, 0, 0, 0, 0, 0]


def test_dynamic_dims_do_not_fold():
    text = H + """
    m (float[N, 3, H, 64] x) => (float[N, 3, P, 64] z) {
        s = Shape (x)
        i2 = Constant <value = int64 {2}> ()
        h = Gather <axis = 0> (s, i2)
        seven = Constant <value = int64 {7}> ()
        r = Mod (h, seven)
        pad = Sub (seven, r)
        pad7 = Mod (pad, seven)
        z0 = Constant <value = int64[1] {0}> ()
        z6 = Constant <value = int64[6] {0, 0, 0, 0, 0, 0}> ()
        p1 = Unsqueeze (pad7, z0)
        pads1 = Concat <axis = 0> (z6, p1, z0)
        m1 = Constant <value = int64[1] {-1}> ()
        padsv = Reshape (pads1, m1)
        z = Pad (x, padsv)
    }
    """
    ops, result = optimized(text, "fold-shape-values")
    assert "Mod" in ops and "Shape" in ops
    assert not result.records[0].modified


# ------------------------------------------------------------------------------ fuse-input-scale
def _conv_model(pads=(1, 1, 1, 1), group=1, scale_shape=(1, 4, 1, 1), extra_reader=False, pad_value=None):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4 // group, 3, 3)).astype(np.float32)
    s = (rng.random(scale_shape) + 0.5).astype(np.float32)
    nodes = [helper.make_node("Mul", ["x", "s"], ["xs"])]
    conv_in = "xs"
    if pad_value is not None:
        nodes.append(helper.make_node("Pad", ["xs", "pads", "pv"], ["xp"]))
        conv_in = "xp"
    nodes.append(helper.make_node("Conv", [conv_in, "w"], ["y"], pads=list(pads), group=group))
    outs = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["xs"], ["r"]))
        outs.append(helper.make_tensor_value_info("r", onnx.TensorProto.FLOAT, None))
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(s, "s")]
    if pad_value is not None:
        inits += [numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
                  numpy_helper.from_array(np.array(pad_value, np.float32), "pv")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, 6, 6])],
                          outs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_scale_before_a_zero_padded_conv_goes_into_the_weights():
    for kw in ({}, {"group": 2}, {"scale_shape": ()}, {"group": 4, "scale_shape": (4, 1, 1)}):
        ops, result = optimized(_conv_model(**kw), "fuse-input-scale")
        assert ops == ["Conv"], kw
        assert result.records[0].stats == {"mul-into-conv": 1}


def test_scale_before_a_conv_stays_when_shared_or_padded_with_a_value():
    ops, result = optimized(_conv_model(extra_reader=True), "fuse-input-scale")
    assert sorted(ops) == ["Conv", "Mul", "Relu"] and not result.records[0].modified
    ops, result = optimized(_conv_model(pad_value=1.0), "fuse-input-scale")
    assert ops == ["Mul", "Pad", "Conv"] and not result.records[0].modified
    ops, result = optimized(_conv_model(scale_shape=(1, 1, 1, 6)), "fuse-input-scale")  # varies along W
    assert ops == ["Mul", "Conv"] and not result.records[0].modified


def test_scale_before_a_gemm_goes_into_the_weights_and_twin():
    rng = np.random.default_rng(1)
    for trans_b, s_shape, fires in ((0, (5,), True), (1, (1, 5), True), (1, (3, 1), False)):
        w = rng.standard_normal((7, 5) if trans_b else (5, 7)).astype(np.float32)
        s = (rng.random(s_shape) + 0.5).astype(np.float32)
        g = helper.make_graph(
            [helper.make_node("Mul", ["x", "s"], ["xs"]), helper.make_node("Gemm", ["xs", "w"], ["y"], transB=trans_b)],
            "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, 5])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
            [numpy_helper.from_array(w, "w"), numpy_helper.from_array(s, "s")])
        ops, result = optimized(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), "fuse-input-scale")
        assert (ops == ["Gemm"]) == fires and result.records[0].modified == fires


# ------------------------------------------------------------------------------ promotion with dynamic dims
def test_head_split_and_merge_reshapes_promote_with_copies():
    text = H + """
    m (float[B, S, 64] x, float[B, S, 64] k) => (float[B, S, 64] y) {
        s = Shape (x)
        z = Constant <value = int64[1] {0}> ()
        o = Constant <value = int64[1] {1}> ()
        b = Gather <axis = 0> (s, z)
        n = Gather <axis = 0> (s, o)
        hd = Constant <value = int64[2] {4, 16}> ()
        sh = Concat <axis = 0> (b, n, hd)
        q = Reshape (x, sh)
        kk = Reshape (k, sh)
        qt = Transpose <perm = [0, 2, 1, 3]> (q)
        kt = Transpose <perm = [0, 2, 3, 1]> (kk)
        a = MatMul (qt, kt)
        sm = Softmax <axis = -1> (a)
        ctx = MatMul (sm, qt)
        ct = Transpose <perm = [0, 2, 1, 3]> (ctx)
        s2 = Shape (ct)
        b2 = Gather <axis = 0> (s2, z)
        n2 = Gather <axis = 0> (s2, o)
        m1 = Constant <value = int64[1] {-1}> ()
        sh2 = Concat <axis = 0> (b2, n2, m1)
        y = Reshape (ct, sh2)
    }
    """
    ops, result = optimized(text, "promote")
    g = result.model.graph
    assert "Shape" not in ops
    shapes = sorted(tuple(g.const_value(n.inputs[1]).tolist()) for n in g.nodes if n.op_type == "Reshape")
    assert shapes == [(0, 0, -1), (0, 0, 4, 16), (0, 0, 4, 16)]
    promote = next(r for r in result.records if r.name == "promote-shape-inputs")
    assert promote.stats["computed_shapes_left"] == 0


def test_unrelated_dynamic_dims_are_never_baked_and_are_named():
    text = H + """
    m (float[B, S, 64] x, float[P, Q] w) => (float[P, Q, B, S, 64] y) {
        s = Shape (w)
        t = Shape (x)
        sh = Concat <axis = 0> (s, t)
        one = Constant <value = int64[1] {1}> ()
        z = Constant <value = int64[1] {0}> ()
        xx = Unsqueeze (x, z)
        x5 = Unsqueeze (xx, z)
        y = Expand (x5, sh)
    }
    """
    ops, result = optimized(text, "promote", input_shapes=None)
    assert "Shape" in ops and "Expand" in ops
    promote = next(r for r in result.records if r.name == "promote-shape-inputs")
    assert promote.stats["computed_shapes_left"] == 1
    assert "run-time dims not equal" in promote.stats["left"][0]


def test_slice_ends_at_a_run_time_dim_become_int64_max_and_twin():
    text = H + """
    m (float[B, S, 64] x, float[B, T, 64] w) => (float[B, P, 64] y, float[B, Q, 64] u) {
        s = Shape (x)
        t = Shape (w)
        o = Constant <value = int64[1] {1}> ()
        n = Gather <axis = 0> (s, o)
        nt = Gather <axis = 0> (t, o)
        z = Constant <value = int64[1] {1}> ()
        y = Slice (x, z, n, o)
        u = Slice (x, z, nt, o)
    }
    """
    ops, result = optimized(text, "fold-shape-chains")
    g = result.model.graph
    y = next(n for n in g.nodes if n.op_type == "Slice" and n.outputs[0].name == "y")
    u = next(n for n in g.nodes if n.op_type == "Slice" and n.outputs[0].name == "u")
    assert g.const_value(y.inputs[2]).tolist() == [np.iinfo(np.int64).max]
    assert g.const_value(u.inputs[2]) is None  # T is not x's dim: left computed


def test_a_shape_read_moves_off_a_dims_preserving_reshape_so_reshapes_merge():
    text = H + """
    m (float[N] x) => (float[N, 1] y, float[N, 1] e) {
        m1 = Constant <value = int64[1] {-1}> ()
        r = Reshape (x, m1)
        s01 = Constant <value = int64[2] {0, 1}> ()
        y = Reshape (r, s01)
        s = Shape (r)
        one = Constant <value = int64[1] {1}> ()
        es = Concat <axis = 0> (s, one)
        z = Constant <value = float {0.0}> ()
        e = Expand (z, es)
    }
    """
    ops, result = optimized(text, "fold")
    assert ops.count("Reshape") == 1
    moved = sum(r.stats.get("shape_reads_moved", 0) for r in result.records if r.name == "fold-shape-values")
    assert moved == 1


def test_a_shape_read_stays_on_a_reshape_that_changes_dims():
    text = H + """
    m (float[N, 4] x) => (float[M, 2] y, float[M, 2] e) {
        s2 = Constant <value = int64[2] {-1, 2}> ()
        y = Reshape (x, s2)
        s = Shape (y)
        z = Constant <value = float {0.0}> ()
        e = Expand (z, s)
    }
    """
    ops, result = optimized(text, "fold-shape-values")
    assert ops.count("Shape") == 1 and not result.records[0].modified


# ------------------------------------------------------------------------------ the engine on a graph
def test_engine_follows_shape_arithmetic_through_many_ops():
    from graphopt.analysis.shapes import infer_shapes
    from graphopt.analysis.symbolic import Engine
    from graphopt.onnx_io.load import load

    text = H + """
    m (float[N, 3, 224, 224] x, float[8, 3, 4, 4] w) => (float[N, 8, P, Q] c, int64 sz, int64[2] hw, int64[2] wh, bool[1] eq, int64[3] rg, int64 pr, int64[2] mm, int64[3] cs) {
        c = Conv <strides = [4, 4]> (x, w)
        s = Shape (c)
        sz = Size (c)
        two = Constant <value = int64[1] {2}> ()
        four = Constant <value = int64[1] {4}> ()
        hw = Slice (s, two, four)
        seven = Constant <value = int64 {7}> ()
        md = Mod (hw, seven)
        e0 = Constant <value = int64[1] {0}> ()
        n = Slice (s, e0, two)
        nb = Gather <axis = 0> (s, e0)
        o1 = Constant <value = int64[1] {1}> ()
        nb1 = Add (nb, o1)
        eq = Equal (nb1, e0)
        wh = Where (eq, hw, md)
        z = Constant <value = int64 {0}> ()
        three = Constant <value = int64 {3}> ()
        one = Constant <value = int64 {1}> ()
        rg = Range (z, three, one)
        pr = ReduceProd <keepdims = 0> (hw)
        big = Constant <value = int64[2] {100, 100}> ()
        mm = Min (hw, big)
        ct = Constant <value = int64[1] {3}> ()
        cs = ConstantOfShape <value = int64[1] {5}> (ct)
    }
    """
    model = load(model_from_text(text))
    infer_shapes(model)
    g = model.graph
    e = Engine(g)
    out = {v.name: v for v in g.outputs}
    assert e.static(out["hw"]).tolist() == [56, 56]
    assert e.static(out["wh"]).tolist() == [0, 0]  # N + 1 == 0 is never true: Where picks md = 56 % 7
    assert e.static(out["eq"]).tolist() == [False]
    assert e.static(out["rg"]).tolist() == [0, 1, 2]
    assert int(e.static(out["pr"])) == 56 * 56
    assert e.static(out["mm"]).tolist() == [56, 56]
    assert e.static(out["cs"]).tolist() == [5, 5, 5]
    assert e.static(out["sz"]) is None
    (size,), scalar, _ = e.value(out["sz"])
    assert scalar and size == sx.mul(8 * 56 * 56, e.dims(out["c"])[0])


def test_a_static_minus_one_gives_its_place_to_a_run_time_dim():
    # mobilevit's unfold: [B, 4, 196, 64] -> [4*B, 196, -1] is [-1, 196, 64]
    text = H + """
    m (float[B, 4, 196, 64] x) => (float[M, 196, 64] y) {
        s = Shape (x)
        z = Constant <value = int64[1] {0}> ()
        b = Gather <axis = 0> (s, z)
        four = Constant <value = int64[1] {4}> ()
        b4 = Mul (b, four)
        rest = Constant <value = int64[2] {196, -1}> ()
        sh = Concat <axis = 0> (b4, rest)
        y = Reshape (x, sh)
    }
    """
    ops, result = optimized(text, "fold-shape-chains")
    g = result.model.graph
    (r,) = [n for n in g.nodes if n.op_type == "Reshape"]
    assert g.const_value(r.inputs[1]).tolist() == [-1, 196, 64]
