"""Exporter quirks real models carry: each built from the quirk, each must load, run the lossless
pipelines and validate."""

from __future__ import annotations

import numpy as np
import onnx
from helpers import run_ort
from onnx import TensorProto, helper, numpy_helper

import graphopt
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
