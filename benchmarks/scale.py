"""Scale (issue 7): graphopt, onnxsim and onnxslim on generated decoder-only transformers of
about 0.1, 0.5 and 2.5 GB (golden_models/decoder.py, external data), and graphopt's time per
node as the same block is repeated 1x, 4x and 16x.

    pip install -e '.[bench]' && python benchmarks/scale.py [--sizes 0.1GB 0.5GB 2.4GB] [--json out.json]

Wall time and peak RSS come from /usr/bin/time -v, one run per tool and model (the big models
take minutes per tool). graphopt runs `-p fuse,fold,promote` with validation on (onnxruntime
runs the input and the output, one session at a time) and with --no-validate; onnxsim and
onnxslim run with their defaults, asked to write external data where they can. Models are
built into golden_models/built/ (git-ignored) once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "golden_models"))
sys.path.insert(0, HERE)

from _golden import write_json  # noqa: E402
from compare_tools import measure  # noqa: E402


def build(name: str, layers: int, width: int, vocab: int) -> tuple[str, int]:
    import decoder

    out = os.path.join(ROOT, "golden_models", "built", f"decoder_{name}.onnx")
    params_file = out + ".params"
    if not (os.path.exists(out) and os.path.exists(params_file)):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        params = decoder.build(out, layers, width, vocab)
        with open(params_file, "w") as f:
            f.write(str(params))
    with open(params_file) as f:
        return out, int(f.read())


def tool_commands(src: str, dst: str) -> dict[str, list[str]]:
    def exe(name: str) -> str:  # a missing tool shows up as a failed row, not a crash
        return shutil.which(name) or name

    base = [exe("graphopt"), src, "-p", "fuse,fold,promote", "-o", dst, "--force", "-q"]
    return {"graphopt": base, "graphopt --no-validate": base + ["--no-validate"],
            "onnxsim": [exe("onnxsim"), src, dst, "--save-as-external-data"],
            "onnxslim": [exe("onnxslim"), src, dst, "--save-as-external-data"]}


def scaling(width: int = 256, vocab: int = 1024) -> list[dict]:
    """graphopt's pass time per node with the decoder block repeated 1x, 4x and 16x."""
    import decoder

    import graphopt

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for layers in (2, 8, 32):
            path = os.path.join(tmp, f"d{layers}.onnx")
            decoder.build(path, layers, width, vocab)
            best = None
            for _ in range(3):
                start = time.perf_counter()
                result = graphopt.optimize(path, "fuse,fold,promote", validate=False)
                passes = sum(r.seconds for r in result.records)
                total = time.perf_counter() - start
                best = min(best or (passes, total), (passes, total))
            rows.append({"layers": layers, "nodes": result.nodes_before, "pass_seconds": best[0],
                         "total_seconds": best[1], "us_per_node": 1e6 * best[0] / result.nodes_before})
    return rows


def main() -> int:
    import decoder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="*", default=sorted(decoder.PRESETS))
    ap.add_argument("--tools", nargs="*", default=["graphopt", "graphopt --no-validate", "onnxsim", "onnxslim"])
    ap.add_argument("--json")
    args = ap.parse_args()
    results: dict = {"models": {}, "scaling": []}
    print("| model | params | weights GB | tool | wall s | peak RSS MB | RSS / weights | note |")
    print("|---|---:|---:|---|---:|---:|---:|---|")
    for size in args.sizes:
        path, params = build(size, *decoder.PRESETS[size])
        weights_mb = os.path.getsize(path + ".data") / 2**20
        rows = {}
        for tool in args.tools:
            with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
                dst = os.path.join(tmp, "out.onnx")
                wall, rss, err = measure(tool_commands(path, dst)[tool], tmp)
            rows[tool] = {"wall": wall, "rss_mb": rss, "error": err}
            note = f"failed: {err[:80]}" if err else ""
            print(f"| decoder {size} | {params:,} | {weights_mb / 1024:.2f} | {tool} | {wall:.1f} | {rss:.0f} | "
                  f"{rss / weights_mb:.2f} | {note} |", flush=True)
        results["models"][size] = {"params": params, "weights_mb": weights_mb, "tools": rows}
    print("\n| layers | nodes | pass time s | µs per node | total s |")
    print("|---:|---:|---:|---:|---:|")
    for row in scaling():
        results["scaling"].append(row)
        print(f"| {row['layers']} | {row['nodes']} | {row['pass_seconds']:.3f} | {row['us_per_node']:.0f} | "
              f"{row['total_seconds']:.2f} |", flush=True)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
