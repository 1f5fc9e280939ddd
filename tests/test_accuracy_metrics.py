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
