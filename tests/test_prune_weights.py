"""prune-weights and `graphopt sparsity`: magnitude (per layer and global), TensorRT 2:4, scoping,
the accuracy budget, and the 2:4 pattern surviving int8."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from helpers import GOLDEN, run_ort
from int8_models import mlp, small_cnn, unnamed_net

import graphopt
from graphopt.cli import main
from graphopt.errors import PipelineError
from graphopt.lint.sparsity import holds_two_four, layer_sparsity, two_four_mask
from graphopt.quant.calibration import CalibrationSettings

DIGITS = os.path.join(GOLDEN, "trained", "digits_cnn")


def layers(result):
    return {L["node"]: L for L in result.pass_reports["prune-weights"]["layers"]}


def test_two_four_mask_keeps_the_two_largest_of_every_four():
    w = np.array([[1.0, -5.0, 3.0, 0.5, 2.0, 2.5, -0.1, 9.0]], np.float32)
    keep = two_four_mask(w, axis=1)
    assert keep.tolist() == [[False, True, True, False, False, True, False, True]]
    assert holds_two_four(np.where(keep, w, 0), 1) and not holds_two_four(w, 1)


def test_magnitude_per_layer_prunes_each_layer_exactly():
    result = graphopt.optimize(small_cnn(), "prune{sparsity=0.5,allocation=layer}", validate=False)
    for L in layers(result).values():
        assert L["sparsity"] == pytest.approx(50.0, abs=100 / L["params"])
    assert not any(v.name.endswith("_w") and not v.uses for v in result.model.graph.initializers)  # dce ran


def test_magnitude_global_reaches_the_overall_target_unevenly():
    result = graphopt.optimize(small_cnn(), "prune{sparsity=0.6}", validate=False)
    by = layers(result)
    total = sum(L["params"] for L in by.values())
    assert sum(L["params"] * L["sparsity"] for L in by.values()) / total == pytest.approx(60.0, abs=0.05)
    assert len({round(L["sparsity"]) for L in by.values()}) > 1  # LAMP spreads it
    # within a layer the smallest magnitudes went: every kept weight is at least every pruned one
    folded = graphopt.optimize(small_cnn(), "fuse,fold", validate=False).model
    before = {n.name: folded.graph.const_value(n.inputs[1]) for n in folded.graph.nodes if n.op_type in ("Conv", "Gemm")}
    for n in result.model.graph.nodes:
        if n.name in before:
            w, after = np.abs(before[n.name]), result.model.graph.const_value(n.inputs[1])
            assert w[after == 0].max(initial=0) <= w[after != 0].min()


def test_fifty_percent_magnitude_costs_at_most_one_point_on_the_trained_cnn(tmp_path):
    out = tmp_path / "p.onnx"
    graphopt.optimize(DIGITS + ".onnx", "prune{sparsity=0.5}", output=str(out),
                      calibration=DIGITS + ".calib.npz")
    test = np.load(DIGITS + ".test.npz")
    fp32 = (run_ort(onnx.load(DIGITS + ".onnx"), {"input": test["input"]})[0].argmax(1) == test["labels"]).mean()
    pruned = (run_ort(onnx.load(out), {"input": test["input"]})[0].argmax(1) == test["labels"]).mean()
    assert 100 * (fp32 - pruned) <= 1.0
    s = layer_sparsity(graphopt.load(str(out)))
    params = sum(L.params for L in s)
    assert sum(L.params * L.sparsity for L in s) / params == pytest.approx(50.0, abs=0.1)


def test_two_four_on_every_eligible_layer_and_through_int8(tmp_path):
    out, q = tmp_path / "p.onnx", tmp_path / "q.onnx"
    result = graphopt.optimize(DIGITS + ".onnx", "prune{method=2:4}", output=str(out), validate=False)
    skipped = result.pass_reports["prune-weights"]["skipped"]
    assert [s["reason"] for s in skipped] == ["input-channel axis 1 has 1 entries, not a multiple of 4"]
    for path in (out, q):
        if path == q:
            graphopt.optimize(str(out), "int8", output=str(q), calibration=DIGITS + ".calib.npz", validate=False)
        s = layer_sparsity(graphopt.load(str(path)))
        assert all(L.two_four for L in s if L.eligible) and sum(L.eligible for L in s) == 6


def test_sparsity_command(tmp_path, capsys):
    out = tmp_path / "p.onnx"
    graphopt.optimize(DIGITS + ".onnx", "prune{method=2:4}", output=str(out), validate=False)
    assert main(["sparsity", str(out), "--require-2:4"]) == 0
    text = capsys.readouterr().out
    assert "Conv '/0/0.0/Conv' [16, 1, 3, 3]: 0.0% zeros, 2:4 n/a (axis 1 has 1 entries" in text
    assert text.strip().endswith("2:4 holds on 6 of 6 eligible layers")
    assert main(["sparsity", DIGITS + ".onnx", "--require-2:4"]) == 4
    assert capsys.readouterr().out.strip().endswith("2:4 holds on 0 of 6 eligible layers")


def test_matmul_and_gemm_axes():
    m = mlp()
    result = graphopt.optimize(m, "prune{method=2:4}", validate=False)
    for L in layer_sparsity(result.model):
        assert L.axis == 0 and L.two_four is (L.shape[0] % 4 == 0)  # MatMul B [K, N]: groups along K


def test_scope_and_exclusions_leave_layers_dense():
    result = graphopt.optimize(small_cnn(), 'prune{exclude_nodes="branch_*",exclude_ops=Gemm}', validate=False)
    skipped = {s["node"]: s["reason"] for s in result.pass_reports["prune-weights"]["skipped"]}
    assert skipped["branch_a"] == "excluded by exclude_nodes (branch_*)" and skipped["head"] == "excluded by exclude_ops (Gemm)"
    assert "branch_a" not in layers(result)


def test_zero_sparsity_changes_nothing_and_bad_options_are_errors():
    result = graphopt.optimize(small_cnn(), "prune-weights{sparsity=0}", validate=False)
    assert not result.records[0].modified
    with pytest.raises(PipelineError, match="option 'sparsity' must be at least 0 and below 1, got 1.5"):
        graphopt.optimize(small_cnn(), "prune{sparsity=1.5}")
    with pytest.raises(PipelineError, match="option 'method' must be one of magnitude, 2:4, channel, got 'random'"):
        graphopt.optimize(small_cnn(), "prune{method=random}")


def test_budget_keeps_sensitive_layers_dense():
    feeds = CalibrationSettings(data=DIGITS + ".test.npz", holdout=0.5)  # labelled: real accuracy
    result = graphopt.optimize(DIGITS + ".onnx", "prune{method=2:4,max_drop=1}", calibration=feeds, validate=False)
    report = result.pass_reports["prune-weights"]
    assert report["kept_dense"] and report["accuracy"]["drop"] <= 1.0
    loose = graphopt.optimize(DIGITS + ".onnx", "prune{method=2:4,max_drop=100}", calibration=feeds, validate=False)
    assert loose.pass_reports["prune-weights"]["kept_dense"] == []


def test_shared_weight_is_pruned_once_and_stays_shared():
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(1).standard_normal((8, 4, 3, 3)).astype(np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["a"], name="c1"),
                           helper.make_node("Conv", ["x2", "w"], ["b"], name="c2"),
                           helper.make_node("Add", ["a", "b"], ["y"])], "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5]),
                           helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 4, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 3, 3])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    result = graphopt.optimize(m, "prune{sparsity=0.3}", validate=False)
    convs = [n for n in result.model.graph.nodes if n.op_type == "Conv"]
    assert convs[0].inputs[1] is convs[1].inputs[1]
    assert len(result.model.graph.initializers) == 1


def test_fp16_weights_are_pruned_and_quantized_ones_are_reported():
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(2).standard_normal((8, 8, 1, 1)).astype(np.float16)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c")], "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 8, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 8, 3, 3])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    result = graphopt.optimize(m, "prune{method=2:4}")
    assert all(L.two_four for L in layer_sparsity(result.model))
    q = graphopt.optimize(small_cnn(), "int8", calibration=[{"x": np.ones((1, 3, 16, 16), np.float32)}] * 4,
                          validate=False)
    again = graphopt.optimize(graphopt.onnx_io.emit.to_proto(q.model), "prune-weights", validate=False)
    reasons = {s["reason"] for s in again.pass_reports["prune-weights"]["skipped"]}
    assert reasons == {"its weight is quantized already (prune before int8)"}


# ------------------------------------------------------------------ unnamed and duplicate node names
UNNAMED = {"Conv -> c0": "c0", "Conv -> c1": "c1", "Conv -> c2": "c2", "Gemm -> h": "h", "MatMul -> y": "y"}


def written_weights(path, outputs):
    """Each layer's weight in a written model, found by the value the layer computes."""
    proto = onnx.load(path)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    return {out: inits[next(n for n in proto.graph.node if out in n.output).input[1]] for out in outputs}


@pytest.mark.parametrize("allocation", ["global", "layer"])
def test_every_unnamed_layer_is_pruned_by_magnitude(tmp_path, allocation):
    out = tmp_path / "p.onnx"
    result = graphopt.optimize(unnamed_net(), f"prune{{method=magnitude,allocation={allocation}}}", output=str(out),
                               validate=False)
    report = result.pass_reports["prune-weights"]
    assert [L["node"] for L in report["layers"]] == list(UNNAMED) and report["skipped"] == []
    weights = written_weights(out, UNNAMED.values())
    for label, value in UNNAMED.items():
        w, L = weights[value], layers(result)[label]
        zeros = 100.0 * (1 - np.count_nonzero(w) / w.size)
        assert L["params"] == w.size and L["sparsity"] == pytest.approx(zeros, abs=0.01) and zeros > 10, label
        if allocation == "layer":
            assert zeros == pytest.approx(50.0, abs=100 / w.size)
    total = sum(w.size for w in weights.values())
    assert sum(w.size - np.count_nonzero(w) for w in weights.values()) / total == pytest.approx(0.5, abs=0.01)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert run_ort(onnx.load(out), {"x": x})[0].shape == (2, 10)


def test_every_eligible_unnamed_layer_gets_two_four(tmp_path):
    out = tmp_path / "p.onnx"
    result = graphopt.optimize(unnamed_net(), "prune{method=2:4}", output=str(out), validate=False)
    report = result.pass_reports["prune-weights"]
    assert report["skipped"] == [{"node": "Conv -> c0", "op": "Conv",
                                  "reason": "input-channel axis 1 has 3 entries, not a multiple of 4"}]
    assert [L["node"] for L in report["layers"]] == list(UNNAMED)[1:]
    assert {L["node"]: L["sparsity"] for L in report["layers"]} == dict.fromkeys(list(UNNAMED)[1:], 50.0)
    # the `graphopt sparsity` view of the written model: labelled the same way, 2:4 on each
    assert {L.node: L.two_four for L in layer_sparsity(graphopt.load(str(out)))} == {
        "Conv -> c0": None, **dict.fromkeys(list(UNNAMED)[1:], True)}


def test_duplicate_and_missing_names_are_separate_layers(tmp_path):
    model = unnamed_net()
    by_out = {n.output[0]: n for n in model.graph.node}
    by_out["c0"].name = by_out["c1"].name = "conv"  # the IR renames the second one
    by_out["h"].name = "head"
    out = tmp_path / "p.onnx"
    result = graphopt.optimize(model, "prune{method=magnitude,allocation=layer}", output=str(out), validate=False)
    labels = [L["node"] for L in result.pass_reports["prune-weights"]["layers"]]
    assert labels[0] == "conv" and labels[1].startswith("conv") and labels[2:] == ["Conv -> c2", "head", "MatMul -> y"]
    assert len(set(labels)) == 5
    for value, w in written_weights(out, ["c0", "c1", "c2", "h", "y"]).items():
        assert np.count_nonzero(w) / w.size == pytest.approx(0.5, abs=1 / w.size), value


def test_prune_weights_with_method_channel_alone_says_it_did_nothing():
    """method=channel is prune-channels' job: alone, prune-weights warns instead of a silent
    success; inside the prune alias (which runs prune-channels first) it stays quiet."""
    r = graphopt.optimize(small_cnn(), "prune-weights{method=channel}", validate=False)
    assert any("prune-weights did nothing: method=channel" in w for w in r.warnings)
    r = graphopt.optimize(small_cnn(), "prune{method=channel,ratio=0.25}", validate=False)
    assert not any("prune-weights did nothing" in w for w in r.warnings)
