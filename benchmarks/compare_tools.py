"""graphopt `-p fuse,fold` against onnxsim, onnxslim, Polygraphy and onnxruntime's basic offline
optimization on the golden corpus.

    pip install -e '.[bench]'
    python benchmarks/compare_tools.py [--large] [--only NAME ...] [--latency-reps 15] [--json out.json]

Per model and tool it prints: nodes (subgraphs included), BatchNormalization left, shape-computation
ops left (Shape/Size and every node computing from them), max output difference against the input
model, wall time and peak RSS of the tool's process (`/usr/bin/time -v`), and the onnxruntime
latency of the output (graph optimizations off; all tools' outputs timed in interleaved
repetitions; median). Each tool runs as a separate process, one after another, on the same machine,
`--repeats` times in interleaved order; wall time and RSS are medians.
IR v3 models list their weights as graph inputs; graphopt runs with --initializers-as-constants
there, as the other tools treat them as constants.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from _golden import golden, write_json  # noqa: E402 (the scripts run from benchmarks/)

ORT_BASIC = ("import onnxruntime as o, sys; s = o.SessionOptions(); "
             "s.graph_optimization_level = o.GraphOptimizationLevel.ORT_ENABLE_BASIC; "
             "s.optimized_model_filepath = sys.argv[2]; o.InferenceSession(sys.argv[1], s, providers=['CPUExecutionProvider'])")


def tools(src: str, dst: str) -> dict[str, list[str]]:
    go = shutil.which("graphopt")
    base = [go, src, "-p", "fuse,fold", "-o", dst, "--force", "-q", "--initializers-as-constants"]
    every = {
        "graphopt": base,
        "graphopt --no-validate": base + ["--no-validate"],
        "onnxsim": [shutil.which("onnxsim"), src, dst],
        "onnxslim": [shutil.which("onnxslim"), src, dst],
        "polygraphy": [shutil.which("polygraphy"), "surgeon", "sanitize", "--fold-constants", src, "-o", dst],
        "ort-basic": [sys.executable, "-c", ORT_BASIC, src, dst],
    }
    return {name: cmd for name, cmd in every.items() if cmd[0]}  # a tool that is not installed is left out




def measure(cmd: list[str], cwd: str) -> tuple[float, float, str]:
    # Each tool runs inside the temporary folder: some write scratch files into the current one.
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=cwd)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    seconds = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.group(1).split(":")))) if wall else float("nan")
    err = "" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-min(3, len(proc.stderr.strip().splitlines()) or 1)]
    return seconds, (int(rss.group(1)) / 1024 if rss else float("nan")), err


def all_nodes(graph: onnx.GraphProto):
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(a.g)
            for g in a.graphs:
                yield from all_nodes(g)


def shape_ops(graph: onnx.GraphProto) -> int:
    """Shape/Size nodes and every node computing (transitively) from their outputs."""
    tainted, count = set(), 0
    for n in graph.node:  # exporters and these tools emit topologically sorted graphs
        if n.op_type in ("Shape", "Size") or any(i in tainted for i in n.input):
            if n.op_type not in ("Reshape", "Expand", "Slice", "Tile", "ConstantOfShape", "Resize") or n.op_type in ("Shape", "Size"):
                tainted.update(n.output)
                count += 1
    return count


def stats(path: str) -> dict:
    m = onnx.load(path, load_external_data=False)
    nodes = list(all_nodes(m.graph))
    return {"nodes": len(nodes), "bn": sum(n.op_type == "BatchNormalization" for n in nodes), "shape_ops": shape_ops(m.graph)}


def session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def feeds_for(path: str) -> dict:
    sess = session(path)
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else (1 if k == 0 else 12) for k, d in enumerate(i.shape)]
        if "int64" in i.type:
            feeds[i.name] = rng.integers(1 if i.name == "trip" else 0, 4, size=shape).astype(np.int64)
        elif "bool" in i.type:
            feeds[i.name] = np.asarray(rng.random(shape) < 0.5)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def max_diff(ref: list, out: list) -> float:
    worst = 0.0
    for a, b in zip(ref, out):
        if a.shape != b.shape:
            return float("inf")
        if a.size:
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", action="store_true")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--latency-reps", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3, help="runs of every tool per model (interleaved; medians)")
    ap.add_argument("--json", help="also write all numbers here")
    args = ap.parse_args()
    g = golden()
    models = [m for m in g.CORPUS if (args.large or not m.large) and (not args.only or m.name in args.only)]
    results = {}
    print("| model | tool | nodes | BN left | shape ops | max diff | wall s | peak RSS MB | ORT latency ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for m in models:
        src = g.build(m)
        size_mb = (os.path.getsize(src) + (os.path.getsize(src + ".data") if os.path.exists(src + ".data") else 0)) / 1e6
        feeds = feeds_for(src)
        ref = session(src).run(None, feeds)
        rows = {"input": {**stats(src), "wall": 0.0, "rss": 0.0, "diff": 0.0, "path": src}}
        with tempfile.TemporaryDirectory() as tmp:
            commands = {}
            for tool, cmd in tools(src, os.path.join(tmp, "x.onnx")).items():
                dst = os.path.join(tmp, tool.replace(" ", "_").replace("-", "_") + ".onnx")
                commands[tool] = (dst, [dst if c == os.path.join(tmp, "x.onnx") else c for c in cmd])
            runs = {tool: [] for tool in commands}
            for _ in range(args.repeats):  # interleaved: every tool once per repetition
                for tool, (dst, cmd) in commands.items():
                    for leftover in (dst, dst + ".data"):
                        if os.path.exists(leftover):
                            os.unlink(leftover)
                    runs[tool].append(measure(cmd, tmp))
            for tool, (dst, cmd) in commands.items():
                errors = [e for _, _, e in runs[tool] if e]
                wall = statistics.median(w for w, _, _ in runs[tool])
                rss = statistics.median(r for _, r, _ in runs[tool])
                if errors or not os.path.exists(dst):
                    rows[tool] = {"error": errors[0] if errors else "no output", "wall": wall, "rss": rss}
                    continue
                try:
                    diff = max_diff(ref, session(dst).run(None, feeds))
                except Exception as e:  # the tool wrote a model onnxruntime cannot run
                    rows[tool] = {"error": f"output does not run: {str(e).splitlines()[0][:120]}", "wall": wall, "rss": rss}
                    continue
                rows[tool] = {**stats(dst), "wall": wall, "rss": rss, "diff": diff, "path": dst}
            # latency: every output (and the input) timed in interleaved repetitions
            sessions = {t: session(r["path"]) for t, r in rows.items() if "path" in r}
            times = {t: [] for t in sessions}
            for _ in range(args.latency_reps):
                for t, s in sessions.items():
                    start = time.perf_counter()
                    s.run(None, feeds)
                    times[t].append(time.perf_counter() - start)
            for t in sessions:
                rows[t]["latency_ms"] = statistics.median(times[t]) * 1000
                rows[t].pop("path", None)
        results[m.name] = {"size_mb": size_mb, "tools": rows}
        for tool, r in rows.items():
            if "error" in r:
                print(f"| {m.name} ({size_mb:.0f} MB) | {tool} | failed: {r['error'][:80]} | | | | {r['wall']:.2f} | {r['rss']:.0f} | |")
                continue
            wall = "" if tool == "input" else f"{r['wall']:.2f}"
            rss = "" if tool == "input" else f"{r['rss']:.0f}"
            print(f"| {m.name} ({size_mb:.0f} MB) | {tool} | {r['nodes']} | {r['bn']} | {r['shape_ops']} | "
                  f"{r['diff']:.2g} | {wall} | {rss} | {r['latency_ms']:.2f} |", flush=True)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
