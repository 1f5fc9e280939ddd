"""The IR's API and its invariants."""

import numpy as np
import onnx
import pytest
from helpers import model_from_text

from graphopt.errors import IRError
from graphopt.ir import Capture, Graph, Tensor
from graphopt.onnx_io import load as frontend
from graphopt.onnx_io.emit import to_proto


def small_graph():
    g = Graph("g")
    x = g.add_input("x", onnx.TensorProto.FLOAT, (2, 3))
    sq = g.add_node("Mul", [x, x], ["sq"])
    relu = g.add_node("Relu", [sq.outputs[0]], ["y"])
    g.outputs.append(relu.outputs[0])
    return g, x, sq, relu


def test_multigraph_keeps_a_value_used_twice_by_one_node():
    g, x, sq, _ = small_graph()
    assert sq.inputs == [x, x]
    assert sorted(k for _, k in x.uses) == [0, 1]
    g.verify()


def test_producer_uses_and_replace_all_uses():
    g, x, sq, relu = small_graph()
    assert sq.outputs[0].producer is sq
    assert relu.inputs[0].uses == [(relu, 0)]
    g.replace_all_uses(sq.outputs[0], x)
    assert relu.inputs == [x]
    assert sq.outputs[0].uses == []
    g.remove_node(sq)
    g.verify()
    assert [n.op_type for n in g.toposort()] == ["Relu"]


def test_replace_all_uses_keeps_the_graph_output_name():
    g, x, sq, relu = small_graph()
    y = relu.outputs[0]
    g.replace_all_uses(y, sq.outputs[0])
    g.remove_node(relu)
    assert [v.name for v in g.outputs] == ["y"]
    assert g.outputs[0] is sq.outputs[0]
    g.verify()


def test_replace_output_with_graph_input_inserts_identity():
    g, x, sq, relu = small_graph()
    g.replace_all_uses(relu.outputs[0], x)
    g.remove_node(relu)
    assert g.outputs[0].name == "y"
    assert g.outputs[0].producer.op_type == "Identity"
    assert g.outputs[0].producer.inputs == [x]
    g.verify()


def test_remove_node_refuses_while_outputs_are_used():
    g, x, sq, relu = small_graph()
    with pytest.raises(IRError, match="still used"):
        g.remove_node(sq)
    with pytest.raises(IRError, match="still used"):
        g.remove_node(relu)  # its output is a graph output


def test_names_are_unique_and_ids_never_reused():
    g, x, sq, relu = small_graph()
    a = g.add_value("sq")
    assert a.name != "sq" and a.name.startswith("sq")
    last = max(v.id for v in g.values + g.nodes)
    g.outputs.clear()
    g.remove_node(relu)  # frees ids and the name, but a new node gets a fresh id
    n = g.add_node("Relu", [x], ["y"])
    assert n.id > last
    assert n.outputs[0].name == "y"


def test_toposort_is_creation_order_when_valid_and_puts_producers_first():
    g, x, sq, relu = small_graph()
    # a new node inserted between existing ones comes right before its reader
    neg = g.add_node("Neg", [sq.outputs[0]], ["neg"])
    g.set_input(relu, 0, neg.outputs[0])
    assert [n.op_type for n in g.toposort()] == ["Mul", "Neg", "Relu"]


def test_verify_finds_a_cycle():
    g, x, sq, relu = small_graph()
    g.set_input(sq, 1, relu.outputs[0])
    with pytest.raises(IRError, match="cycle"):
        g.verify()


def test_verify_finds_two_producers():
    g, x, sq, relu = small_graph()
    g._g.add_edge(relu.id, sq.outputs[0].id, key=0)
    with pytest.raises(IRError, match="more than one producer"):
        g.verify()


def test_verify_finds_an_undefined_value_and_bad_index():
    g, x, sq, relu = small_graph()
    dangling = g.add_value("dangling")
    g.set_input(relu, 0, dangling)
    with pytest.raises(IRError, match="never defined"):
        g.verify()
    g2, x2, sq2, relu2 = small_graph()
    g2._g.add_edge(x2.id, relu2.id, key=5)
    with pytest.raises(IRError, match="bad input index"):
        g2.verify()


def test_verify_finds_duplicate_names():
    g, x, sq, relu = small_graph()
    sq.outputs[0]._name = "x"
    with pytest.raises(IRError):
        g.verify()


IF_MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
m (float[2] x, bool c) => (float[2] y) {
    a = Neg (x)
    y = If (c) <
        then_branch = t () => (float[2] t_out) { t_out = Relu (a) },
        else_branch = e () => (float[2] e_out) { e_out = Identity (a) }
    >
}
"""


def test_subgraph_reads_are_explicit_captures():
    model = frontend.load(model_from_text(IF_MODEL))
    g = model.graph
    a = g.value("a")
    if_node = [n for n in g.nodes if n.op_type == "If"][0]
    uses = a.uses
    assert len(uses) == 2 and all(isinstance(k, Capture) and n is if_node for n, k in uses)
    assert if_node.inputs == [g.value("c")]  # captures are not positional inputs
    assert if_node.captures == [a, a]
    then_g = if_node.attr("then_branch")
    (cap,) = then_g.captures()
    assert cap.name == "a" and then_g.capture_source(cap) is a
    model.graph.verify()


def test_replacing_an_outer_value_is_seen_inside_subgraphs():
    model = frontend.load(model_from_text(IF_MODEL))
    g = model.graph
    x, a = g.value("x"), g.value("a")
    g.replace_all_uses(a, x)
    g.remove_node(a.producer)
    g.verify()
    text = onnx.printer.to_text(to_proto(model).graph)
    assert "Relu (x)" in text and "Identity (x)" in text and "Neg" not in text


def test_renaming_an_outer_value_renames_its_subgraph_reads():
    model = frontend.load(model_from_text(IF_MODEL))
    g = model.graph
    g.rename(g.value("a"), "renamed")
    text = onnx.printer.to_text(to_proto(model).graph)
    assert "Relu (renamed)" in text and "Identity (renamed)" in text


def test_nested_capture_goes_through_every_level():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[2] x, bool c) => (float[2] y) {
        a = Neg (x)
        y = If (c) <
            then_branch = t () => (float[2] t_out) {
                t_out = If (c) <
                    then_branch = tt () => (float[2] tt_out) { tt_out = Relu (a) },
                    else_branch = te () => (float[2] te_out) { te_out = Sigmoid (a) }
                >
            },
            else_branch = e () => (float[2] e_out) { e_out = Abs (x) }
        >
    }
    """
    model = frontend.load(model_from_text(text))
    g = model.graph
    outer_if = [n for n in g.nodes if n.op_type == "If"][0]
    assert g.value("a") in outer_if.captures
    then_g = outer_if.attr("then_branch")
    inner_if = [n for n in then_g.nodes if n.op_type == "If"][0]
    assert {then_g.capture_source(v).name for v in inner_if.captures} == {"a"}
    (cond,) = inner_if.inputs  # `c` is read positionally inside the branch: a capture there
    assert cond.is_capture and then_g.capture_source(cond) is g.value("c")
    g.verify()


def test_clone_is_independent_and_shares_tensor_data():
    model = frontend.load(model_from_text(IF_MODEL))
    model.graph.add_initializer("w", Tensor.from_numpy(np.ones(4, np.float32)))
    copy = model.clone()
    copy.graph.verify()
    a = copy.graph.value("a")
    copy.graph.replace_all_uses(a, copy.graph.value("x"))
    copy.graph.remove_node(a.producer)
    assert model.graph.value("a") is not None and model.graph.value("a").uses
    model.graph.verify()
    assert copy.graph.value("w").const is model.graph.value("w").const


def test_add_node_with_attrs_emits_valid_onnx():
    g, x, sq, relu = small_graph()
    t = g.add_node("Transpose", [relu.outputs[0]], ["t"], {"perm": [1, 0]})
    g.outputs.append(t.outputs[0])
    assert t.attr("perm") == [1, 0]
    assert t.attr("missing", 7) == 7


def test_insert_after_output_keeps_the_output_name_and_inner_uses():
    g = Graph("g")
    x = g.add_input("x")
    relu = g.add_node("Relu", [x], ["y"])
    y = relu.outputs[0]
    g.outputs.append(y)
    neg = g.add_node("Neg", [y], ["z"])
    cast = g.insert_after_output(y, "Cast", {"to": 10})
    assert [v.name for v in g.outputs] == ["y"] and g.outputs[0] is cast.outputs[0]
    assert y.name == "y_inner" and neg.inputs[0] is y and cast.inputs[0] is y
    g.verify()


def test_node_by_id_finds_the_same_node_on_clones_and_refuses_a_removed_one():
    model = frontend.load(model_from_text(IF_MODEL))
    neg = next(n for n in model.graph.nodes if n.op_type == "Neg")
    assert model.graph.node_by_id(neg.id) is neg
    copy = model.clone()
    twin = copy.graph.node_by_id(neg.id)
    assert twin is not neg and twin.op_type == "Neg" and twin.graph is copy.graph
    # removed: the id is gone, and a node added later gets a fresh one (ids are never reused)
    g, x, sq, relu = small_graph()
    g.outputs.clear()
    g.remove_node(relu)
    with pytest.raises(IRError, match="no node with id"):
        g.node_by_id(relu.id)
    again = g.add_node("Relu", [x], ["y2"])
    assert again.id != relu.id and g.node_by_id(again.id) is again


def test_label_is_the_name_or_op_and_output_and_unique():
    proto = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[2] x) => (float[2] y, float[2] z) {
        a = Relu (x)
        b = Relu (a)
        y = Neg (b)
        z = Neg (a)
    }
    """)
    proto.graph.node[2].name = "neg_named"
    proto.graph.node[3].name = "Relu -> b"  # a name that looks like another node's label
    g = frontend.load(proto).graph
    labels = [n.label for n in g.toposort()]
    assert labels[0] == "Relu -> a"
    assert labels[1].startswith("Relu -> b #")  # not confused with the node *named* "Relu -> b"
    assert labels[2:] == ["neg_named", "Relu -> b"]
    assert len(set(labels)) == len(labels)
    assert [n.name for n in g.toposort()][:2] == ["", ""]  # labels never become names
    bare = g.add_node("Relu", [g.value("x")], [None])
    assert bare.label == f"Relu #{bare.id}"


def test_duplicate_node_names_are_made_unique_and_empty_names_stay_empty():
    proto = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[2] x) => (float[2] y) {
        a = Relu (x)
        b = Relu (a)
        c = Neg (b)
        y = Neg (c)
    }
    """)
    proto.graph.node[0].name = proto.graph.node[1].name = "dup"
    g = frontend.load(proto).graph
    names = [n.name for n in g.toposort()]
    assert names[0] == "dup" and names[1].startswith("dup") and names[1] != "dup"
    assert names[2:] == ["", ""]
    assert len({n.label for n in g.nodes}) == 4


def test_shape_inference_reruns_only_after_changes_it_could_learn_from(monkeypatch):
    from graphopt.analysis.shapes import infer_shapes

    runs = []
    real = onnx.shape_inference.infer_shapes
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", lambda *a, **k: runs.append(1) or real(*a, **k))

    m = frontend.load(model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[2, 3] x) => (float[2, 3] y) {
        a = Identity (x)
        b = Relu (a)
        y = Abs (b)
    }
    """))
    g = m.graph
    infer_shapes(m)
    ident, relu, _ = g.toposort()
    x = g.value("x")
    # moving a reader to a value of the same type and removing a node teach inference nothing
    g.set_input(relu, 0, x)
    g.remove_node(ident)
    runs.clear()
    assert infer_shapes(m) == 0 and runs == []
    # a new node does: inference runs and types its output
    n = g.add_node("Neg", [x], ["neg"])
    assert infer_shapes(m) == 1 and runs == [1] and n.outputs[0].shape == (2, 3)
    # so does a reader moved to a value of another type
    before = g.typing_changes
    cast = g.add_node("Cast", [x], ["c"], {"to": onnx.TensorProto.INT64})
    infer_shapes(m)
    before = g.typing_changes
    g.set_input(n, 0, cast.outputs[0])
    assert g.typing_changes > before


def test_replacing_a_value_by_one_that_knows_less_skips_inference_and_by_one_that_knows_more_does_not():
    """eliminate-identity on a subgraph output: the Identity's output had a declared shape, its
    input (an If branch value without value_info) none. The readers keep their inferred types, so
    inference has nothing to learn. The twin: a replacement that knows a dim, or a symbol, the old
    value did not may teach inference something."""
    from graphopt.analysis.shapes import infer_shapes

    m = frontend.load(model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[N, 3] x) => (float[N, 3] y, float[N, 3] z) {
        a = Relu (x)
        b = Identity (a)
        y = Abs (b)
        c = Neg (x)
        d = Identity (c)
        z = Abs (d)
    }
    """))
    g = m.graph
    infer_shapes(m)
    a, b, c, d = (g.value(n) for n in "abcd")
    a.shape = None  # as a branch value without value_info
    before = g.typing_changes
    g.replace_all_uses(b, a)
    assert g.typing_changes == before and infer_shapes(m) == 0
    c.shape, d.shape = ("M", 3), ("N", 3)  # the replacement has a symbol the old value lacked
    g.replace_all_uses(d, c)
    assert g.typing_changes == before + 1


def test_shape_inference_sees_large_float_constants_as_stubs_and_integer_ones_whole():
    """A Paddle export keeps its weights in Constant nodes: inference gets their dtype and dims
    without their bytes. The twin: an integer Constant of the same size (a shape or index
    table inference may read) is passed whole."""
    from graphopt.analysis.shapes import infer_shapes
    from graphopt.onnx_io.emit import CHECK_STUB_MIN_BYTES, light_proto

    n = CHECK_STUB_MIN_BYTES // 4  # float32 / int32 elements
    weight = onnx.numpy_helper.from_array(np.ones((n // 64, 64), np.float32))
    table = onnx.numpy_helper.from_array(np.arange(n, dtype=np.int32))
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Constant", [], ["w"], value=weight),
         onnx.helper.make_node("Constant", [], ["t"], value=table),
         onnx.helper.make_node("MatMul", ["x", "w"], ["y"]),
         onnx.helper.make_node("Gather", ["t", "i"], ["z"])],
        "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", n // 64]),
              onnx.helper.make_tensor_value_info("i", onnx.TensorProto.INT64, [3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None),
         onnx.helper.make_tensor_value_info("z", onnx.TensorProto.INT32, None)])
    m = frontend.load(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]))
    light = {nd.output[0]: nd.attribute[0].t for nd in light_proto(m).graph.node if nd.op_type == "Constant"}
    assert light["w"].data_location == onnx.TensorProto.EXTERNAL and not light["w"].raw_data
    assert list(light["w"].dims) == [n // 64, 64]
    assert light["t"].data_location != onnx.TensorProto.EXTERNAL and len(light["t"].raw_data) == n * 4
    infer_shapes(m)
    assert m.graph.value("y").shape == ("b", 64) and m.graph.value("z").shape == (3,)
    # what is written keeps every byte
    written = to_proto(m)
    assert all(nd.attribute[0].t.data_location != onnx.TensorProto.EXTERNAL for nd in written.graph.node
               if nd.op_type == "Constant")
