"""prune-channels: what a layer's channels may reach, what shrinks with them, the twins where
they escape, FLOPs and params before and after, and the accuracy budget."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import run_ort
from int8_models import unnamed_net
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.errors import PipelineError
from graphopt.quant.calibration import CalibrationSettings

RNG = np.random.default_rng(5)


def w(*shape, scale=0.3):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def build(nodes, inits, out_shape=("N", 10), in_shape=("N", 4, 8, 8)):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
                          [numpy_helper.from_array(a, n) for n, a in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(m, full_check=True)
    return m


def chain_model():
    """conv1 -> BN -> Relu -> depthwise conv -> Mul(per-channel) -> conv2 -> GAP -> Flatten -> Gemm."""
    return build([
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "wd"], ["d1"], name="dw", group=16, pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["d1", "k"], ["d2"], name="scale"),
        helper.make_node("Conv", ["d2", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], name="head", transB=1),
    ], {"w1": w(16, 4, 3, 3), "b1": w(16), "s": RNG.uniform(0.1, 2, 16).astype(np.float32), "bb": w(16),
        "m": w(16), "v": RNG.uniform(0.5, 1.5, 16).astype(np.float32), "wd": w(16, 1, 3, 3),
        "k": RNG.uniform(0.5, 1.5, (1, 16, 1, 1)).astype(np.float32), "w2": w(8, 16, 1, 1), "b2": w(8),
        "wg": w(10, 8), "bg": w(10)})


def report(result):
    return result.pass_reports["prune-channels"]


def test_channels_shrink_through_bn_depthwise_and_per_channel_constants():
    result = graphopt.optimize(chain_model(), "prune-channels{method=channel,ratio=0.25}")
    r = report(result)
    assert {(L["node"], L["channels_before"], L["channels"]) for L in r["layers"]} == {("conv1", 16, 12), ("conv2", 8, 6)}
    g = result.model.graph
    dw = next(n for n in g.nodes if n.name == "dw")
    assert dw.attr("group") == 12 and g.const_value(dw.inputs[1]).shape == (12, 1, 3, 3)
    head = next(n for n in g.nodes if n.name == "head")
    assert g.const_value(head.inputs[1]).shape == (10, 6)  # Flatten of a 1x1 map: features follow channels
    assert r["after"]["macs"] < r["before"]["macs"] and r["after"]["params"] < r["before"]["params"]
    assert result.validation.ok  # lossy validation ran against the input (cosine, top-1 reported)


def test_bn_gamma_decides_which_channels_go():
    model = chain_model()
    gamma = RNG.uniform(1.0, 2.0, 16).astype(np.float32)
    gamma[[3, 7, 11, 15]] = 0.01  # nearly dead channels
    for t in model.graph.initializer:
        if t.name == "s":
            t.CopyFrom(numpy_helper.from_array(gamma, "s"))
    result = graphopt.optimize(model, "prune-channels{method=channel,ratio=0.25}", validate=False)
    g = result.model.graph
    conv1 = next(n for n in g.nodes if n.name == "conv1")
    kept = g.const_value(conv1.inputs[1])
    original = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "w1")
    assert np.array_equal(kept, np.delete(original, [3, 7, 11, 15], axis=0))


@pytest.mark.parametrize("tail, reason", [
    ([helper.make_node("Add", ["c1", "x2"], ["y"], name="residual")], "its channels meet another tensor at Add 'residual'"),
    ([helper.make_node("Concat", ["c1", "x2"], ["y"], name="cat", axis=1)], "its channels reach Concat 'cat'"),
    ([helper.make_node("Identity", ["c1"], ["y"], name="id")], "its channels reach a graph output"),
])
def test_channels_that_meet_other_tensors_are_left_alone(tail, reason):
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w2"], ["x2"], name="conv2", pads=[1, 1, 1, 1])] + tail
    out = (("N", 32, 8, 8) if tail[0].op_type == "Concat" else ("N", 16, 8, 8))
    model = build(nodes, {"w1": w(16, 4, 3, 3), "w2": w(16, 4, 3, 3)}, out_shape=out)
    result = graphopt.optimize(model, "prune{method=channel}", validate=False)
    skipped = {s["node"]: s["reason"] for s in report(result)["skipped"]}
    assert skipped["conv1"] == reason
    assert "conv1" not in {L["node"] for L in report(result)["layers"]}


def test_global_allocation_and_min_channels():
    result = graphopt.optimize(chain_model(), "prune{method=channel,ratio=0.5,allocation=global,min_channels=6}",
                               validate=False)
    sizes = {L["node"]: L["channels"] for L in report(result)["layers"]}
    assert all(v >= 6 for v in sizes.values())
    assert sum(16 - v if k == "conv1" else 8 - v for k, v in sizes.items()) == 12  # half of the 24 channels


def test_options_are_checked():
    with pytest.raises(PipelineError, match="option 'ratio' must be at least 0 and below 1, got 1.0"):
        graphopt.optimize(chain_model(), "prune{method=channel,ratio=1.0}")


def test_budget_keeps_sensitive_layers_whole():
    # a feature-map output: the loss is (1 - cosine) x 100, above 0 for any pruning
    model = build([helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
                   helper.make_node("Relu", ["c1"], ["r1"]),
                   helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2")],
                  {"w1": w(16, 4, 3, 3), "w2": w(8, 16, 1, 1)}, out_shape=("N", 8, 8, 8))
    feeds = CalibrationSettings(data=[{"x": RNG.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(20)],
                                holdout=0.5)
    strict = graphopt.optimize(model, "prune-channels{method=channel,max_drop=0}", calibration=feeds, validate=False)
    assert report(strict)["kept_whole"] == ["conv1"] and not strict.records[0].modified
    loose = graphopt.optimize(model, "prune-channels{method=channel,max_drop=100}", calibration=feeds, validate=False)
    assert report(loose)["kept_whole"] == [] and loose.records[0].modified


def test_second_outputs_keep_the_layer_whole_and_min_channels_is_checked():
    model = build([helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
                   helper.make_node("MaxPool", ["c1"], ["p", "idx"], name="pool", kernel_shape=[2, 2]),
                   helper.make_node("Conv", ["p", "w2"], ["y"], name="conv2")],
                  {"w1": w(16, 4, 3, 3), "w2": w(8, 16, 1, 1)}, out_shape=("N", 8, 7, 7))
    result = graphopt.optimize(model, "prune{method=channel}")
    assert {s["node"]: s["reason"] for s in report(result)["skipped"]}["conv1"] == \
        "its channels reach MaxPool 'pool', which has a second output"
    with pytest.raises(PipelineError, match="option 'min_channels' must be at least 1, got 0"):
        graphopt.optimize(chain_model(), "prune{method=channel,min_channels=0}")


def test_dynamo_exports_prune_after_folding(golden_path):
    from helpers import golden

    path = golden_path(next(m for m in golden.CORPUS if m.name == "cnn_dynamo"))
    result = graphopt.optimize(path, "prune{method=channel,ratio=0.5}")
    assert report(result)["layers"]  # the bias built by Expand(CastLike(...)) folds first


def test_standalone_pass_leaves_no_orphaned_weights():
    result = graphopt.optimize(chain_model(), "prune-channels{method=channel}", validate=False)
    assert all(result.model.graph.has_uses(v) or v.is_graph_output for v in result.model.graph.initializers)


def test_every_unnamed_layer_loses_its_own_channels(tmp_path):
    model = unnamed_net(residual=False)
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = tmp_path / "p.onnx"
    result = graphopt.optimize(model, "prune{method=channel,ratio=0.5}", output=str(out), validate=False)
    r = report(result)
    assert [(L["node"], L["channels_before"], L["channels"]) for L in r["layers"]] == [
        ("Conv -> c0", 8, 4), ("Conv -> c1", 8, 4), ("Conv -> c2", 8, 4), ("Gemm -> h", 16, 8)]
    assert r["skipped"] == []
    proto = onnx.load(out)
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}

    def weight(value, index=1):
        return inits[next(n for n in proto.graph.node if value in n.output).input[index]]

    def kept(w, axis=0):  # no BatchNorm: the channels with the largest L1 norm stay (criterion auto)
        norms = np.abs(w).sum(axis=tuple(i for i in range(w.ndim) if i != axis))
        return np.sort(np.argsort(norms, kind="stable")[len(norms) // 2:])

    k0, k1, k2, kg = (kept(before["w0"]), kept(before["w1"]), kept(before["w2"]), kept(before["wg"]))
    np.testing.assert_array_equal(weight("c0"), before["w0"][k0])
    np.testing.assert_array_equal(weight("c0", 2), before["b0"][k0])
    np.testing.assert_array_equal(weight("c1"), before["w1"][k1][:, k0])
    np.testing.assert_array_equal(weight("c2"), before["w2"][k2][:, k1])
    np.testing.assert_array_equal(weight("h"), before["wg"][kg][:, k2])  # transB: [out, in]
    np.testing.assert_array_equal(weight("y"), before["wm"][kg])
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert run_ort(proto, {"x": x})[0].shape == (2, 10)


def test_unnamed_residual_layers_are_reported_with_readable_labels():
    result = graphopt.optimize(unnamed_net(), "prune{method=channel,ratio=0.5}", validate=False)
    r = report(result)
    assert r["skipped"] == [
        {"node": "Conv -> c0", "op": "Conv", "reason": "its channels meet another tensor at Add -> s1"},
        {"node": "Conv -> c1", "op": "Conv", "reason": "its channels meet another tensor at Add -> s1"}]
    assert [L["node"] for L in r["layers"]] == ["Conv -> c2", "Gemm -> h"]
