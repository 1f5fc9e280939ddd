"""A seeded sample of onnx's own backend test cases through `-p fuse,fold`: every case
onnxruntime runs correctly as given must come through with its reference outputs reproduced.
The whole set is a benchmark: `python benchmarks/node_tests.py` (BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import tempfile

import onnx
import pytest
from helpers import ROOT

SAMPLE = 40
# inputs whose valid values depend on other inputs' values: written, and loudly "not validated"
UNVALIDATABLE = {"test_affine_grid_2d_align_corners_expanded", "test_affine_grid_2d_expanded",
                 "test_affine_grid_3d_align_corners_expanded", "test_affine_grid_3d_expanded", "test_col2im",
                 "test_col2im_5d", "test_col2im_dilations", "test_col2im_pads", "test_col2im_strides",
                 "test_melweightmatrix", "test_reflect_pad", "test_tensorscatter_3d"}


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("node_tests", os.path.join(ROOT, "benchmarks", "node_tests.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


bench = _load_benchmark()


def _sample():
    cache = os.path.join(tempfile.gettempdir(), f"onnx-node-tests-{onnx.__version__}")
    cases = bench.find_cases(bench.onnx_data_dir(), cache)
    picked = random.Random(2026).sample(cases, SAMPLE)
    return [pytest.param({"kind": k, "name": n, "folder": f}, id=n) for k, n, f in sorted(picked, key=lambda c: c[1])]


@pytest.mark.parametrize("case", _sample())
def test_node_case_reproduces_its_reference_outputs(case, tmp_path):
    rec = bench.run_case(case, "fuse,fold", str(tmp_path), lambda phase: None)
    assert rec["status"] in ("reproduced", "not-eligible"), (rec.get("message"), rec.get("where"))
    if rec["status"] == "reproduced":
        want = "not validated" if case["name"] in UNVALIDATABLE else "validated"
        assert rec["validation_status"].startswith(want), rec["validation_status"]
