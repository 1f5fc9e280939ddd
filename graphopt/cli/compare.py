"""`--compare onnxsim` / `--compare onnxslim`: run the other tool on the same input in a
subprocess and put its node count and op histogram beside graphopt's, in the summary and the
report. onnxsim is a core dependency for this job; onnxslim is used when installed (the bench
extra). A tool that fails is reported, never fatal: graphopt's own result stands.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Optional

from graphopt.errors import UsageError

TOOLS = ("onnxsim", "onnxslim")
TIMEOUT_SECONDS = 1800


def check_available(tools) -> None:
    """A tool that is not installed is a usage error before any work."""
    for tool in tools:
        if importlib.util.find_spec(tool) is None:
            raise UsageError(f"--compare {tool}: {tool} is not installed (pip install {tool}, or the bench extra: "
                             f"pip install 'graphopt[bench]')")


def histogram_of_proto_file(path: str) -> tuple[int, dict[str, int]]:
    """(nodes, {op type: count}) of an ONNX file, subgraphs included, weights not loaded."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    ops: Counter = Counter()

    def walk(graph):
        for node in graph.node:
            ops[node.op_type] += 1
            for attr in node.attribute:
                for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    walk(g)

    walk(model.graph)
    return sum(ops.values()), dict(sorted(ops.items()))


def histogram_of_model(model) -> tuple[int, dict[str, int]]:
    ops = Counter(n.op_type for g in model.graph.walk() for n in g.nodes)
    return sum(ops.values()), dict(sorted(ops.items()))


def _shape_args(tool: str, shapes: dict) -> list[str]:
    if not shapes:
        return []
    specs = [f"{name}:{','.join(map(str, dims))}" for name, dims in shapes.items()]
    return ["--overwrite-input-shape", *specs] if tool == "onnxsim" else ["--input-shapes", *specs]


def run_tool(tool: str, model_path: str, shapes: Optional[dict] = None) -> dict:
    """Run `tool` on `model_path` (shapes pinned as graphopt pinned them); its node count, op
    histogram, wall time and version, or the error it ended with."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version(tool)
    except PackageNotFoundError:
        ver = None
    with tempfile.TemporaryDirectory(prefix=f"graphopt-{tool}-") as tmp:
        out = os.path.join(tmp, "out.onnx")
        cmd = [sys.executable, "-m", tool, os.path.abspath(model_path), out, *_shape_args(tool, shapes or {})]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, cwd=tmp)
        except subprocess.TimeoutExpired:
            return {"version": ver, "error": f"timed out after {TIMEOUT_SECONDS}s"}
        seconds = round(time.perf_counter() - start, 3)
        if proc.returncode != 0 or not os.path.exists(out):
            lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
            why = lines[-1].strip()[:300] if lines else f"exit code {proc.returncode}"
            return {"version": ver, "seconds": seconds, "error": why}
        nodes, ops = histogram_of_proto_file(out)
    return {"version": ver, "seconds": seconds, "nodes": nodes, "ops": ops}


def compare(tools, model_path: str, result, shapes: dict) -> dict:
    """{"graphopt": {...}, tool: {...}} for the report's "compare" key."""
    resolved = dict(shapes or {})
    if None in resolved:  # a bare --input-shape: the model's only input
        only = [v.name for v in result.model.graph.inputs if v.const is None]
        resolved[only[0]] = resolved.pop(None)
    nodes, ops = histogram_of_model(result.model)
    out = {"graphopt": {"seconds": round(result.seconds, 3), "nodes": nodes, "ops": ops}}
    for tool in tools:
        out[tool] = run_tool(tool, model_path, resolved)
    return out


def summary(comparison: dict) -> list[str]:
    """One line per tool for the command-line summary."""
    mine = comparison["graphopt"]
    lines = []
    for tool, r in comparison.items():
        if tool == "graphopt":
            continue
        if "error" in r:
            lines.append(f"{tool} failed: {r['error']}")
            continue
        differ = [f"{op} {mine['ops'].get(op, 0)} vs {r['ops'].get(op, 0)}"
                  for op in sorted(set(mine["ops"]) | set(r["ops"])) if mine["ops"].get(op, 0) != r["ops"].get(op, 0)]
        lines.append(f"{tool} {r.get('version') or ''}: {r['nodes']} nodes in {r['seconds']:.2f}s (graphopt: "
                     f"{mine['nodes']}); " + ("same op histogram" if not differ else
                                              "ops graphopt vs " + tool + ": " + ", ".join(differ)))
    return lines
