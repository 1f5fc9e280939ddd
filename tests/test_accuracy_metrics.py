"""Accuracy of a lossy model against its float reference (runtime/metrics.py) and the budget
that leaves layers unchanged to hold it (quant/budget.py)."""

from __future__ import annotations

import numpy as np
import pytest
from int8_models import REVIEW_RNG, argmax_model

import graphopt
from graphopt.quant.calibration import CalibrationSettings
from graphopt.runtime.metrics import compare


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

def test_budget_sees_an_argmax_output():
    feeds = [{"x": REVIEW_RNG.standard_normal((1, 16)).astype(np.float32)} for _ in range(40)]
    result = graphopt.optimize(argmax_model(), "int8{sensitivity=true}",
                               calibration=CalibrationSettings(data=feeds, holdout=0.5), validate=True)
    acc = result.pass_reports["quantize-int8"]["accuracy"]
    assert acc["top1_agreement"] is not None and acc["drop"] == pytest.approx(100 - acc["top1_agreement"])
    assert result.validation.accuracy.top1_agreement is not None


def _assert_reports_match(got, want):
    assert got.samples == want.samples and [o.name for o in got.outputs] == [o.name for o in want.outputs]
    for a, b in zip(got.outputs, want.outputs):
        for field in ("cosine", "min_cosine", "norm_cosine"):
            x, y = getattr(a, field), getattr(b, field)
            assert x == y if x is None or y is None else x == pytest.approx(y, rel=1e-12, abs=1e-15), (a.name, field)
        for field in ("snr_db", "norm_snr_db"):
            x, y = getattr(a, field), getattr(b, field)
            assert x == y if x is None or not np.isfinite(y) else x == pytest.approx(y, rel=1e-9), (a.name, field)
        assert (a.top1_agreement, a.channel_axis) == (b.top1_agreement, b.channel_axis)
    assert (got.accuracy, got.accuracy_ref, got.drop()) == (want.accuracy, want.accuracy_ref, want.drop())


def test_prepared_reference_compares_as_compare_does(monkeypatch):
    # the accuracy budget compares many candidates with one reference through Prepared: the same
    # numbers as the general path, for every kind of output (class scores along positions, logits,
    # feature maps, a batch that is one sample, integers), chunked or not, and a candidate with a
    # NaN (which takes the general path)
    from graphopt.runtime import metrics
    from graphopt.runtime.metrics import Prepared

    rng = np.random.default_rng(7)
    counts = [5, 5, 3]

    def batch(n, noise=0.0, base=None):
        out = {"scores": rng.standard_normal((n, 6, 11)).astype(np.float32),
               "logits": rng.standard_normal((n, 10)).astype(np.float32) * 50,
               "features": rng.standard_normal((n, 4, 3, 3)).astype(np.float32),
               "pooled": rng.standard_normal((2, 7)).astype(np.float32),  # not per sample
               "cls": rng.integers(0, 4, n)}
        if base is not None:
            out = {k: (v + noise * rng.standard_normal(v.shape).astype(v.dtype) if v.dtype.kind == "f" else
                       np.where(rng.random(v.shape) < 0.3, 0, v)) for k, v in base.items()}
            out["scores"][0] = base["scores"][0]  # an identical sample
        return out

    ref = [batch(n) for n in counts]
    labels = [rng.integers(0, 4, n) for n in counts]
    prepared = Prepared(ref, counts)
    for name in ref[0]:
        prepared.output(name)  # prepared now, z-scores kept
    monkeypatch.setattr(metrics, "Z_CACHE_BYTES", 0)
    uncached = Prepared(ref, counts)  # z-scores recomputed for every candidate
    for noise in (0.0, 0.01, 0.5):
        new = [batch(n, noise, r) for n, r in zip(counts, ref)]
        for chunk in (1 << 20, 7):
            monkeypatch.setattr(metrics, "CHUNK_VALUES", chunk)
            want = compare(ref, new, counts, labels)
            _assert_reports_match(compare(ref, new, counts, labels, prepared), want)
            _assert_reports_match(compare(ref, new, counts, labels, uncached), want)
    assert prepared.output("scores").zr is not None and uncached.output("scores").zr is None
    new[1]["features"][0, 0, 0, 0] = np.nan
    assert not prepared.output("features").fits([n["features"] for n in new])
    _assert_reports_match(compare(ref, new, counts, labels, prepared), compare(ref, new, counts, labels))
