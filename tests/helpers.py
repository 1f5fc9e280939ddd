"""Test helpers: the golden corpus, ONNX-text models, onnxruntime runs with optimizations off."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import onnx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "golden_models")


def _load_golden_module():
    spec = importlib.util.spec_from_file_location("golden_build", os.path.join(GOLDEN, "build.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while it executes
    spec.loader.exec_module(mod)
    return mod


golden = _load_golden_module()


def golden_params():
    """One pytest param per golden model; large ones carry the `large` mark."""
    params = []
    for m in golden.CORPUS:
        marks = [pytest.mark.large] if m.large else []
        params.append(pytest.param(m, id=m.name, marks=marks))
    return params


def model_from_text(text: str) -> onnx.ModelProto:
    m = onnx.parser.parse_model(text)
    onnx.checker.check_model(m, full_check=True)
    return m


def run_ort(model, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def seeded_feeds(model: onnx.ModelProto, seed: int = 0, dim: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else dim for d in tt.shape.dim]
        dt = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if dt == np.bool_:
            feeds[vi.name] = np.asarray(rng.random(shape) < 0.5)
        elif np.issubdtype(dt, np.integer):
            feeds[vi.name] = np.asarray(rng.integers(0, 3, size=shape).astype(dt))
        else:
            feeds[vi.name] = np.asarray(rng.standard_normal(shape).astype(dt))
    return feeds


def optimized(text, pipeline: str, **kw):
    """(ops after, records, result) of a strict, validated run of `pipeline` on an ONNX-text model
    (or a ModelProto); asserts a second run changes nothing."""
    from graphopt import driver
    from graphopt.onnx_io.emit import to_proto

    proto = model_from_text(text) if isinstance(text, str) else text
    result = driver.optimize(proto, pipeline, strict=True, **kw)
    assert result.validation.ok
    again = driver.optimize(to_proto(result.model), pipeline, strict=True, validate=False, **kw)
    assert not any(r.modified for r in again.records), f"second run changed: {[r.name for r in again.records if r.modified]}"
    ops = [n.op_type for n in result.model.graph.toposort() if n.op_type != "Constant"]
    return ops, result.records, result
