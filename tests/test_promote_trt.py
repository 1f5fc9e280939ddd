"""`promote` (TensorRT constant-shape promotion); trt-check itself is tested in test_trt_check.py."""

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
    # computed pads are a run-time shape tensor TensorRT 10 accepts at a cost: a warning
    assert {f.rule for f in trt_check(before)} == {"trt10.runtime-shape.Pad.pads"}
    ops, records, result = optimized(text, "promote")
    assert ops == ["Pad", "ReduceSum"]
    assert trt_check(result.model) == []
