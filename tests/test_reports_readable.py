"""Issue 17, point 5: readable reports. `graphopt passes` shortens a long default and prints it
once; a fused node takes the name of the layer it replaces; the Markdown report's chart has a
background of its own."""

import os
import shutil
import subprocess

import onnx
from helpers import golden

import graphopt
from graphopt.report.markdown import bar_chart


def test_passes_shortens_a_long_default_and_never_prints_it_twice():
    proc = subprocess.run([shutil.which("graphopt"), "passes"], capture_output=True, text=True, check=True)
    lines = [line for line in proc.stdout.splitlines() if "keep_ops=" in line]
    assert len(lines) == 2  # fp16 and bf16
    assert "keep_ops='ReduceMean,ReduceSum,ReduceSumSquare,ReduceL2,…' (31 ops)" in lines[0]
    assert "keep_ops=(the same as bf16's)" in lines[1]
    assert proc.stdout.count("RandomNormalLike") == 0
    assert max(len(line) for line in proc.stdout.splitlines() if "=" in line and line.startswith(" " * 29)) < 260


def test_a_fused_node_takes_the_name_of_the_layer_it_replaces():
    src = os.path.join(golden.HERE, "torch", "cnn_torchscript.onnx")
    before = [n.name for n in onnx.load(src).graph.node]
    out = graphopt.optimize(src, "fuse,fold").to_proto()
    names = [n.name for n in out.graph.node]
    convs = [n.name for n in out.graph.node if n.op_type == "Conv"]
    assert convs == [n for n in before if n.endswith("/Conv")]  # e.g. /features/features.0/Conv
    assert not any("bn-into-conv" in n for n in names)
    assert len(set(names)) == len(names)


def test_a_fused_node_keeps_a_unique_name_when_the_layer_name_is_taken():
    """Two rewrites that would both want one name: the second keeps its own."""
    from graphopt.pipeline.base import PassContext
    from graphopt.rewrite import Op, Rule, RulePass, Var

    class ReluToTwo(Rule):
        name = "relu-split"
        pattern = Op("Relu", Var("x"))

        def check(self, m):
            return "made by this rule" if m.root.doc_string.startswith("created by graphopt") else None

        def rewrite(self, m, b):
            first = b.op("Relu", [m["x"]])
            return [b.op("Relu", [first])]

    class Split(RulePass):
        name, summary, stat = "split", "one Relu into two", "split"
        rules = [ReluToTwo()]

    proto = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"], name="act")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])]),
        opset_imports=[onnx.helper.make_opsetid("", 17)])
    m = graphopt.load(proto)
    assert Split().run(m.graph, PassContext(m)).modified
    names = [n.name for n in m.graph.toposort()]
    assert names[0] == "act" and names[1].startswith("act/relu-split") and len(set(names)) == 2


def test_the_svg_chart_has_a_white_background():
    svg = bar_chart({"conv1": 0.5, "conv2": 0.25}, "error")
    first = svg.splitlines()[1]
    assert first == '<rect x="0" y="0" width="100%" height="100%" fill="#ffffff"/>'
