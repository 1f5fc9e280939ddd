"""quantize-int8 and the int8 alias: Q/DQ placement per docs/ARCHITECTURE.md, TensorRT facts, weights, scales, opsets,
default exclusions and their overrides, accuracy control. Each rule where it fires and a twin
where it must not."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import pytest
from helpers import run_ort
from int8_models import (
    NO_FLOOR,
    REVIEW_RNG,
    argmax_model,
    build,
    concat_model,
    fvi,
    mlp,
    one_channel_500x,
    qdq_count,
    sensitive_cnn,
    small_cnn,
    unnamed_feeds,
    unnamed_net,
    w,
)
from onnx import helper, numpy_helper

import graphopt
from graphopt.cli import main
from graphopt.errors import GraphoptError, PipelineError
from graphopt.lint.qdq_lint import qdq_lint
from graphopt.pipeline.manager import PassFailed
from graphopt.quant.budget import BelowFloor
from graphopt.quant.calibration import CalibrationSettings
from graphopt.runtime.validate import LossyThresholds


def cnn_feeds(n=48, seed=1):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(n)]


def quantize(tmp_path, model, passes="int8", calibration=None, **kw):
    out = str(tmp_path / "int8.onnx")
    calibration = calibration if calibration is not None else cnn_feeds()
    result = graphopt.optimize(model, passes, output=out, calibration=calibration, **kw)
    proto = onnx.load(out)
    onnx.checker.check_model(proto, full_check=True)
    return proto, result


class View:
    """Who produces and who reads each value of an emitted model."""

    def __init__(self, proto: onnx.ModelProto):
        self.proto = proto
        self.producer = {o: n for n in proto.graph.node for o in n.output}
        self.inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        self.consts = dict(self.inits)
        for n in proto.graph.node:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.nodes = {n.name: n for n in proto.graph.node}

    def ops(self):
        return collections.Counter(n.op_type for n in self.proto.graph.node)

    def op_of(self, value):
        p = self.producer.get(value)
        return p.op_type if p is not None else None

    def dq_source(self, value):
        """For a DequantizeLinear output: (quantized source, scale, zero point, axis)."""
        dq = self.producer[value]
        assert dq.op_type == "DequantizeLinear"
        axis = next((a.i for a in dq.attribute if a.name == "axis"), None)
        return dq.input[0], self.consts[dq.input[1]], self.consts[dq.input[2]], axis

    def node_with(self, op, substring):
        return [n for n in self.proto.graph.node if n.op_type == op and substring in n.name]


def test_int8_places_qdq_the_way_tensorrt_expects(tmp_path):
    proto, result = quantize(tmp_path, small_cnn())
    v = View(proto)
    assert v.ops()["BatchNormalization"] == 0  # folded before the weight scales were computed
    assert next(o.version for o in proto.opset_import if o.domain == "") >= 13
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert len(convs) == 5
    for conv in convs:
        # activation: per-tensor, INT8 zero point 0, scale > 0
        src, scale, zp, _ = v.dq_source(conv.input[0])
        assert v.op_of(src) == "QuantizeLinear" and scale.shape == () and scale > 0
        assert zp.dtype == np.int8 and zp == 0
        # weight: INT8 initializer, per-channel along axis 0, explicit axis
        wsrc, wscale, wzp, axis = v.dq_source(conv.input[1])
        assert v.inits[wsrc].dtype == np.int8 and axis == 0
        assert wscale.shape == (v.inits[wsrc].shape[0],) and np.all(wscale > 0)
        assert wzp.dtype == np.int8 and not wzp.any()
        assert np.abs(v.inits[wsrc]).max() <= 127
        # never a bias
        assert v.op_of(conv.input[2]) is None and conv.input[2] in v.inits
    gemm = next(n for n in proto.graph.node if n.op_type == "Gemm")
    assert v.dq_source(gemm.input[1])[3] == 0  # transB=1: output axis 0
    assert v.op_of(gemm.input[2]) is None
    # the residual Add: exactly one input quantized, the skip input (a0, not the conv's output)
    add = next(n for n in proto.graph.node if n.op_type == "Add")
    quantized = [v.op_of(i) == "DequantizeLinear" for i in add.input]
    assert quantized.count(True) == 1
    assert v.op_of(add.input[quantized.index(False)]) == "Conv"
    # average pooling: Q/DQ on its input
    gap = next(n for n in proto.graph.node if n.op_type == "GlobalAveragePool")
    assert v.op_of(gap.input[0]) == "DequantizeLinear"
    # MaxPool commutes: its input is not quantized
    maxpool = next(n for n in proto.graph.node if n.op_type == "MaxPool")
    assert v.op_of(maxpool.input[0]) != "DequantizeLinear"
    # the Concat: every input and the output share one scale
    concat = next(n for n in proto.graph.node if n.op_type == "Concat")
    scales = {float(v.dq_source(i)[1]) for i in concat.input}
    conv2 = v.nodes["conv2"]
    q = v.producer[v.dq_source(conv2.input[0])[0]]
    assert q.input[0] == concat.output[0]
    scales.add(float(v.dq_source(conv2.input[0])[1]))
    assert len(scales) == 1
    assert qdq_lint(graphopt.load(str(tmp_path / "int8.onnx"))) == []
    # lossy validation ran against the input model
    assert result.validation.ok and result.validation.accuracy.cosine > 0.99
    report = result.pass_reports["quantize-int8"]
    assert {L["kind"] for L in report["layers"]} == {"conv", "gemm", "residual", "pool"}
    assert all(L["precision"] == "int8" for L in report["layers"])


def test_int8_outputs_stay_close_to_fp32(tmp_path):
    model = small_cnn()
    proto, _ = quantize(tmp_path, model)
    feeds = {"x": np.random.default_rng(9).standard_normal((4, 3, 16, 16)).astype(np.float32)}
    ref, = run_ort(model, feeds)
    got, = run_ort(proto, feeds)
    cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.min() > 0.99
    assert not np.array_equal(ref, got)  # it really is quantized


def test_weights_float_keeps_float_weights_behind_qdq(tmp_path):
    proto, _ = quantize(tmp_path, small_cnn(), "int8{weights=float}")
    v = View(proto)
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    src, _, _, axis = v.dq_source(conv.input[1])
    q = v.producer[src]
    assert q.op_type == "QuantizeLinear" and v.inits[q.input[0]].dtype == np.float32 and axis == 0
    assert any(a.name == "axis" and a.i == 0 for a in q.attribute)


def test_per_tensor_weights_option(tmp_path):
    proto, _ = quantize(tmp_path, small_cnn(), "int8{per_channel=false}")
    v = View(proto)
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    _, scale, _, axis = v.dq_source(conv.input[1])
    assert scale.shape == () and axis is None


def test_second_run_changes_nothing(tmp_path):
    proto, _ = quantize(tmp_path, small_cnn())
    again = graphopt.optimize(proto, "quantize-int8", calibration=cnn_feeds(8), validate=False)
    rec = next(r for r in again.records if r.name == "quantize-int8")
    assert not rec.modified and rec.stats["note"] == "already quantized"


def test_model_without_quantizable_layers_is_left_alone(tmp_path):
    m = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) { r = Relu(x)  y = Sigmoid(r) }""")
    result = graphopt.optimize(m, "quantize-int8", calibration=[{"x": np.ones((1, 4), np.float32)}] * 4, validate=False)
    rec = next(r for r in result.records if r.name == "quantize-int8")
    assert not rec.modified
    assert not any(n.op_type == "QuantizeLinear" for n in result.model.graph.nodes)


def test_old_opset_is_raised_by_the_alias_and_refused_by_the_pass(tmp_path):
    model = small_cnn(opset=11)
    with pytest.raises(GraphoptError, match=r"quantize-int8 needs opset >= 13 .* the model is opset 11: run raise-opset"):
        graphopt.optimize(model, "fuse,quantize-int8", calibration=cnn_feeds(4), validate=False, strict=True)
    proto, result = quantize(tmp_path, model)
    assert next(o.version for o in proto.opset_import if o.domain == "") == 13
    assert result.validation.ok


def test_conv_still_followed_by_batchnorm_is_not_quantized(tmp_path):
    result = graphopt.optimize(small_cnn(), "quantize-int8", calibration=cnn_feeds(8), validate=False)
    skipped = {s["node"]: s["reason"] for s in result.pass_reports["quantize-int8"]["skipped"]}
    assert "fold it first" in skipped["conv0"] and "fold it first" in skipped["conv1"]  # unfused: own names
    assert "branch_a" not in skipped


def reasons(result):
    return {s["node"]: s["reason"] for s in result.pass_reports["quantize-int8"]["skipped"]}


def precision(result):
    return {L["node"]: L["precision"] for L in result.pass_reports["quantize-int8"]["layers"]}


def mlp_feeds(n=16):
    rng = np.random.default_rng(3)
    return [{"x": rng.standard_normal((1, 8, 16)).astype(np.float32)} for _ in range(n)]


def test_default_exclusions_gelu_gemv_softmax(tmp_path):
    result = graphopt.optimize(mlp(softmax_bmm=True), "int8{bmm=true,method=entropy}", calibration=mlp_feeds(),
                               validate=False, thresholds=NO_FLOOR)
    why = reasons(result)
    assert why["fc2"].startswith("skip=gelu")
    assert why["gemv"].startswith("skip=gemv")
    assert why["pv"].startswith("skip=softmax")
    assert precision(result) == {"fc1": "int8", "qk": "int8"}
    # method=auto (the default) chooses a GELU output's range by its effect: the gelu exclusion is off
    auto = graphopt.optimize(mlp(softmax_bmm=True), "int8{bmm=true}", calibration=mlp_feeds(), validate=False,
                             thresholds=NO_FLOOR)
    assert "fc2" not in reasons(auto) and reasons(auto)["pv"].startswith("skip=softmax")


def test_default_exclusions_can_be_turned_off_or_forced(tmp_path):
    off = graphopt.optimize(mlp(softmax_bmm=True), "int8{bmm=true,skip=gemv}", calibration=mlp_feeds(), validate=False,
                            thresholds=NO_FLOOR)
    assert set(precision(off)) == {"fc1", "fc2", "qk", "pv"}
    forced = graphopt.optimize(mlp(), "int8{force_nodes=gemv,method=entropy}", calibration=mlp_feeds(),
                               validate=False, thresholds=NO_FLOOR)
    assert set(precision(forced)) == {"fc1", "gemv"}
    assert reasons(forced)["fc2"].startswith("skip=gelu")


def test_activation_products_need_bmm(tmp_path):
    result = graphopt.optimize(mlp(softmax_bmm=True), "int8", calibration=mlp_feeds(), validate=False)
    assert "bmm=true" in reasons(result)["qk"]


def test_exclude_by_op_type_and_node_glob(tmp_path):
    by_glob = graphopt.optimize(small_cnn(), 'int8{exclude_nodes="branch_*"}', calibration=cnn_feeds(8), validate=False)
    assert reasons(by_glob)["branch_a"] == "excluded by exclude_nodes (branch_*)"
    assert "branch_b" in reasons(by_glob)
    by_op = graphopt.optimize(small_cnn(), "int8{exclude_ops=Gemm}", calibration=cnn_feeds(8), validate=False)
    assert reasons(by_op)["head"] == "excluded by exclude_ops (Gemm)"
    assert not any(n.op_type == "DequantizeLinear" and n.outputs[0].uses and n.outputs[0].uses[0][0].op_type == "Gemm"
                   for n in by_op.model.graph.nodes)


def test_pipeline_scope_limits_quantization(tmp_path):
    result = graphopt.optimize(small_cnn(), "fuse, quantize-int8 except nodes [\"conv2\"]", calibration=cnn_feeds(8),
                               validate=False)
    assert reasons(result)["conv2"] == "outside the pass's scope"


def test_tiny_conv_is_skipped_and_min_channels_overrides(tmp_path):
    default = graphopt.optimize(small_cnn(), "int8", calibration=cnn_feeds(8), validate=False)
    conv0 = "conv0"  # the conv with its BatchNorm folded in keeps the conv's name
    assert conv0 in precision(default)  # 3 channels x 3x3 kernel = 27 products per output
    tiny = graphopt.optimize(small_cnn(), "int8{min_channels=32}", calibration=cnn_feeds(8), validate=False)
    assert reasons(tiny)[conv0].startswith("skip=tiny-conv: 8 output channels")


def test_unknown_option_values_are_pipeline_errors():
    with pytest.raises(PipelineError, match="option 'method' must be one of auto, minmax, percentile, entropy, mse, got 'kl'"):
        graphopt.optimize(small_cnn(), "int8{method=kl}")
    with pytest.raises(PipelineError, match="unknown exclusion 'gelu2'"):
        graphopt.optimize(small_cnn(), "int8{skip=gelu2}")
    with pytest.raises(PipelineError, match="alias 'int8' has no option 'metod'"):
        graphopt.optimize(small_cnn(), "int8{metod=minmax}")


def test_lossy_thresholds_fail_validation(tmp_path):
    # below the floor int8 first leaves layers in FP32 (at most max_fallback of them), then fails
    with pytest.raises(BelowFloor, match=r"quantize-int8 \(kept in FP32\): cosine similarity [01]\.\d+ of output "
                                         r"'logits' is below min_cosine 0.9999999 .*most sensitive: "):
        quantize(tmp_path, small_cnn(), thresholds=LossyThresholds(min_cosine=0.9999999), passes="int8{max_fallback=0.2}")
    assert not (tmp_path / "int8.onnx").exists()


def test_budget_falls_back_the_most_sensitive_layers(tmp_path):
    # with per-tensor weight scales every other channel of conv2 rounds to zero next to its one
    # 500x larger channel, which makes conv2 by far the most sensitive layer
    model = sensitive_cnn()
    settings = CalibrationSettings(data=cnn_feeds(60), holdout=0.5)
    result = graphopt.optimize(model, "int8{per_channel=false,max_drop=0}", calibration=settings, validate=False)
    report = result.pass_reports["quantize-int8"]
    sens = {L["node"]: L["sensitivity"] for L in report["layers"]}
    assert max(sens, key=sens.get) == "conv2"
    assert report["fallback"][0] == "conv2"
    assert precision(result)["conv2"] == "fp32"
    assert report["accuracy"]["drop"] <= 0.0
    # the twin: a generous budget keeps every layer in INT8
    loose = graphopt.optimize(model, "int8{per_channel=false,max_drop=100}", calibration=settings, validate=False,
                              thresholds=NO_FLOOR)
    assert loose.pass_reports["quantize-int8"]["fallback"] == []
    assert set(precision(loose).values()) == {"int8"}


def test_sensitivity_report_without_budget(tmp_path):
    result = graphopt.optimize(small_cnn(), "int8{sensitivity=true}", calibration=cnn_feeds(20), validate=False)
    layers = result.pass_reports["quantize-int8"]["layers"]
    assert all("sensitivity" in L for L in layers)
    assert result.pass_reports["quantize-int8"]["fallback"] == []


# ------------------------------------------------------------------ unnamed nodes (exporters often leave names empty)
UNNAMED_LAYERS = {"Conv -> c0": "conv", "Conv -> c1": "conv", "Add -> s1": "residual", "Conv -> c2": "conv",
                  "GlobalAveragePool -> g": "pool", "Gemm -> h": "gemm", "MatMul -> y": "matmul"}


def maker(proto, value):
    """The node computing `value` (how a test finds an unnamed node in an emitted model)."""
    return next(n for n in proto.graph.node if value in n.output)


def test_unnamed_layers_are_each_quantized_and_reported(tmp_path):
    proto, result = quantize(tmp_path, unnamed_net(), calibration=unnamed_feeds())
    v = View(proto)
    # activations x, a0 (the second conv and the residual Add share it), a1, a2, f, hr; five weights
    assert v.ops()["QuantizeLinear"] == 6 and v.ops()["DequantizeLinear"] == 11
    for out in ("c0", "c1", "c2", "h", "y"):
        layer = maker(proto, out)
        src, _, _, _ = v.dq_source(layer.input[0])
        assert v.op_of(src) == "QuantizeLinear"
        wsrc, scale, _, axis = v.dq_source(layer.input[1])  # every weight, not just one of them
        assert v.inits[wsrc].dtype == np.int8 and axis == (1 if layer.op_type == "MatMul" else 0)
        assert scale.size == v.inits[wsrc].shape[axis]
    add = maker(proto, "s1")
    assert v.op_of(add.input[1]) == "DequantizeLinear"  # the skip input, a0
    report = result.pass_reports["quantize-int8"]
    labels = [L["node"] for L in report["layers"]]
    assert labels == list(UNNAMED_LAYERS)  # each layer once, told apart
    assert {L["node"]: L["kind"] for L in report["layers"]} == UNNAMED_LAYERS
    assert set(precision(result).values()) == {"int8"} and report["skipped"] == []
    assert set(report["layer_error"]) == {"Conv -> c0", "Conv -> c1", "Conv -> c2", "Gemm -> h", "MatMul -> y"}
    assert [n.name for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul", "Add")] == [""] * 6


def test_name_globs_never_match_unnamed_nodes_by_accident():
    result = graphopt.optimize(unnamed_net(), 'int8{exclude_nodes="Conv*,conv*"}', calibration=unnamed_feeds(8),
                               validate=False)
    assert set(precision(result).values()) == {"int8"}  # labels are for reading, globs match names
    result = graphopt.optimize(unnamed_net(), 'int8{exclude_nodes="*"}', calibration=unnamed_feeds(8), validate=False)
    report = result.pass_reports["quantize-int8"]
    assert report.get("layers", []) == []  # `*` matches the empty name: the user asked for every node
    assert {s["node"] for s in report["skipped"]} == set(UNNAMED_LAYERS) - {"Add -> s1"}


def test_budget_falls_back_the_right_unnamed_layers(tmp_path):
    # as in test_budget_falls_back_the_most_sensitive_layers: one channel of the 1x1 conv 500x
    # larger, the Gemm compensating; per-tensor weight scales make that conv the most sensitive
    model = one_channel_500x(unnamed_net(), "w2", "b2", "wg")
    settings = CalibrationSettings(data=unnamed_feeds(60), holdout=0.5)
    out = str(tmp_path / "budget.onnx")
    result = graphopt.optimize(model, "int8{per_channel=false,max_drop=0}", output=out, calibration=settings,
                               validate=False)
    report = result.pass_reports["quantize-int8"]
    sens = {L["node"]: L["sensitivity"] for L in report["layers"]}
    assert set(sens) == set(UNNAMED_LAYERS)
    assert max(sens, key=sens.get) == "Conv -> c2"
    assert report["fallback"][0] == "Conv -> c2"
    assert len(set(report["fallback"])) == len(report["fallback"]) < len(UNNAMED_LAYERS)
    fp32 = {label for label, p in precision(result).items() if p == "fp32"}
    assert set(report["fallback"]) <= fp32
    # the written model agrees with the report, layer by layer
    proto = onnx.load(out)
    v = View(proto)
    for label, out_name in (("Conv -> c0", "c0"), ("Conv -> c1", "c1"), ("Conv -> c2", "c2"), ("Gemm -> h", "h"),
                            ("MatMul -> y", "y")):
        assert (v.op_of(maker(proto, out_name).input[1]) == "DequantizeLinear") == (label not in fp32), label
    assert report["accuracy"]["drop"] <= 0.0


def test_duplicate_node_names_are_separate_layers(tmp_path):
    model = unnamed_net()
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for n in convs:
        n.name = "conv"  # invalid for onnxruntime, common in hand-edited models: the IR renames
    proto, result = quantize(tmp_path, model, calibration=unnamed_feeds(8), validate=False)
    names = [maker(proto, out).name for out in ("c0", "c1", "c2")]
    assert names[0] == "conv" and len(set(names)) == 3
    report = result.pass_reports["quantize-int8"]
    assert [L["node"] for L in report["layers"] if L["kind"] == "conv"] == names
    v = View(proto)
    assert all(v.op_of(maker(proto, out).input[1]) == "DequantizeLinear" for out in ("c0", "c1", "c2"))


def test_convs_fused_from_unnamed_nodes_are_each_quantized(tmp_path):
    # the int8 alias folds BatchNorm first: the rule-built convs replace unnamed ones
    model = small_cnn()
    for n in model.graph.node:
        n.name = ""
    proto, result = quantize(tmp_path, model, validate=False)
    v = View(proto)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert len(convs) == 5 and all(v.op_of(c.input[1]) == "DequantizeLinear" for c in convs)
    report = result.pass_reports["quantize-int8"]
    conv_labels = [L["node"] for L in report["layers"] if L["kind"] == "conv"]
    assert len(conv_labels) == len(set(conv_labels)) == 5 and all(conv_labels)
    assert set(precision(result).values()) == {"int8"}


def test_scalar_input_model_quantizes():
    model = build([helper.make_node("Mul", ["x", "s"], ["xs"]), helper.make_node("MatMul", ["xs", "w"], ["y"], name="mm")],
                  [fvi("x", ["N", 16]), fvi("s", [])], [fvi("y", ["N", 8])], {"w": w(16, 8)})
    feeds = [{"x": REVIEW_RNG.standard_normal((2, 16)).astype(np.float32), "s": np.float32(1.5)} for _ in range(8)]
    result = graphopt.optimize(model, "int8", calibration=feeds)
    assert qdq_count(result) == 1 and result.validation.ok

def test_grouped_conv_transpose_gets_one_weight_scale(tmp_path):
    model = build([helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", group=2)],
                  [fvi("x", ["N", 8, 5, 5])], [fvi("y", ["N", 8, 7, 7])], {"w": w(8, 4, 3, 3)})
    feeds = [{"x": REVIEW_RNG.standard_normal((1, 8, 5, 5)).astype(np.float32)} for _ in range(8)]
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

def test_nested_concats_and_constant_inputs_share_one_scale(tmp_path):
    feeds = [{"x": REVIEW_RNG.standard_normal((1, 4, 5, 5)).astype(np.float32)} for _ in range(8)]
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

def test_report_json_is_valid_with_an_int_output(tmp_path, capsys):
    path = tmp_path / "am.onnx"
    onnx.save(argmax_model(), path)
    np.savez(tmp_path / "c.npz", x=REVIEW_RNG.standard_normal((20, 16)).astype(np.float32))
    rep = tmp_path / "r.json"
    code = main([str(path), "-p", "int8", "--calib", str(tmp_path / "c.npz"), "-o", str(tmp_path / "o.onnx"),
                 "--report", str(rep)])
    assert code == 0, capsys.readouterr().err
    assert json.loads(rep.read_text())["validation"]["accuracy"]["top1_agreement"] is not None
