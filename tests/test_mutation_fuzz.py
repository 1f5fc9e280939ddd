"""A seeded fast subset of benchmarks/mutate.py (the long run: `python benchmarks/mutate.py
--count 900`): damaged copies of a small model with memory-mapped weights go through the real
command line; each is either optimized with exactly the weights onnx reads, or refused with one
line. Never an internal error, a crash, or different weights."""

from __future__ import annotations

import importlib
import os
import sys

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def _mutate_module():
    # imported by name from sys.path: the fuzzer's worker processes (spawned) import it the same way
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    return importlib.import_module("mutate")


def test_mutations_of_a_small_model_are_optimized_or_refused_cleanly():
    mutate = _mutate_module()
    models = mutate.built_models()
    summary = mutate.fuzz(60, seed=0, jobs=2, timeout=120, models={"built/mlp_1k": models["built/mlp_1k"]})
    bad = [f"#{r['index']} {r['mutation']}: {r['status']}: {r.get('detail', '')}" for r in summary["results"]
           if r["status"] not in ("ok", "clean error")]
    assert not bad, "\n".join(bad)
    counts = summary["counts"]
    assert counts["ok"] > 5 and counts["clean error"] > 5, counts  # the mix is what makes it a test
    kinds = set(summary["by_mutation"])
    assert {"duplicate field", "group field", "invalid utf-8", "truncate"} <= kinds, kinds


def test_the_mutations_are_deterministic_in_the_seed():
    mutate = _mutate_module()
    models = mutate.built_models()
    one = [(i, what, data) for i, _, what, data in mutate.generate(30, 7, models=models)]
    two = [(i, what, data) for i, _, what, data in mutate.generate(30, 7, models=models)]
    assert one == two
    assert len({data for _, _, data in one}) > 20
