"""method=auto: each activation's range is the candidate with the least error in its layer's output."""

from __future__ import annotations

import numpy as np
from int8_models import NO_FLOOR, small_cnn

import graphopt
from graphopt.quant.calibration import AUTO_CANDIDATES, CalibrationSettings


def feeds(n=32, seed=3):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
        x[0, 0, 0, 0] = 60.0  # one outlier per sample: minmax wastes the INT8 levels on it
        out.append({"x": x})
    return out


def test_auto_is_the_default_and_reports_each_tensors_choice():
    result = graphopt.optimize(small_cnn(), "int8", calibration=CalibrationSettings(data=feeds(), progress=False),
                               validate=False, thresholds=NO_FLOOR)
    q = result.pass_reports["quantize-int8"]
    assert q["calibration"]["method"] == "auto"
    names = {i["tensor"] for L in q["layers"] for i in L["inputs"]}
    assert names <= set(q["ranges"])
    for t, r in q["ranges"].items():
        assert set(r["errors"]) == {m if p is None else f"{m}{p:g}" for m, p in AUTO_CANDIDATES}
        assert r["error"] == min(r["errors"].values())
    # the input's outlier: the first conv's output error picks a clipped range over minmax
    r = q["ranges"]["x"]
    assert r["scored_on"] == "layer output" and r["method"] != "minmax" and r["error"] < r["errors"]["minmax"]


def test_fixed_methods_stay_selectable():
    result = graphopt.optimize(small_cnn(), "int8{method=minmax}",
                               calibration=CalibrationSettings(data=feeds(), progress=False), validate=False,
                               thresholds=NO_FLOOR)
    q = result.pass_reports["quantize-int8"]
    assert q["calibration"]["method"] == "minmax" and "ranges" not in q
