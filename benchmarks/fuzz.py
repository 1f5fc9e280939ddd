"""The long differential-fuzzing run (issue 8): N random graphs (tests/fuzz_models.py), each
through one lossless pass or pipeline chosen at random, under --strict, validated against
onnxruntime. Failures are shrunk by hypothesis and the minimal graph is saved to
tests/fuzz_regressions/latest_failure.onnx.

    python benchmarks/fuzz.py --examples 10000 [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))


def main() -> int:
    import onnx
    from fuzz_models import fuzz_models
    from hypothesis import HealthCheck, given, seed, settings
    from hypothesis import strategies as st
    from test_fuzz import PIPELINES, check

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    counts = {"graphs": 0, "nodes": 0}
    by_pipeline: dict[str, int] = {}

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(fuzz_models(), st.sampled_from(PIPELINES))
    def run(model, pipeline):
        onnx.checker.check_model(model, full_check=True)
        check(model, pipeline)
        counts["graphs"] += 1
        counts["nodes"] += len(model.graph.node)
        by_pipeline[pipeline] = by_pipeline.get(pipeline, 0) + 1

    start = time.perf_counter()
    failed = None
    try:
        run()
    except Exception as e:  # hypothesis re-raises the shrunk failure
        failed = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    seconds = time.perf_counter() - start
    print(f"{counts['graphs']} graphs passed ({counts['nodes']} nodes, {len(by_pipeline)} pipelines), "
          f"{'FAILED: ' + failed if failed else '0 failures'}, {seconds:.0f} s, seed {args.seed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
