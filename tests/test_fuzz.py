"""Differential fuzzing (issue 8): random valid graphs (tests/fuzz_models.py) through every
lossless pass and the main pipelines, under --strict: outputs must stay equal under onnxruntime
and no pass may throw. A bounded, seeded run here; `python benchmarks/fuzz.py --examples 10000`
is the long one. A failing graph is saved (after hypothesis shrinks it, the last one written is
the minimal one) to tests/fuzz_regressions/, whose files replay below as regression tests."""

from __future__ import annotations

import os

import onnx
import pytest
from fuzz_models import fuzz_models
from graphopt.passes import PASSES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphopt import driver as api
from graphopt.runtime.validate import ValidationReport

HERE = os.path.dirname(os.path.abspath(__file__))
REGRESSIONS = os.path.join(HERE, "fuzz_regressions")
PIPELINES = [p.name for p in PASSES if p.lossless] + ["fuse,fold", "fold,fuse", "promote", "fuse,fold,promote"]


def check(model: onnx.ModelProto, pipeline: str) -> None:
    try:
        result = api.optimize(model, pipeline, strict=True)
        assert isinstance(result.validation, ValidationReport) and result.validation.ok, result.validation.summary()
        assert [v.name for v in result.model.graph.outputs] == [o.name for o in model.graph.output]
    except BaseException:
        os.makedirs(REGRESSIONS, exist_ok=True)
        onnx.save(model, os.path.join(REGRESSIONS, "latest_failure.onnx"))
        raise


@settings(max_examples=40, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(fuzz_models(), st.sampled_from(PIPELINES))
def test_lossless_pipelines_keep_random_graphs_equal(model, pipeline):
    onnx.checker.check_model(model, full_check=True)  # the generator's own contract
    check(model, pipeline)


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(REGRESSIONS) if f.endswith(".onnx")) or ["none"])
def test_saved_fuzz_failures_stay_fixed(name):
    if name == "none":
        pytest.skip("no saved fuzz failures")
    model = onnx.load(os.path.join(REGRESSIONS, name))
    for pipeline in PIPELINES:
        check(model, pipeline)
