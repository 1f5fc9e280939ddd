"""Per-layer sensitivity (quant/budget.py): measured incrementally (only what is downstream of the
changed layer re-runs, its other inputs from cached FP32 activations), in parallel, it equals
measuring each changed model whole."""

from __future__ import annotations

import math

import numpy as np
import pytest
from int8_models import small_cnn
from onnx import TensorProto, helper

import graphopt
from graphopt.ir.dtypes import DataType
from graphopt.passes import prune_weights
from graphopt.passes.quantize_int8 import QuantizeInt8Options
from graphopt.passes.quantize_int8 import apply as apply_int8
from graphopt.quant import budget
from graphopt.quant.calibration import CalibrationSettings, collect_ranges, split_samples
from graphopt.quant.placement import PlacementRules, plan


def feeds(n=40, seed=3):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(n)]


def two_output_cnn():
    """small_cnn (a residual block, a two-branch Concat) with a second output from the middle
    (after the residual block): layers after it cannot change it."""
    proto = small_cnn()
    proto.graph.output.append(helper.make_tensor_value_info("r1", TensorProto.FLOAT, None))
    return graphopt.optimize(proto, "fuse,fold", validate=False).model


def setup_int8(per_channel=False):
    model = two_output_cnn()
    settings = CalibrationSettings(data=feeds(), holdout=0.5, batch_size=8)
    calib, held = split_samples(settings, model)
    g = model.graph
    tensors = sorted(v.name for v in g.values if v.const is None and v.dtype == DataType.FLOAT)
    amax = collect_ranges(model, tensors, calib, settings, "minmax").amax
    layers, _ = plan(g, PlacementRules(per_channel=per_channel), lambda node: True)
    options = QuantizeInt8Options(per_channel=per_channel)
    return model, held, layers, lambda m, units: apply_int8(m.graph, units, amax, options)


def assert_same(got, whole):
    assert [o.name for o in got.outputs] == [o.name for o in whole.outputs]
    for a, b in zip(got.outputs, whole.outputs):
        assert a.cosine == pytest.approx(b.cosine, rel=1e-6, abs=1e-9)
        assert a.norm_cosine == pytest.approx(b.norm_cosine, rel=1e-6, abs=1e-9)
        if math.isfinite(b.snr_db):
            assert a.snr_db == pytest.approx(b.snr_db, rel=1e-4, abs=1e-4)
        else:
            assert a.snr_db == b.snr_db
        assert a.top1_agreement == b.top1_agreement
    assert got.drop() == pytest.approx(whole.drop(), rel=1e-6, abs=1e-9)


def test_incremental_sensitivity_equals_whole_model_measurement():
    model, held, layers, apply = setup_int8()
    labels = {L.label for L in layers}
    assert {"conv1", "branch_a", "conv2", "residual"} <= labels  # a residual, a branch, after the Concat
    ev = budget.Evaluator(model.clone(), held, 8, apply)
    got = ev.sensitivity_reports(layers, math.inf)
    assert ev.stats["incremental"] == len(layers) and ev.stats["whole_model"] == 0
    assert ev.stats["rerun_nodes_share"] < 0.8 and ev.stats["cache_rounds"] == 1
    by_label = {L.label: L for L in layers}
    for L in layers:
        assert_same(got[L.node_id], ev.measure([L]))
    # after the residual block, the middle output is the reference's; before it, it changes
    r1 = {L.label: next(o for o in got[L.node_id].outputs if o.name == "r1") for L in layers}
    assert all(r1[k].snr_db == math.inf for k in ("branch_a", "conv2", "head"))  # identical
    assert r1["conv1"].snr_db < math.inf
    # a residual Add alone changes nothing (its Q/DQ needs its conv quantized): the reference
    assert got[by_label["residual"].node_id].drop() == 0.0
    # the scores sensitivity() hands the budget
    scores = ev.sensitivity(layers)
    for L in layers:
        whole = ev.measure([L])
        want = whole.drop() if whole.drop() > 0 else (1.0 - whole.norm_cosine) * 0.01
        assert scores[L.node_id] == pytest.approx(want, rel=1e-6, abs=1e-12)


def test_small_cache_takes_rounds_and_one_worker_gives_the_same():
    model, held, layers, apply = setup_int8(per_channel=True)
    ev = budget.Evaluator(model.clone(), held, 8, apply)
    want = ev.sensitivity_reports(layers, math.inf)
    tight = budget.Evaluator(model.clone(), held, 8, apply, cache_mb=0, workers=1)
    got = tight.sensitivity_reports(layers, math.inf)
    assert tight.stats["cache_rounds"] > 1 and tight.stats["workers"] == 1
    assert set(got) == set(want)
    for nid in want:
        assert_same(got[nid], want[nid])


def test_deadline_leaves_the_rest_unmeasured():
    model, held, layers, apply = setup_int8()
    ev = budget.Evaluator(model.clone(), held, 8, apply)
    assert ev.sensitivity_reports(layers, 0.0) == {}
    assert ev.sensitivity(layers, seconds=-1.0) == {L.node_id: 0.0 for L in layers}


def test_pruned_weights_are_cut_like_quantized_layers():
    # prune-weights replaces a layer's weight by a new initializer: the changed node is found
    # by its input, and only what follows it re-runs
    model = two_output_cnn()
    settings = CalibrationSettings(data=feeds(), holdout=0.5, batch_size=8)
    held = split_samples(settings, model)[1]
    g = model.graph
    units = []
    for node in g.toposort():
        if node.op_type in ("Conv", "Gemm"):
            w = g.const_value(node.inputs[1])
            data = np.where(np.abs(w) < np.quantile(np.abs(w), 0.6), 0, w).astype(w.dtype)
            units.append(prune_weights.PrunedLayer(node.id, node.label, node.op_type, node.inputs[1].name, data))
    ev = budget.Evaluator(model.clone(), held, 8, prune_weights.apply)
    got = ev.sensitivity_reports(units, math.inf)
    assert ev.stats["incremental"] == len(units) and len(got) == len(units)
    for u in units:
        assert_same(got[u.node_id], ev.measure([u]))


class _Unit:
    def __init__(self, i):
        self.node_id, self.label = i, f"layer{i}"


class _Report:
    def __init__(self, drop):
        self._drop = drop

    def drop(self):
        return self._drop


class _Counting:
    """An evaluator whose loss is 2 until `needed` units are left out, then 0.5."""

    def __init__(self, total, needed):
        self.total, self.needed, self.calls = total, needed, []

    def measure(self, units):
        k = self.total - len(units)
        self.calls.append(k)
        return _Report(2.0 if k < self.needed else 0.5)


@pytest.mark.parametrize("limit", [40, 25])
def test_fewest_fallback_layers_search_finds_the_same_count_in_few_measurements(limit):
    units = [_Unit(i) for i in range(40)]
    scores = {u.node_id: float(40 - u.node_id) for u in units}  # unit 0 is the most sensitive
    for needed in range(1, limit + 1):
        ev = _Counting(len(units), needed)
        kept, best, names = budget.hold_budget(ev, units, scores, 1.0, _Report(2.0), "test", limit=limit)
        assert names == [f"layer{i}" for i in range(needed)] and best.drop() == 0.5
        assert {u.node_id for u in kept} == set(range(needed, 40))
        assert len(ev.calls) <= 2 * math.ceil(math.log2(needed)) + 2
    assert len(_calls_for(units, scores, 1, limit)) == 1  # one layer holds it: one measurement
    # more than `limit` needed: the result at `limit` comes back for the caller to judge
    ev = _Counting(len(units), limit + 1)
    kept, best, names = budget.hold_budget(ev, units, scores, 1.0, _Report(2.0), "test", limit=limit)
    if limit < len(units):
        assert best.drop() == 2.0 and len(names) == limit


def _calls_for(units, scores, needed, limit):
    ev = _Counting(len(units), needed)
    budget.hold_budget(ev, units, scores, 1.0, _Report(2.0), "test", limit=limit)
    return ev.calls
