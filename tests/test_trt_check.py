"""`graphopt trt-check`: TensorRT's ONNX-parser rules per version, from the support matrix.

Each rule kind has a model the parser accepts and one it rejects, per version where they differ.
"""

import json
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from helpers import golden
from onnx import TensorProto as T
from onnx import helper as oh

from graphopt import driver as api
from graphopt.analysis.shapes import infer_shapes
from graphopt.ir import Node
from graphopt.lint import trt_matrix
from graphopt.lint.trt_check import trt_check
from graphopt.lint.trt_inputs import BUILD_TIME_INPUTS, build_time_inputs
from graphopt.onnx_io import load as frontend


def golden_model(name):
    return golden.build(next(m for m in golden.CORPUS if m.name == name))


def build(nodes, inputs, outputs, inits=(), opset=17, extra_opsets=()):
    """A model from onnx.helper parts: inputs/outputs are (name, elem_type, shape)."""
    graph = oh.make_graph(nodes, "m", [oh.make_tensor_value_info(*i) for i in inputs],
                          [oh.make_tensor_value_info(*o) for o in outputs], initializer=list(inits))
    opsets = [oh.make_opsetid("", opset)] + [oh.make_opsetid(d, v) for d, v in extra_opsets]
    return oh.make_model(graph, opset_imports=opsets, ir_version=8)


def ints(name, values):
    return oh.make_tensor(name, T.INT64, [len(values)], values)


def check(proto, trt="10"):
    """trt_check as the CLI runs it: on the loaded model with inferred shapes and types."""
    model = frontend.load(proto)
    infer_shapes(model)
    return trt_check(model, trt)


def rules(findings, severity=None):
    return {f.rule for f in findings if severity is None or f.severity == severity}


def op_rules(findings, severity=None):
    """The rules apart from the model-wide element-type ones (INT64 graph inputs on 8.6, ...)."""
    return {r for r in rules(findings, severity) if ".dtype." not in r}


def errors(findings):
    return [f for f in findings if f.severity == "error"]


# ---------------------------------------------------------------- the matrix and versions

def test_versions_resolve_and_every_rule_names_its_version_and_source():
    assert trt_matrix.resolve("10") == "10.1" and trt_matrix.resolve("8.6") == "8.6"
    with pytest.raises(ValueError):
        trt_matrix.resolve("7.2")
    assert trt_matrix.SOURCES["10.1"]["commit"].startswith("96e78110")
    m = build([oh.make_node("SplitToSequence", ["x"], ["s"]), oh.make_node("SequenceLength", ["s"], ["y"])],
              [("x", T.FLOAT, [4])], [("y", T.INT64, [])])
    for trt in ("8.6", "10", "10.0", "10.1"):
        found = check(m, trt)
        assert found and all(f.rule.startswith(f"trt{trt}.") and f.version == trt_matrix.resolve(trt) for f in found)
        assert all("onnx-tensorrt" in f.source for f in found)


# ---------------------------------------------------------------- initializer inputs

def slice_model(axes_computed: bool, starts_from_input: bool = False):
    nodes = [oh.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"])]
    inits = [ints("ends", [2])]
    inputs = [("x", T.FLOAT, [4, 6])]
    if axes_computed:  # Identity(Constant) is a tensor to the parser, though foldable
        nodes = [oh.make_node("Constant", [], ["a0"], value=ints("a0", [1])),
                 oh.make_node("Identity", ["a0"], ["axes"])] + nodes
    else:
        inits.append(ints("axes", [1]))
    if starts_from_input:
        inputs.append(("starts", T.INT64, [1]))
    else:
        inits.append(ints("starts", [0]))
    return build(nodes, inputs, [("y", T.FLOAT, None)], inits, opset=13)


@pytest.mark.parametrize("trt", ["8.6", "10.0", "10"])
def test_slice_axes_must_be_an_initializer_starts_may_be_run_time(trt):
    assert check(slice_model(False), trt) == []
    bad = errors(check(slice_model(True), trt))
    assert [f.rule for f in bad] == [f"trt{trt}.initializer-input.Slice.axes"]
    assert "run -p promote" in bad[0].message and "cannot" not in bad[0].message
    # starts from a graph input: accepted at run time, a warning that promotion cannot help
    found = check(slice_model(False, starts_from_input=True), trt)
    assert not errors(found) and op_rules(found) == {f"trt{trt}.runtime-shape.Slice.starts"}
    (f,) = [f for f in found if "Slice" in f.rule]
    assert "cannot" in f.message and "run -p promote" not in f.message


def test_a_constant_node_output_counts_as_an_initializer():
    m = build([oh.make_node("Constant", [], ["axes"], value=ints("axes", [0])),
               oh.make_node("ReduceSum", ["x", "axes"], ["y"])], [("x", T.FLOAT, [3, 4])], [("y", T.FLOAT, None)],
              opset=13)
    assert check(m) == []
    m.graph.node[0].op_type = "Identity"  # now computed
    m.graph.node[0].input.append("c")
    del m.graph.node[0].attribute[:]
    m.graph.initializer.append(ints("c", [0]))
    assert rules(check(m), "error") == {"trt10.initializer-input.ReduceSum.axes"}


def pad_model(axes: bool):
    nodes = [oh.make_node("Pad", ["x", "pads", "", "axes"] if axes else ["x", "pads"], ["y"])]
    inits = [ints("pads", [1, 1] if axes else [0, 1, 0, 1])] + ([ints("axes", [1])] if axes else [])
    return build(nodes, [("x", T.FLOAT, [2, 3])], [("y", T.FLOAT, None)], inits, opset=18)


def test_pad_axes_8_6_rejects_10_0_needs_an_initializer():
    assert check(pad_model(False), "8.6") == [f for f in check(pad_model(False), "8.6") if f.severity == "warning"]
    assert rules(check(pad_model(True), "8.6"), "error") == {"trt8.6.unsupported-input.Pad.axes"}
    assert not errors(check(pad_model(True), "10.0"))
    computed = pad_model(True)
    computed.graph.node.insert(0, oh.make_node("Identity", ["axes0"], ["axes"]))
    computed.graph.initializer[1].name = "axes0"
    assert rules(check(computed, "10.0"), "error") == {"trt10.0.initializer-input.Pad.axes"}


def test_dropout_training_mode_must_be_a_false_initializer():
    def model(value, computed=False):
        nodes = [oh.make_node("Dropout", ["x", "", "t"], ["y"])]
        inits = [oh.make_tensor("t0" if computed else "t", T.BOOL, [], [value])]
        if computed:
            nodes.insert(0, oh.make_node("Identity", ["t0"], ["t"]))
        return build(nodes, [("x", T.FLOAT, [2])], [("y", T.FLOAT, None)], inits, opset=13)

    assert check(model(False)) == []
    assert rules(check(model(True)), "error") == {"trt10.input-value.Dropout.training_mode"}
    assert rules(check(model(False, computed=True)), "error") == {"trt10.initializer-input.Dropout.training_mode"}


def test_instance_norm_scale_must_be_an_initializer_on_8_6_only():
    m = build([oh.make_node("Identity", ["s0"], ["s"]), oh.make_node("InstanceNormalization", ["x", "s", "b"], ["y"])],
              [("x", T.FLOAT, [1, 2, 4])], [("y", T.FLOAT, None)],
              [oh.make_tensor("s0", T.FLOAT, [2], [1, 1]), oh.make_tensor("b", T.FLOAT, [2], [0, 0])])
    assert rules(check(m, "8.6"), "error") == {"trt8.6.initializer-input.InstanceNormalization.scale"}
    assert not errors(check(m, "10"))


# ---------------------------------------------------------------- run-time shape tensors

def shape_chain_model():
    """Reshape/Expand/ConstantOfShape fed from Shape(x) with a dynamic batch."""
    nodes = [oh.make_node("Shape", ["x"], ["s"]),
             oh.make_node("Reshape", ["x", "s"], ["r"]),
             oh.make_node("Expand", ["r", "s"], ["e"]),
             oh.make_node("ConstantOfShape", ["s"], ["c"]),
             oh.make_node("Add", ["e", "c"], ["y"])]
    return build(nodes, [("x", T.FLOAT, ["batch", 4])], [("y", T.FLOAT, None)])


@pytest.mark.parametrize("trt", ["8.6", "10"])
def test_run_time_shape_tensors_are_warnings_that_promotion_fixes(trt):
    found = check(shape_chain_model(), trt)
    assert not errors(found)
    assert rules(found) >= {f"trt{trt}.runtime-shape.{op}.{name}" for op, name in
                            [("Reshape", "shape"), ("Expand", "shape"), ("ConstantOfShape", "input")]}
    assert all("run -p promote with --input-shape" in f.message for f in found if "runtime-shape" in f.rule)


def test_data_dependent_topk_k_says_promotion_cannot_help(tmp_path):
    # k = min(300, count of scores above 0.5): depends on the scores' values
    nodes = [oh.make_node("Greater", ["scores", "half"], ["keep"]),
             oh.make_node("Cast", ["keep"], ["keep_i"], to=T.INT64),
             oh.make_node("ReduceSum", ["keep_i", "ax"], ["count"], keepdims=1),
             oh.make_node("Min", ["count", "cap"], ["k"]),
             oh.make_node("TopK", ["scores", "k"], ["v", "i"])]
    m = build(nodes, [("scores", T.FLOAT, [1000])], [("v", T.FLOAT, None), ("i", T.INT64, None)],
              [oh.make_tensor("half", T.FLOAT, [], [0.5]), ints("ax", [0]), ints("cap", [300])], opset=13)
    found = [f for f in check(m) if "TopK" in f.rule]
    assert [f.rule for f in found] == ["trt10.runtime-shape.TopK.K"] and found[0].severity == "warning"
    assert "promotion cannot" in found[0].message and "run -p promote" not in found[0].message
    assert "'scores'" in found[0].message
    # the CLI says the same
    path = tmp_path / "topk.onnx"
    onnx.save(m, path)
    proc = subprocess.run([shutil.which("graphopt"), "trt-check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and "promotion cannot" in proc.stdout


def test_a_data_dependent_shape_through_nonzero_cannot_be_promoted():
    nodes = [oh.make_node("NonZero", ["x"], ["nz"]), oh.make_node("Shape", ["nz"], ["s"]),
             oh.make_node("Constant", [], ["z"], value=ints("z", [0])),
             oh.make_node("ConstantOfShape", ["s"], ["y"])]
    m = build(nodes, [("x", T.FLOAT, [4])], [("y", T.FLOAT, None)], opset=13)
    (f,) = [f for f in check(m) if "ConstantOfShape" in f.rule]
    assert "data-dependent output shape of NonZero" in f.message and "cannot" in f.message


def test_onehot_depth_is_a_build_time_input():
    m = build([oh.make_node("Shape", ["x"], ["d"]), oh.make_node("OneHot", ["i", "d", "vals"], ["y"])],
              [("x", T.FLOAT, ["n"]), ("i", T.INT64, [3])], [("y", T.FLOAT, None)],
              [oh.make_tensor("vals", T.FLOAT, [2], [0, 1])])
    found = [f for f in check(m) if "OneHot" in f.rule]
    assert [(f.severity, f.rule) for f in found] == [("warning", "trt10.build-time-input.OneHot.depth")]


# ---------------------------------------------------------------- ops, types, attributes, opsets, domains

def test_unsupported_ops_per_version():
    gelu = build([oh.make_node("Gelu", ["x"], ["y"])], [("x", T.FLOAT, [2])], [("y", T.FLOAT, [2])], opset=20)
    assert rules(check(gelu, "8.6"), "error") == {"trt8.6.unsupported-op.Gelu"}
    assert not errors(check(gelu, "10"))
    nz = build([oh.make_node("Unique", ["x"], ["y"])], [("x", T.FLOAT, [2])], [("y", T.FLOAT, None)], opset=17)
    assert rules(check(nz, "10"), "error") == {"trt10.unsupported-op.Unique"}


def test_double_is_cast_down_a_warning_int64_a_warning_on_8_6_only():
    m = build([oh.make_node("Relu", ["x"], ["y"]), oh.make_node("Identity", ["i"], ["j"])],
              [("x", T.DOUBLE, [2]), ("i", T.INT64, [2])], [("y", T.DOUBLE, [2]), ("j", T.INT64, [2])])
    for trt in ("8.6", "10"):
        found = check(m, trt)
        assert not errors(found)
        assert f"trt{trt}.dtype.DOUBLE" in rules(found, "warning")
        assert any("bindings" in f.message for f in found if f.rule.endswith("dtype.DOUBLE"))
    assert "trt8.6.dtype.INT64" in rules(check(m, "8.6"), "warning")
    assert "trt10.dtype.INT64" not in rules(check(m, "10"))


def test_unrepresentable_types_are_errors():
    bf = build([oh.make_node("Relu", ["x"], ["y"])], [("x", T.BFLOAT16, [2])], [("y", T.BFLOAT16, [2])])
    assert "trt8.6.dtype.BFLOAT16" in rules(check(bf, "8.6"), "error")
    assert not errors(check(bf, "10"))
    s = build([oh.make_node("Identity", ["x"], ["y"])], [("x", T.INT16, [2])], [("y", T.INT16, [2])])
    assert "trt10.dtype.INT16" in rules(check(s, "10"), "error")


def test_attribute_restrictions_enforced_error_unenforced_warning():
    def resize(mode):
        return build([oh.make_node("Resize", ["x", "", "scales"], ["y"], coordinate_transformation_mode=mode)],
                     [("x", T.FLOAT, [1, 1, 2, 2])], [("y", T.FLOAT, None)],
                     [oh.make_tensor("scales", T.FLOAT, [4], [1, 1, 2, 2])], opset=13)

    assert check(resize("half_pixel")) == []
    assert rules(check(resize("tf_crop_and_resize")), "error") == {
        "trt10.attribute.Resize.coordinate_transformation_mode"}

    def topk(sorted_):
        return build([oh.make_node("TopK", ["x", "k"], ["v", "i"], sorted=sorted_)], [("x", T.FLOAT, [5])],
                     [("v", T.FLOAT, None), ("i", T.INT64, None)], [ints("k", [2])])

    assert check(topk(1)) == []
    found = check(topk(0))
    assert [(f.severity, f.rule) for f in found] == [("warning", "trt10.attribute.TopK.sorted")]
    assert "does not check" in found[0].message


def test_scatternd_reduction_10_0_rejects_any_8_6_ignores_none():
    m = build([oh.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="none")],
              [("x", T.FLOAT, [4]), ("i", T.INT64, [1, 1]), ("u", T.FLOAT, [1])], [("y", T.FLOAT, [4])], opset=16)
    assert rules(check(m, "10.0"), "error") == {"trt10.0.attribute.ScatterND.reduction"}
    assert not errors(check(m, "8.6"))
    m.graph.node[0].attribute[0].s = b"add"
    assert op_rules(check(m, "8.6"), "warning") == {"trt8.6.attribute.ScatterND.reduction"}  # silently ignored


def test_opset_range_is_a_warning_the_parser_does_not_enforce():
    def relu(opset):
        return build([oh.make_node("Relu", ["x"], ["y"])], [("x", T.FLOAT, [2])], [("y", T.FLOAT, [2])], opset=opset)

    assert check(relu(17), "8.6") == [] and check(relu(20), "10") == []
    for trt, opset in (("8.6", 18), ("10", 21), ("10", 8)):
        (f,) = check(relu(opset), trt)
        assert f.severity == "warning" and f.rule == f"trt{trt}.opset-range" and "does not enforce" in f.message


def test_custom_domain_is_a_plugin_lookup_by_op_type():
    m = build([oh.make_node("Thing", ["x"], ["y"], domain="custom")], [("x", T.FLOAT, [2])],
              [("y", T.FLOAT, [2])], extra_opsets=[("custom", 1)])
    (f,) = check(m)
    assert f.severity == "warning" and f.rule == "trt10.custom-domain.Thing" and "plugin" in f.message
    m.graph.node[0].op_type = "Relu"
    (f,) = check(m)
    assert "builtin Relu importer" in f.message


# ---------------------------------------------------------------- build_time_inputs for promote

def test_build_time_inputs_are_the_matrix_inputs_plus_run_time_shapes():
    proto = build([oh.make_node("Slice", ["x", "s", "e", "a"], ["y"]), oh.make_node("Pad", ["y", "p"], ["z"])],
                  [("x", T.FLOAT, [4]), ("s", T.INT64, [1]), ("e", T.INT64, [1]), ("a", T.INT64, [1]),
                   ("p", T.INT64, [2])], [("z", T.FLOAT, None)], opset=18)
    g = frontend.load(proto).graph
    nodes = {n.op_type: n for n in g.nodes}
    assert build_time_inputs(nodes["Slice"]) == (1, 2, 3, 4)
    assert build_time_inputs(nodes["Pad"], "8.6") == (1,)
    assert build_time_inputs(nodes["Pad"], "10") == (1, 3)  # 8.6 rejects Pad axes in any form
    assert isinstance(nodes["Pad"], Node)
    for op, idx in {"Reshape": (1,), "Expand": (1,), "ConstantOfShape": (0,), "TopK": (1,), "Squeeze": (1,),
                    "ReduceMean": (1,), "Dropout": (2,), "OneHot": (1,), "Tile": (1,)}.items():
        assert BUILD_TIME_INPUTS[op] == idx


# ---------------------------------------------------------------- golden models and the CLI

def test_encoder_dynamo_run_time_slice_and_reshape_are_not_errors_under_10():
    model = frontend.load(golden_model("encoder_dynamo"))
    found = trt_check(model, "10")
    errs = errors(found)
    # what TensorRT 10.1's parser really rejects: the sequence ops (kUNSUPPORTED_NODE in
    # onnxOpCheckers.cpp) and axes computed by Reshape from constants; Slice ends/Reshape shapes
    # from Shape(attention_mask) are accepted at run time
    assert {f.rule for f in errs} == {"trt10.unsupported-op.SplitToSequence", "trt10.unsupported-op.SequenceAt",
                                      "trt10.initializer-input.Slice.axes",
                                      "trt10.initializer-input.ReduceMean.axes"}
    assert all("run -p promote" in f.message for f in errs if "initializer-input" in f.rule)
    assert "trt10.runtime-shape.Slice.ends" in rules(found, "warning")
    promoted = api.optimize(golden_model("encoder_dynamo"), "promote",
                            input_shapes={"input_ids": (1, 12), "attention_mask": (1, 12)}).model
    after = trt_check(promoted, "10")
    assert {f.op_type for f in errors(after)} == {"SplitToSequence", "SequenceAt"}
    assert not [f for f in after if "runtime-shape" in f.rule]


def test_trt_check_command(tmp_path):
    exe = shutil.which("graphopt")
    pad = tmp_path / "pad.onnx"
    onnx.save(pad_model(True), pad)
    proc = subprocess.run([exe, "trt-check", str(pad), "--trt", "8.6", "--json"], capture_output=True, text=True)
    assert proc.returncode == 4
    (f,) = [f for f in json.loads(proc.stdout) if f["severity"] == "error"]
    assert {g["rule"] for g in json.loads(proc.stdout)} == {f["rule"], "trt8.6.opset-range"}  # opset 18 > 17
    assert f["rule"] == "trt8.6.unsupported-input.Pad.axes" and f["version"] == "8.6"
    assert "6ba67d3428e0" in f["source"] and f["severity"] == "error"
    proc = subprocess.run([exe, "trt-check", str(pad), "--trt", "10.0"], capture_output=True, text=True)
    assert proc.returncode == 0 and "0 errors" in proc.stdout
    warn = tmp_path / "warn.onnx"
    onnx.save(shape_chain_model(), warn)
    proc = subprocess.run([exe, "trt-check", str(warn)], capture_output=True, text=True)
    assert proc.returncode == 0 and "[trt10.runtime-shape.Reshape.shape]" in proc.stdout
    proc = subprocess.run([exe, "trt-check", str(warn), "--trt", "7"], capture_output=True, text=True)
    assert proc.returncode != 0
    good = golden_model("cnn_torchscript")
    promoted = tmp_path / "p.onnx"
    api.optimize(good, "promote", output=str(promoted))
    proc = subprocess.run([exe, "trt-check", str(promoted), "--json"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]"


def test_report_includes_trt_check(tmp_path):
    from graphopt.cli import main

    src = golden_model("encoder_dynamo")
    rep = tmp_path / "r.json"
    assert main([src, "-p", "promote", "-o", str(tmp_path / "o.onnx"), "--report", str(rep), "-q"]) == 0
    findings = json.loads(rep.read_text())["trt_check"]
    # what promote cannot fix: the dynamo exporter's sequence ops (pos[:seq_len] with a run-time
    # length is a run-time Slice TensorRT 10 accepts: a warning)
    assert {f["op_type"] for f in findings if f["severity"] == "error"} == {"SplitToSequence", "SequenceAt"}
    assert all(f["rule"].startswith("trt10.") for f in findings)


def test_trt_check_numbers_are_deterministic():
    m = frontend.load(golden_model("encoder_dynamo"))
    assert [f.to_dict() for f in trt_check(m)] == [f.to_dict() for f in trt_check(m)]
    assert np.all([f.rule for f in trt_check(m)])


def test_op_types_outside_the_documented_ones_are_one_warning_per_op_and_type():
    def model(t):
        return build([oh.make_node("Sin", ["x"], ["a"]), oh.make_node("Sin", ["a"], ["y"])], [("x", t, [2])],
                     [("y", t, [2])])

    assert check(model(T.FLOAT)) == []
    (f,) = check(model(T.INT32))
    assert f.severity == "warning" and f.rule == "trt10.op-type.Sin.INT32" and "2 Sin nodes" in f.message
    # NonZero on BOOL: narrower in operators.md than in the 10.x importer, which takes it
    nz = build([oh.make_node("NonZero", ["x"], ["y"])], [("x", T.BOOL, [4])], [("y", T.INT64, None)])
    assert not [f for f in check(nz, "10") if "op-type" in f.rule]


def test_a_data_dependent_initializer_input_is_an_error_that_says_promotion_cannot_help():
    m = build([oh.make_node("ReduceSum", ["x", "axes"], ["y"])], [("x", T.FLOAT, [3, 4]), ("axes", T.INT64, [1])],
              [("y", T.FLOAT, None)], opset=13)
    (f,) = [f for f in check(m) if f.severity == "error"]
    assert f.rule == "trt10.initializer-input.ReduceSum.axes"
    assert "values of input 'axes'" in f.message and "promotion cannot" in f.message
    assert "run -p promote" not in f.message


# ---------------------------------------------------------------- Q/DQ TensorRT cannot fuse (speed warnings)

def qdq_model(body: str, inputs: str = "float[1, 2, 4, 4] x", outputs: str = "float[1, 4, 4, 4] y"):
    """A Q/DQ model from ONNX text: `s`/`zp` are an activation's scale and zero point, `w` a
    per-channel INT8 conv weight dequantized as `wd`."""
    return onnx.parser.parse_model(f"""<ir_version: 9, opset_import: ["" : 19]>
        g ({inputs}) => ({outputs})
          <float s = {{0.1}}, int8 zp = {{0}}, int8[4, 2, 1, 1] w = {{1, 2, 3, 4, 5, 6, 7, 8}},
           float[4] ws = {{0.1, 0.2, 0.3, 0.4}}, int8[4] wz = {{0, 0, 0, 0}}, float[2] s2 = {{0.1, 0.2}},
           int8[2] zp2 = {{0, 0}}, int64[2] flat = {{1, -1}}> {{
            wd = DequantizeLinear <axis = 0> (w, ws, wz)
            {body}
        }}""")


def qdq_rules(findings):
    return sorted((f.rule, f.node) for f in findings if ".qdq." in f.rule)


def test_fused_qdq_has_no_warnings():
    # x -Q/DQ-> MaxPool (Q/DQ moves across it) -> Conv (DQ fused) -> Relu -Q/DQ-> Conv: all fused
    clean = qdq_model("""
            xq = QuantizeLinear (x, s, zp)
            xd = DequantizeLinear (xq, s, zp)
            p = MaxPool <kernel_shape = [1, 1]> (xd)
            c = Conv (p, wd)
            r = Relu (c)
            rq = QuantizeLinear (r, s, zp)
            rd = DequantizeLinear (rq, s, zp)
            w2 = Constant <value = float[4, 4, 1, 1] {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}> ()
            y = Conv (rd, w2)""")
    onnx.checker.check_model(clean, full_check=True)
    for trt in ("8.6", "10"):
        assert qdq_rules(check(clean, trt)) == []


@pytest.mark.parametrize("body, outputs, rule, node, words", [
    # a DQ read by Softmax (through a Reshape Q/DQ moves across): Softmax runs in float
    ("""xq = QuantizeLinear (x, s, zp)
        xd = DequantizeLinear (xq, s, zp)
        f = Reshape (xd, flat)
        y = Softmax <axis = 1> (f)""", "float[1, 32] y", "qdq.unfused-dq", "DequantizeLinear -> xd",
     "read by Softmax 'Softmax -> y'"),
    # a QuantizeLinear left dangling: its INT8 tensor leaves the graph
    ("""c = Conv (x, wd)
        y = QuantizeLinear (c, s, zp)""", "int8[1, 4, 4, 4] y", "qdq.q-without-dq", "QuantizeLinear -> y",
     "QuantizeLinear not followed by DequantizeLinear"),
    # per-channel scales on an activation
    ("""xq = QuantizeLinear <axis = 1> (x, s2, zp2)
        xd = DequantizeLinear <axis = 1> (xq, s2, zp2)
        y = Conv (xd, wd)""", "float[1, 4, 4, 4] y", "qdq.per-channel-activation", "DequantizeLinear -> xd",
     "per-channel scales on an activation"),
    # a DQ nothing reads (the Conv reads x itself)
    ("""xq = QuantizeLinear (x, s, zp)
        xd = DequantizeLinear (xq, s, zp)
        y = Conv (x, wd)""", "float[1, 4, 4, 4] y", "qdq.dq-unused", "DequantizeLinear -> xd",
     "DequantizeLinear whose output nothing reads"),
    # a DQ of a computed INT8 tensor that no QuantizeLinear made
    ("""i = Cast <to = 3> (x)
        xd = DequantizeLinear (i, s, zp)
        y = Conv (xd, wd)""", "float[1, 4, 4, 4] y", "qdq.dq-without-q", "DequantizeLinear -> xd",
     "no QuantizeLinear before it"),
])
def test_unfused_qdq_is_a_speed_warning_naming_its_rule_and_node(body, outputs, rule, node, words):
    model = qdq_model(body, outputs=outputs)
    onnx.checker.check_model(model, full_check=True)
    for trt in ("8.6", "10"):
        found = [f for f in check(model, trt) if ".qdq." in f.rule]
        assert (f"trt{trt}.{rule}", node) in qdq_rules(found), qdq_rules(found)
        f = next(f for f in found if f.rule == f"trt{trt}.{rule}")
        assert f.severity == "warning" and words in f.message and "costs speed" in f.message
        assert "promote" not in f.message and "TensorRT developer guide" in f.source
        assert not errors(found)
