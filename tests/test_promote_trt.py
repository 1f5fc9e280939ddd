"""`promote` (TensorRT constant-shape promotion) and `trt-check`."""

import shutil
import subprocess

import numpy as np
import onnx
import pytest
from helpers import golden, model_from_text, optimized, run_ort

from graphopt import driver as api
from graphopt.lint.trt_check import trt_check
from graphopt.onnx_io import load as frontend


def golden_model(name):
    return golden.build(next(m for m in golden.CORPUS if m.name == name))


@pytest.mark.parametrize("name", ["cnn_torchscript", "cnn_dynamo"])
def test_promote_makes_the_view_head_constant_without_baking_the_batch(name, tmp_path):
    src = golden_model(name)
    out = tmp_path / "o.onnx"
    result = api.optimize(src, "promote", output=str(out))
    g = result.model.graph
    assert not [n for n in g.nodes if n.op_type in ("Shape", "Gather", "Concat", "Unsqueeze")]
    (reshape,) = [n for n in g.nodes if n.op_type == "Reshape"]
    assert list(g.const_value(reshape.inputs[1])) == [0, -1]
    # the batch stays dynamic: another batch size gives what the input model gives
    x = np.random.default_rng(3).standard_normal((5, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(run_ort(str(out), {"x": x})[0], run_ort(src, {"x": x})[0])
    assert [d.dim_param for d in onnx.load(out).graph.input[0].type.tensor_type.shape.dim][:1] == ["batch"]


@pytest.mark.parametrize("name", ["encoder_torchscript", "encoder_dynamo"])
def test_promote_with_pinned_shapes_leaves_no_shape_op(name):
    src = golden_model(name)
    shapes = {"input_ids": (1, 12), "attention_mask": (1, 12)}
    result = api.optimize(src, "promote", input_shapes=shapes)
    assert result.validation.ok
    assert not [n for n in result.model.graph.nodes if n.op_type == "Shape"]
    unpinned = api.optimize(src, "promote")
    assert [n for n in unpinned.model.graph.nodes if n.op_type == "Shape"]  # seq is dynamic there


def test_promote_turns_computed_pads_and_axes_into_initializers():
    text = """
    <ir_version: 8, opset_import: ["" : 18]>
    m (float[2, 3, 4] x) => (float[2, 1, 6] y) {
        p0 = Constant <value = int64[3] {0, 0, 1}> ()
        two = Constant <value = int64 {2}> ()
        p1 = Mul (p0, two)
        z = Constant <value = int64[3] {0, 0, 1}> ()
        pads = Concat <axis = 0> (z, p0)
        padded = Pad (x, pads)
        ax = Constant <value = int64[1] {1}> ()
        y = ReduceSum <keepdims = 1> (padded, ax)
    }
    """
    before = frontend.load(model_from_text(text))
    assert {f.op_type for f in trt_check(before) if f.severity == "error"} == {"Pad"}
    ops, records, result = optimized(text, "promote")
    assert ops == ["Pad", "ReduceSum"]
    assert trt_check(result.model) == []


def test_trt_check_reports_opset_types_sequences_and_custom_ops():
    text = """
    <ir_version: 8, opset_import: ["" : 17, "custom" : 1]>
    m (double[2] x, float[4] f) => (double[2] y, float[2] s) {
        y = Relu (x)
        seq = SplitToSequence (f)
        i = Constant <value = int64 {0}> ()
        s0 = SequenceAt (seq, i)
        s = custom.Thing (s0)
    }
    """
    model = frontend.load(onnx.parser.parse_model(text))
    found = {(f.severity, f.op_type) for f in trt_check(model)}
    assert ("error", "tensor") in found  # double
    assert ("error", "SplitToSequence") in found and ("error", "SequenceAt") in found
    assert ("warning", "Thing") in found
    model.opset_imports[""] = 8
    assert any("opset 8" in f.message for f in trt_check(model))


def test_trt_check_command_exit_codes(tmp_path):
    exe = shutil.which("graphopt")
    bad = tmp_path / "bad.onnx"
    onnx.save(model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[2, 3] x, int64[4] p) => (y) {
        y = Pad (x, p)
    }
    """.replace("=> (y)", "=> (float[A, B] y)")), bad)
    proc = subprocess.run([exe, "trt-check", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 4
    assert "error: Pad" in proc.stdout and "pads is computed at run time" in proc.stdout
    good = golden_model("cnn_torchscript")
    promoted = tmp_path / "p.onnx"
    api.optimize(good, "promote", output=str(promoted))
    proc = subprocess.run([exe, "trt-check", str(promoted), "--json"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]"


def test_report_includes_trt_check(tmp_path):
    import json

    from graphopt.cli import main

    src = golden_model("encoder_dynamo")
    rep = tmp_path / "r.json"
    assert main([src, "-p", "promote", "-o", str(tmp_path / "o.onnx"), "--report", str(rep), "-q"]) == 0
    findings = json.loads(rep.read_text())["trt_check"]
    # what promote cannot fix: the dynamo exporter's sequence ops, and pos[:seq_len] with a run-time length
    assert findings and {f["op_type"] for f in findings} == {"SplitToSequence", "SequenceAt", "Slice"}
