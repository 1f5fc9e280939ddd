"""Regressions from the review of the INT8 work: each case failed (or silently produced an FP32
model) before its fix."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from int8_models import small_cnn
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.cli import main
from graphopt.errors import GraphoptError
from graphopt.lint.qdq_lint import qdq_lint
from graphopt.pipeline.manager import PassFailed
from graphopt.quant.calibration import CalibrationError, CalibrationSettings
from graphopt.runtime.metrics import compare

RNG = np.random.default_rng(11)


def w(*shape, scale=0.3):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def build(nodes, inputs, outputs, inits, opset=17, check=True):
    g = helper.make_graph(nodes, "m", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    if check:
        onnx.checker.check_model(m, full_check=True)
    return m


def fvi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def qdq_count(result):
    return sum(n.op_type == "QuantizeLinear" for n in result.model.graph.nodes)


def test_integer_outputs_count_in_accuracy():
    ref = [{"cls": np.array([1, 2, 3, 4]), "p": np.zeros((4, 10, 5, 5), np.float32)}]
    new = [{"cls": np.array([1, 0, 3, 0]), "p": np.zeros((4, 10, 5, 5), np.float32)}]
    rep = compare(ref, new, [4], [np.array([1, 2, 3, 0])])
    assert rep.top1_agreement == 50.0
    assert (rep.accuracy_ref, rep.accuracy) == (75.0, 75.0) and rep.drop() == 0.0
    rep = compare(ref, new, [4], [np.array([1, 2, 3, 4])])
    assert (rep.accuracy_ref, rep.accuracy) == (100.0, 50.0) and rep.drop() == 50.0


def test_nan_in_the_same_places_is_equal():
    r = np.array([[1.0, np.nan, 2.0]], np.float32)
    rep = compare([{"y": r}], [{"y": r.copy()}], [1])
    assert rep.cosine == pytest.approx(1.0) and rep.snr_db == float("inf")


def argmax_model():
    return build([helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1"),
                  helper.make_node("Relu", ["h"], ["r"]),
                  helper.make_node("Gemm", ["r", "w2"], ["s"], name="fc2"),
                  helper.make_node("ArgMax", ["s"], ["cls"], axis=1, keepdims=0)],
                 [fvi("x", ["N", 16])], [fvi("cls", ["N"], TensorProto.INT64)],
                 {"w1": w(16, 32), "w2": w(32, 8)})


def test_budget_sees_an_argmax_output():
    feeds = [{"x": RNG.standard_normal((1, 16)).astype(np.float32)} for _ in range(40)]
    result = graphopt.optimize(argmax_model(), "int8{sensitivity=true}",
                               calibration=CalibrationSettings(data=feeds, holdout=0.5), validate=True)
    acc = result.pass_reports["quantize-int8"]["accuracy"]
    assert acc["top1_agreement"] is not None and acc["drop"] == pytest.approx(100 - acc["top1_agreement"])
    assert result.validation.accuracy.top1_agreement is not None


def test_fixed_batch_model_calibrates_in_whole_batches(tmp_path):
    model = build([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                  [fvi("x", [4, 8, 6, 6])], [fvi("y", [4, 8, 6, 6])], {"w": w(8, 8, 3, 3)})
    np.savez(tmp_path / "c.npz", x=RNG.standard_normal((44, 8, 6, 6)).astype(np.float32))
    result = graphopt.optimize(model, "int8", calibration=str(tmp_path / "c.npz"))
    cal = result.pass_reports["quantize-int8"]["calibration"]
    assert cal["samples"] % 4 == 0 and cal["held_out"] % 4 == 0 and cal["samples"] + cal["held_out"] == 44
    assert qdq_count(result) == 1
    np.savez(tmp_path / "one.npz", x=RNG.standard_normal((4, 8, 6, 6)).astype(np.float32))
    one = graphopt.optimize(model, "int8", calibration=str(tmp_path / "one.npz"))
    assert one.pass_reports["quantize-int8"]["calibration"]["held_out"] == 0  # one batch: all of it calibrates
    np.savez(tmp_path / "few.npz", x=RNG.standard_normal((6, 8, 6, 6)).astype(np.float32))
    with pytest.raises(CalibrationError, match=r"has shape \[6, 8, 6, 6\]; the model takes \[4, 8, 6, 6\]"):
        graphopt.optimize(model, "int8", calibration=str(tmp_path / "few.npz"), validate=False)


def test_scalar_input_model_quantizes():
    model = build([helper.make_node("Mul", ["x", "s"], ["xs"]), helper.make_node("MatMul", ["xs", "w"], ["y"], name="mm")],
                  [fvi("x", ["N", 16]), fvi("s", [])], [fvi("y", ["N", 8])], {"w": w(16, 8)})
    feeds = [{"x": RNG.standard_normal((2, 16)).astype(np.float32), "s": np.float32(1.5)} for _ in range(8)]
    result = graphopt.optimize(model, "int8", calibration=feeds)
    assert qdq_count(result) == 1 and result.validation.ok


def test_cache_tells_models_and_feeds_apart(tmp_path):
    cache = str(tmp_path / "c.json")
    feeds = [{"x": RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(10)]

    def source(model, data):
        r = graphopt.optimize(model, "int8", calibration=CalibrationSettings(data=data, cache=cache), validate=False)
        return r.pass_reports["quantize-int8"]["calibration"]["source"]

    assert source(small_cnn(), feeds).startswith("calibrated")
    assert source(small_cnn(), feeds) == f"cache {cache}"
    heavier = small_cnn()
    for t in heavier.graph.initializer:
        if t.name.endswith("_w"):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 10, t.name))
    assert source(heavier, feeds).startswith("calibrated")  # same graph, other weights
    other = [{"x": f["x"] * 3} for f in feeds]
    assert source(heavier, other).startswith("calibrated")  # same model, other feeds


def test_cache_that_cannot_be_written_is_an_error(tmp_path, capsys):
    path = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), path)
    out = tmp_path / "o.onnx"
    code = main([str(path), "-p", "int8", "--calib", "random", "--calib-cache", str(tmp_path / "nope" / "c.json"),
                 "-o", str(out), "--no-validate"])
    err = capsys.readouterr().err
    assert code == 1 and "calibration cache" in err and "does not exist" in err and not out.exists()


@pytest.mark.parametrize("settings, message", [
    ({"holdout": 1.0}, "calibration setting holdout=1.0: must be at least 0 and below 1"),
    ({"samples": 0}, "calibration setting samples=0: must be at least 1"),
    ({"percentile": 0.0}, "calibration setting percentile=0.0: must be above 0 and at most 100"),
])
def test_calibration_settings_are_checked(settings, message):
    with pytest.raises(CalibrationError) as e:
        graphopt.optimize(small_cnn(), "int8", calibration=CalibrationSettings(**settings))
    assert str(e.value) == message


def test_folder_mixing_labelled_and_unlabelled_files(tmp_path):
    (tmp_path / "d").mkdir()
    x = RNG.standard_normal((10, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "d" / "a.npz", x=x[:6], labels=np.zeros(6, np.int64))
    np.savez(tmp_path / "d" / "b.npz", x=x[6:])
    result = graphopt.optimize(small_cnn(), "int8", calibration=CalibrationSettings(data=str(tmp_path / "d"), holdout=0.5))
    assert result.validation.ok


def test_labels_must_be_integers(tmp_path):
    np.savez(tmp_path / "c.npz", x=RNG.standard_normal((4, 3, 16, 16)).astype(np.float32), labels=np.array(list("abcd")))
    with pytest.raises(CalibrationError, match="'labels' must hold integer class indices, not <U1"):
        graphopt.optimize(small_cnn(), "int8", calibration=str(tmp_path / "c.npz"), validate=False)


def test_input_of_unknown_rank_asks_for_its_shape():
    model = build([helper.make_node("MatMul", ["x", "w"], ["y"])], [fvi("x", None)], [fvi("y", None)], {"w": w(16, 8)},
                  check=False)
    with pytest.raises(CalibrationError, match="input 'x' has no known rank; give its shape with --input-shape x:"):
        graphopt.optimize(model, "int8", calibration="random", validate=False)
    result = graphopt.optimize(model, "int8", calibration="random", input_shapes={"x": (2, 16)}, validate=False)
    assert qdq_count(result) == 1


def test_input_named_labels_is_an_input():
    model = build([helper.make_node("MatMul", ["labels", "w"], ["y"], name="mm")],
                  [fvi("labels", ["N", 16])], [fvi("y", ["N", 8])], {"w": w(16, 8)})
    feeds = [{"labels": RNG.standard_normal((1, 16)).astype(np.float32)} for _ in range(8)]
    result = graphopt.optimize(model, "int8", calibration=feeds)
    assert qdq_count(result) == 1 and result.validation.ok


def test_grouped_conv_transpose_gets_one_weight_scale(tmp_path):
    model = build([helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", group=2)],
                  [fvi("x", ["N", 8, 5, 5])], [fvi("y", ["N", 8, 7, 7])], {"w": w(8, 4, 3, 3)})
    feeds = [{"x": RNG.standard_normal((1, 8, 5, 5)).astype(np.float32)} for _ in range(8)]
    result = graphopt.optimize(model, "int8", calibration=feeds, output=str(tmp_path / "o.onnx"))
    dq = next(n for n in onnx.load(tmp_path / "o.onnx").graph.node if n.op_type == "DequantizeLinear"
              and n.output[0].startswith("w"))
    assert not any(a.name == "axis" for a in dq.attribute)
    assert result.validation.ok


def test_a_failing_lossy_pass_fails_the_run(tmp_path, monkeypatch):
    from graphopt.quant import calibration

    def broken(*args, **kwargs):
        raise GraphoptError("onnxruntime failed to run model: boom")

    monkeypatch.setattr(calibration, "collect_ranges", broken)
    out = tmp_path / "o.onnx"
    with pytest.raises(PassFailed, match="pass quantize-int8 failed: onnxruntime failed to run model: boom"):
        graphopt.optimize(small_cnn(), "int8", calibration=[{"x": np.ones((1, 3, 16, 16), np.float32)}] * 4,
                          output=str(out), validate=False)
    assert not out.exists()


def concat_model():
    """conv_a, conv_b -> inner Concat; that and a constant -> outer Concat -> conv."""
    return build([helper.make_node("Conv", ["x", "wa"], ["a"], name="ca"),
                  helper.make_node("Conv", ["x", "wb"], ["b"], name="cb"),
                  helper.make_node("Concat", ["a", "b"], ["ab"], axis=1, name="inner"),
                  helper.make_node("Concat", ["ab", "k"], ["abk"], axis=1, name="outer"),
                  helper.make_node("Conv", ["abk", "wc"], ["y"], name="cc")],
                 [fvi("x", ["N", 4, 5, 5])], [fvi("y", ["N", 4, 5, 5])],
                 {"wa": w(4, 4, 1, 1), "wb": w(4, 4, 1, 1), "k": w(1, 4, 5, 5, scale=3.0), "wc": w(4, 12, 1, 1)})


def test_nested_concats_and_constant_inputs_share_one_scale(tmp_path):
    feeds = [{"x": RNG.standard_normal((1, 4, 5, 5)).astype(np.float32)} for _ in range(8)]
    out = str(tmp_path / "o.onnx")
    model = concat_model()
    k = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "k")
    result = graphopt.optimize(model, "int8", calibration=feeds, output=out)
    assert result.validation.ok
    m = onnx.load(out)
    producer = {o: n for n in m.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    scales = set()
    for n in m.graph.node:
        if n.op_type == "Concat":
            for i in n.input:
                dq = producer[i]
                assert dq.op_type == "DequantizeLinear", (n.name, i)
                scales.add(float(inits[dq.input[1]]))
    cc = next(n for n in m.graph.node if n.name == "cc")
    scales.add(float(inits[producer[cc.input[0]].input[1]]))
    assert len(scales) == 1
    assert scales.pop() >= float(np.abs(k).max()) / 127 * 0.999  # the constant is not clipped
    assert qdq_lint(graphopt.load(out)) == []


def test_qdq_lint_checks_the_weight_axis():
    wq = np.ones((4, 2, 1, 1), np.int8)
    for axis, message in ((7, "axis 7 is out of range for a rank-4 tensor"),
                          (1, "per-channel scales along axis 1 of the weight of Conv 'conv'; its output channels are axis 0")):
        scales = np.full(2 if axis == 1 else 4, 0.1, np.float32)
        m = build([helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=axis),
                   helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
                  [fvi("x", [1, 2, 3, 3])], [fvi("y", [1, 4, 3, 3])],
                  {"wq": wq, "ws": scales, "wz": np.zeros(scales.shape, np.int8)}, opset=19, check=False)
        model = graphopt.load(m)
        model.graph.value("w").shape = (4, 2, 1, 1)
        assert message in {f.message for f in qdq_lint(model)}


def test_report_json_is_valid_with_an_int_output(tmp_path, capsys):
    path = tmp_path / "am.onnx"
    onnx.save(argmax_model(), path)
    np.savez(tmp_path / "c.npz", x=RNG.standard_normal((20, 16)).astype(np.float32))
    rep = tmp_path / "r.json"
    code = main([str(path), "-p", "int8", "--calib", str(tmp_path / "c.npz"), "-o", str(tmp_path / "o.onnx"),
                 "--report", str(rep)])
    assert code == 0, capsys.readouterr().err
    assert json.loads(rep.read_text())["validation"]["accuracy"]["top1_agreement"] is not None
