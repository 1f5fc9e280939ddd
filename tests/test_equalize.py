"""Issue 15, deliverable 2: the equalization passes (equalize-cross-layer, smooth-quant,
correct-bias) where they fire and twins where they must not, and quantize-int8's `equalize`
option that keeps each only when it lowers the held-out error."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import pytest
from helpers import optimized, run_ort
from int8_models import (
    NO_FLOOR,
    biased_conv,
    chain_feeds,
    imbalanced_chain,
    layernorm_feeds,
    outlier_layernorm,
    positive_feeds,
    small_cnn,
)

import graphopt
from graphopt.cli import main
from graphopt.errors import PipelineError
from graphopt.onnx_io.emit import to_proto
from graphopt.quant import equalize
from graphopt.quant.calibration import CalibrationRequired


def ops(model) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.toposort() if n.op_type != "Constant")


def rel_close(a, b, rtol=1e-5):
    """|a - b| <= rtol * max|a| (the lossless validation's measure)."""
    return float(np.max(np.abs(a - b))) <= rtol * float(np.max(np.abs(a)))


def quantized_error(model, pipeline, calib, test) -> float:
    """Relative L2 error of the quantized model's output against `model` (the float original)."""
    r = graphopt.optimize(model, pipeline, calibration=calib, thresholds=NO_FLOOR, validate=False)
    ref, got = run_ort(model, test)[0], run_ort(to_proto(r.model), test)[0]
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def stacked(feeds):
    return {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}


# ------------------------------------------------------------------------------ cross-layer equalization
@pytest.mark.parametrize("kind,act", [("conv", "Relu"), ("conv", ""), ("conv", "LeakyRelu"), ("conv", "PRelu"),
                                      ("depthwise", "Relu"), ("grouped", "Relu"), ("gemm", "Relu"),
                                      ("matmul", "Relu"), ("matmul", "")])
def test_cross_layer_equalization_fires_and_keeps_the_float_outputs(kind, act):
    model = imbalanced_chain(kind, act)
    got, records, result = optimized(model, "equalize-cross-layer")  # strict, validated, second run no change
    rec = next(r for r in records if r.name == "equalize-cross-layer")
    assert rec.modified and rec.stats["pairs"] == 1
    before = graphopt.optimize(model, "none", validate=False).model
    assert ops(result.model) == ops(before)  # only constants change
    feeds = stacked(chain_feeds(model, 8, seed=9))
    assert rel_close(run_ort(model, feeds)[0], run_ort(to_proto(result.model), feeds)[0])
    pair = result.pass_reports["equalize-cross-layer"]["pairs"][0]
    assert pair["activation"] == (act or None) and pair["max_scale"] / pair["min_scale"] > 100


def test_cross_layer_equalization_balances_the_ranges():
    model = imbalanced_chain("conv", "Relu")
    g = graphopt.optimize(model, "equalize-cross-layer", validate=False).model.graph
    w1, w2 = (np.asarray(g.const_value(g.node_by_id(n.id).inputs[1])) for n in g.nodes if n.op_type == "Conv")
    r1 = np.abs(w1).max(axis=(1, 2, 3))
    r2 = np.abs(w2).max(axis=(0, 2, 3))
    assert np.allclose(r1, r2, rtol=1e-5)  # both sqrt(r1 r2) per channel
    assert r1.max() / r1.min() < 20  # was ~10^4


@pytest.mark.parametrize("kind", ["conv", "depthwise", "matmul"])
def test_cross_layer_equalization_lowers_the_int8_error(kind):
    model = imbalanced_chain(kind, "Relu")
    calib, test = chain_feeds(model), stacked(chain_feeds(model, 16, seed=7))
    plain = quantized_error(model, "int8{equalize=none}", calib, test)
    equalized = quantized_error(model, "equalize-cross-layer,int8{equalize=none}", calib, test)
    assert equalized < 0.5 * plain, (plain, equalized)


@pytest.mark.parametrize("act", ["Clip", "HardSwish", "Sigmoid", "HardSigmoid"])
def test_cross_layer_equalization_never_crosses_an_inexact_activation(act):
    model = imbalanced_chain("conv", act)
    result = graphopt.optimize(model, "equalize-cross-layer", strict=True)
    rec = next(r for r in result.records if r.name == "equalize-cross-layer")
    assert not rec.modified
    skipped = result.pass_reports["equalize-cross-layer"]["skipped"]
    assert skipped == [{"first": "conv1", "second": "conv2", "activation": act,
                        "reason": f"{act} does not commute with a per-channel scale"}]


def test_cross_layer_equalization_needs_the_only_reader():
    model = imbalanced_chain("conv", "Relu")
    twice = onnx.ModelProto()
    twice.CopyFrom(model)
    twice.graph.output.append(onnx.helper.make_tensor_value_info("h", onnx.TensorProto.FLOAT, None))  # conv1's output
    read = onnx.ModelProto()
    read.CopyFrom(model)
    read.graph.output.append(onnx.helper.make_tensor_value_info("r", onnx.TensorProto.FLOAT, None))  # the Relu's
    for m in (twice, read):
        result = graphopt.optimize(m, "equalize-cross-layer", strict=True)
        assert not result.records[0].modified


def test_an_equalized_chain_is_left_alone():
    model = imbalanced_chain("conv", "Relu")
    balanced = graphopt.optimize(model, "equalize-cross-layer", validate=False)
    again = graphopt.optimize(to_proto(balanced.model), "equalize-cross-layer", strict=True)
    assert not again.records[0].modified
    assert again.pass_reports["equalize-cross-layer"]["equalized_already"] == 1


# ------------------------------------------------------------------------------ SmoothQuant
@pytest.mark.parametrize("decomposed", [False, True])
def test_smooth_quant_fires_and_keeps_the_float_outputs(decomposed):
    model = outlier_layernorm(decomposed)
    calib = layernorm_feeds()
    got, records, result = optimized(model, "smooth-quant", calibration=calib)
    rec = next(r for r in records if r.name == "smooth-quant")
    assert rec.modified and rec.stats["layernorms"] == 1
    assert ops(result.model) == ops(graphopt.optimize(model, "none", validate=False).model)
    test = stacked(layernorm_feeds(8, seed=4))
    assert rel_close(run_ort(model, test)[0], run_ort(to_proto(result.model), test)[0])
    site = result.pass_reports["smooth-quant"]["sites"][0]
    assert site["consumers"] == 2 and site["max_scale"] > 5


@pytest.mark.parametrize("decomposed", [False, True])
def test_smooth_quant_lowers_the_int8_error(decomposed):
    model = outlier_layernorm(decomposed)
    calib, test = layernorm_feeds(), stacked(layernorm_feeds(16, seed=4))
    plain = quantized_error(model, "int8{equalize=none}", calib, test)
    smoothed = quantized_error(model, "smooth-quant,int8{equalize=none}", calib, test)
    assert smoothed < 0.7 * plain, (plain, smoothed)


@pytest.mark.parametrize("reader", ["Add", "Relu"])
def test_smooth_quant_leaves_a_layernorm_something_else_reads(reader):
    model = outlier_layernorm(reader=reader)
    result = graphopt.optimize(model, "smooth-quant", calibration=layernorm_feeds(), strict=True)
    assert not result.records[0].modified
    (skip,) = result.pass_reports["smooth-quant"]["skipped"]
    assert skip["node"] == "ln" and "only MatMul/Gemm with a constant weight may" in skip["reason"]


def test_smooth_quant_without_data_is_a_usage_error_naming_calib(tmp_path, capsys):
    path = tmp_path / "ln.onnx"
    onnx.save(outlier_layernorm(), path)
    out = tmp_path / "o.onnx"
    code = main([str(path), "-p", "smooth-quant", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "smooth-quant needs calibration data: give --calib DATA.npz" in err and not out.exists()
    with pytest.raises(CalibrationRequired, match="--calib"):
        graphopt.optimize(path, "smooth-quant")
    with pytest.raises(PipelineError, match="option 'alpha' must be above 0 and below 1"):
        graphopt.optimize(path, "smooth-quant{alpha=1.5}")


# ------------------------------------------------------------------------------ bias correction
def test_bias_correction_lowers_the_int8_error():
    model = biased_conv()
    calib, test = positive_feeds((1, 64, 6, 6)), stacked(positive_feeds((1, 64, 6, 6), 16, seed=5))
    result = graphopt.optimize(model, "correct-bias", calibration=calib, validate=False)
    rec = result.records[0]
    assert rec.modified and rec.stats["layers"] == 1
    assert ops(result.model) == ops(graphopt.optimize(model, "none", validate=False).model)
    # the float model changes, on purpose
    assert not rel_close(run_ort(model, test)[0], run_ort(to_proto(result.model), test)[0])
    plain = quantized_error(model, "int8{equalize=none}", calib, test)
    corrected = quantized_error(model, "correct-bias,int8{equalize=none}", calib, test)
    assert corrected < 0.8 * plain, (plain, corrected)
    # a second run does not correct again
    again = graphopt.optimize(to_proto(result.model), "correct-bias", calibration=calib, validate=False)
    assert not again.records[0].modified
    assert again.pass_reports["correct-bias"]["skipped"][0]["reason"] == "its bias was corrected already"


def test_bias_correction_holds_on_average_at_padded_borders():
    # 3x3 maps with a 3x3 kernel and pads 1: 8 of 9 outputs read padding; the measured correction
    # makes the mean output of the INT8-weight conv equal the float conv's, per channel
    from onnx import helper

    from graphopt.passes.quantize_int8 import dequantized_weight
    from int8_models import build, fvi

    rng = np.random.default_rng(2)
    wt = rng.normal(0, 0.05, (8, 8, 3, 3)).astype(np.float32)
    wt[:, 0, 1, 1] = 2.0  # a large weight: a coarse INT8 step for the rest
    model = build([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1] * 4)],
                  [fvi("x", ["N", 8, 3, 3])], [fvi("y", ["N", 8, 3, 3])], {"w": wt, "b": np.zeros(8, np.float32)})
    feeds = positive_feeds((1, 8, 3, 3))
    result = graphopt.optimize(model, "correct-bias", calibration=feeds, validate=False)
    g = result.model.graph
    conv = next(n for n in g.nodes if n.op_type == "Conv")
    bias = np.asarray(g.const_value(conv.inputs[2]))
    x = stacked(feeds[:32])  # the calibration samples (the rest is held out)
    quantized = build([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1] * 4)], [fvi("x", ["N", 8, 3, 3])],
                      [fvi("y", ["N", 8, 3, 3])], {"w": dequantized_weight(wt, 0), "b": bias})
    shift = run_ort(quantized, x)[0].mean(axis=(0, 2, 3)) - run_ort(model, x)[0].mean(axis=(0, 2, 3))
    uncorrected = np.abs(bias).max()
    assert uncorrected > 1e-3 and np.abs(shift).max() < 1e-3 * uncorrected, (shift, bias)


def test_bias_correction_is_lossy_and_needs_data():
    from graphopt.passes import PASSES

    by_name = {p.name: p for p in PASSES}
    assert not by_name["correct-bias"].lossless and by_name["correct-bias"].needs_calibration
    assert by_name["equalize-cross-layer"].lossless and not by_name["equalize-cross-layer"].needs_calibration
    assert by_name["smooth-quant"].lossless and by_name["smooth-quant"].needs_calibration
    with pytest.raises(CalibrationRequired, match="correct-bias needs calibration data"):
        graphopt.optimize(biased_conv(), "correct-bias")


def test_bias_correction_twin_without_a_bias():
    model = biased_conv(bias=False)
    result = graphopt.optimize(model, "correct-bias", calibration=positive_feeds((1, 4, 64)), validate=False)
    assert not result.records[0].modified
    assert "no bias" in result.pass_reports["correct-bias"]["skipped"][0]["reason"]


def test_bias_edits_hold_only_for_int8_layers():
    edits = [equalize.Edit(1, 2, np.zeros(2, np.float32), "b", layer=7), equalize.Edit(2, 1, np.ones(2), "w")]
    assert equalize.for_layers(edits, {7}) == edits
    assert equalize.for_layers(edits, {8}) == [edits[1]]


# ------------------------------------------------------------------------------ inside int8
def test_int8_auto_keeps_the_equalization_that_helps(tmp_path):
    model = imbalanced_chain("conv", "Relu")
    calib, test = chain_feeds(model), stacked(chain_feeds(model, 16, seed=7))
    out = tmp_path / "q.onnx"
    result = graphopt.optimize(model, "int8", calibration=calib, thresholds=NO_FLOOR, output=str(out))
    eq = result.pass_reports["quantize-int8"]["equalization"]
    tried = {t["name"]: t for t in eq["tried"]}
    assert eq["mode"] == "auto" and "cle" in eq["kept"] and tried["cle"]["kept"]
    assert tried["cle"]["norm_cosine"] > eq["baseline"]
    assert tried["smoothquant"] == {"name": "smoothquant", "applies": False,
                                    "reason": "no LayerNorm read only by MatMul/Gemm layers"}
    assert eq["norm_cosine"] >= tried["cle"]["norm_cosine"]
    rec = next(r for r in result.records if r.name == "quantize-int8")
    assert rec.stats["equalized"] == "+".join(eq["kept"])
    # the same as running the kept passes first, and better than none
    auto = float(np.linalg.norm(run_ort(onnx.load(out), test)[0] - run_ort(model, test)[0]))
    plain = quantized_error(model, "int8{equalize=none}", calib, test) * float(np.linalg.norm(run_ort(model, test)[0]))
    assert auto < 0.5 * plain


def test_int8_auto_keeps_nothing_that_does_not_lower_the_error(monkeypatch):
    monkeypatch.setattr(equalize, "MARGIN", 1.0)  # nothing can lower the error by 100%
    model = imbalanced_chain("conv", "Relu")
    calib = chain_feeds(model)
    auto = graphopt.optimize(model, "int8", calibration=calib, thresholds=NO_FLOOR, validate=False)
    eq = auto.pass_reports["quantize-int8"]["equalization"]
    assert eq["kept"] == [] and [t["name"] for t in eq["tried"] if t["applies"]] == ["cle", "bias"]
    assert all(not t["kept"] and t["norm_cosine"] is not None for t in eq["tried"] if t["applies"])
    none = graphopt.optimize(model, "int8{equalize=none}", calibration=calib, thresholds=NO_FLOOR, validate=False)
    assert "equalization" not in none.pass_reports["quantize-int8"]
    a, b = to_proto(auto.model), to_proto(none.model)
    assert [t.raw_data for t in a.graph.initializer] == [t.raw_data for t in b.graph.initializer]


def test_int8_equalize_list_applies_without_measuring():
    model = outlier_layernorm()
    result = graphopt.optimize(model, "int8{equalize=smoothquant}", calibration=layernorm_feeds(),
                               thresholds=NO_FLOOR, validate=False)
    eq = result.pass_reports["quantize-int8"]["equalization"]
    assert eq["kept"] == ["smoothquant"] and "baseline" not in eq
    with pytest.raises(PipelineError, match="option 'equalize' must be auto, none or a comma list of cle, "
                                            "smoothquant, bias, got 'cle,foo'"):
        graphopt.optimize(model, 'int8{equalize="cle,foo"}')


def test_int8_smooth_quant_inside_auto_on_the_outlier_model():
    model = outlier_layernorm()
    calib, test = layernorm_feeds(), stacked(layernorm_feeds(16, seed=4))
    result = graphopt.optimize(model, "int8", calibration=calib, thresholds=NO_FLOOR, validate=False)
    eq = result.pass_reports["quantize-int8"]["equalization"]
    assert "smoothquant" in eq["kept"]
    ref, got = run_ort(model, test)[0], run_ort(to_proto(result.model), test)[0]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < quantized_error(model, "int8{equalize=none}", calib, test)


def test_int8_report_shows_the_equalization(tmp_path, capsys):
    path, calib = tmp_path / "m.onnx", tmp_path / "c.npz"
    model = imbalanced_chain("conv", "Relu")
    onnx.save(model, path)
    np.savez(calib, x=np.concatenate([f["x"] for f in chain_feeds(model)]))
    out, rep, md = tmp_path / "q.onnx", tmp_path / "r.json", tmp_path / "r.md"
    code = main([str(path), "-p", "int8", "--calib", str(calib), "-o", str(out), "--report", str(rep)])
    err = capsys.readouterr().err
    assert code == 0, err
    eq = json.loads(rep.read_text())["pass_reports"]["quantize-int8"]["equalization"]
    assert [t["name"] for t in eq["tried"]] == ["cle", "smoothquant", "bias"] and "cle" in eq["kept"]
    assert "; equalization kept: cle" in err and "(tried cle, bias)" in err
    code = main([str(path), "-p", "int8", "--calib", str(calib), "-o", str(tmp_path / "q2.onnx"), "--report", str(md)])
    capsys.readouterr()
    text = md.read_text()
    assert code == 0 and "## quantize-int8: equalization" in text and "| cle | yes |" in text


def test_int8_equalization_costs_nothing_where_none_applies():
    # small_cnn: no Conv->Relu->Conv chain with single readers, no LayerNorm; only bias correction applies
    result = graphopt.optimize(small_cnn(), "int8", calibration=[{"x": np.random.default_rng(i).standard_normal(
        (1, 3, 16, 16)).astype(np.float32)} for i in range(40)], thresholds=NO_FLOOR, validate=False)
    tried = {t["name"]: t for t in result.pass_reports["quantize-int8"]["equalization"]["tried"]}
    assert not tried["cle"]["applies"] and not tried["smoothquant"]["applies"]
    assert "seconds" not in tried["cle"] and tried["bias"]["applies"]
