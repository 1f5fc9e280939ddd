"""graphopt on the real-model corpus (models nobody on the project wrote), beside onnxsim and onnxslim.

    python benchmarks/corpus/build.py             # builds benchmarks/corpus/models/ (see its README)
    python benchmarks/corpus.py [--only NAME,...] [--models DIR] [--json out.json] [--no-speed]
    python benchmarks/corpus.py --speed 3 [--only NAME,...] [--json speed.json]

Per model: the exit status and validation status of `-p none`, `-p fuse,fold`,
`-p fuse,fold,promote` and `--pipeline trt-fp32` (each through the real CLI, with validation on:
outputs compared with the input's); nodes after `-p fuse,fold` beside onnxsim's and onnxslim's
(whose outputs are checked against the input's the same way: a count marked † comes from a model
that computes something else);
BatchNormalization left after a Conv; and, side by side in one run, wall time and peak RSS of
`-p fuse,fold` with and without validation against onnxslim's (each tool a separate process,
measured by /usr/bin/time -v, one after another on the same machine).

`--speed N` measures only speed: per model, N rounds of (graphopt `-p fuse,fold`, the same with
`--no-validate`, onnxslim) interleaved so that machine noise hits all three alike; the table quotes
medians and their ratios. `--against PYTHON` adds, to every round, the same two graphopt runs by
another interpreter (say a venv with an earlier commit installed), and a second table of this
build's times over that one's: a change measured side by side, in the same rounds. Children run without PYTHONDONTWRITEBYTECODE (some sandboxes set it, which
makes every start of an editable install recompile graphopt), so both tools start as they would for
a user.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "corpus", "models")
PIPELINES = {"none": ["-p", "none"], "fuse,fold": ["-p", "fuse,fold"], "fuse,fold,promote": ["-p", "fuse,fold,promote"],
             "trt-fp32": ["--pipeline", "trt-fp32"]}


def tool(name: str) -> str:
    """The tool installed beside this interpreter (a pyenv shim would add its own start-up time)."""
    local = os.path.join(os.path.dirname(sys.executable), name)
    return local if os.path.exists(local) else (shutil.which(name) or name)


CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def measure(cmd: list[str], cwd: str) -> dict:
    """Run `cmd` under /usr/bin/time -v: exit code, wall seconds, peak RSS (MB), last stderr line."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=cwd, env=CHILD_ENV)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    seconds = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.group(1).split(":")))) if wall else None
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("graphopt") or "rror" in ln]
    code = proc.returncode
    status = re.search(r"Exit status: (\d+)", proc.stderr)
    if status:
        code = int(status.group(1))
    return {"exit": code, "seconds": seconds, "rss_mb": int(rss.group(1)) / 1024 if rss else None,
            "message": lines[-1][:300] if lines else ""}


def nodes(path: str) -> tuple[int, int]:
    """(nodes including subgraphs, BatchNormalization nodes reading a Conv output)."""
    m = onnx.load(path, load_external_data=False)
    total, bn_after_conv = 0, 0

    def walk(g):
        nonlocal total, bn_after_conv
        producers = {o: n.op_type for n in g.node for o in n.output}
        for n in g.node:
            total += 1
            if n.op_type == "BatchNormalization" and producers.get(n.input[0]) in ("Conv", "ConvTranspose"):
                bn_after_conv += 1
            for a in n.attribute:
                for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                    walk(sub)

    walk(m.graph)
    return total, bn_after_conv


def same_outputs(path: str, outs: list[str]) -> list[str]:
    """Whether each of `outs` (other tools' results) gives `path`'s outputs, checked as graphopt
    validates its own: the same synthesized inputs, the same tolerance. "equal", or what differs."""
    import graphopt
    from graphopt.runtime.validate import Validator

    first = lambda e: str(e).splitlines()[0][:200] if str(e) else type(e).__name__  # noqa: E731
    try:
        validator = Validator(path, graphopt.load(path))
    except Exception as e:  # noqa: BLE001 (the input itself does not run on generated inputs)
        return [f"not checked: {first(e)}"] * len(outs)
    found = []
    for out in outs:
        try:
            report = validator.check(out)
            found.append("equal" if report.ok else report.summary())
        except Exception as e:  # noqa: BLE001 (onnxruntime cannot run the tool's output, say)
            found.append(f"fails: {first(e)}")
    return found


def _nodes_cell(r: dict) -> str:
    differs = r.get("outputs") is not None and not r["outputs"].startswith(("equal", "not checked"))
    return _fmt(r.get("nodes")) + (" †" if differs and r.get("nodes") is not None else "")


def run_model(name: str, path: str, speed: bool) -> dict:
    graphopt = [sys.executable, "-m", "graphopt"]
    row: dict = {"model": name, "nodes_in": nodes(path)[0]}
    with tempfile.TemporaryDirectory() as tmp:
        for label, args in PIPELINES.items():
            out = os.path.join(tmp, f"{label}.onnx")
            report = os.path.join(tmp, f"{label}.json")
            r = measure([*graphopt, path, *args, "-o", out, "--force", "--report", report], tmp)
            if r["exit"] == 0 and os.path.exists(report):
                rep = json.load(open(report))
                r["validation_status"] = rep.get("validation_status")
                r["nodes"], r["bn_after_conv"] = nodes(out)
                r["rolled_back"] = rep.get("rolled_back") or []
            row[label] = r
        for other in ("onnxsim", "onnxslim"):
            out = os.path.join(tmp, f"{other}.onnx")
            r = measure([tool(other), path, out], tmp)
            if r["exit"] == 0 and os.path.exists(out):
                r["nodes"], r["bn_after_conv"] = nodes(out)
            row[other] = r
        made = [o for o in ("onnxsim", "onnxslim") if row[o].get("nodes") is not None]
        for other, found in zip(made, same_outputs(path, [os.path.join(tmp, f"{o}.onnx") for o in made])):
            row[other]["outputs"] = found
        if speed:
            out = os.path.join(tmp, "noval.onnx")
            row["fuse,fold --no-validate"] = measure([*graphopt, path, "-p", "fuse,fold", "-o", out, "--force",
                                                      "--no-validate", "-q"], tmp)
    return row


def speed_row(name: str, path: str, rounds: int, against: str = "") -> dict:
    """Median wall time and peak RSS of graphopt (validated and not) and onnxslim, interleaved;
    with `against`, of that interpreter's graphopt too."""
    builds = {"": [sys.executable, "-m", "graphopt"]}
    if against:
        builds["against "] = [against, "-m", "graphopt"]
    slim = [tool("onnxslim")]
    runs: dict[str, list[dict]] = {f"{b}{kind}": [] for b in builds for kind in ("validated", "no-validate")}
    runs["onnxslim"] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.onnx")
        for _ in range(rounds):
            for b, graphopt in builds.items():
                runs[f"{b}validated"].append(measure([*graphopt, path, "-p", "fuse,fold", "-o", out, "--force", "-q"],
                                                     tmp))
                runs[f"{b}no-validate"].append(measure([*graphopt, path, "-p", "fuse,fold", "-o", out, "--force",
                                                        "-q", "--no-validate"], tmp))
            runs["onnxslim"].append(measure([*slim, path, out], tmp))
    row: dict = {"model": name}
    for label, rs in runs.items():
        ok = [r for r in rs if r["exit"] == 0 and r["seconds"] is not None]
        row[label] = {"exit": max(r["exit"] for r in rs),
                      "seconds": statistics.median(r["seconds"] for r in ok) if ok else None,
                      "rss_mb": statistics.median(r["rss_mb"] for r in ok) if ok else None}
    return row


def speed_table(rows: list[dict]) -> str:
    lines = ["| model | graphopt validated s | --no-validate s | onnxslim s | wall ×slim (val / no-val) | "
             "RSS MB graphopt / onnxslim | RSS ×slim |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        v, nv, sl = r["validated"], r["no-validate"], r["onnxslim"]
        ok = all(x["seconds"] for x in (v, nv, sl))
        lines.append(f"| {r['model']} | {_fmt(v['seconds'], '.2f')} | {_fmt(nv['seconds'], '.2f')} | "
                     f"{_fmt(sl['seconds'], '.2f')} | "
                     f"{_fmt(v['seconds'] / sl['seconds'] if ok else None, '.2f')} / "
                     f"{_fmt(nv['seconds'] / sl['seconds'] if ok else None, '.2f')} | "
                     f"{_fmt(v['rss_mb'], '.0f')} / {_fmt(sl['rss_mb'], '.0f')} | "
                     f"{_fmt(v['rss_mb'] / sl['rss_mb'] if v['rss_mb'] and sl['rss_mb'] else None, '.2f')} |")
    return "\n".join(lines)


def against_table(rows: list[dict]) -> str:
    lines = ["| model | validated s (this / against) | ratio | --no-validate s (this / against) | ratio |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        cells = []
        for kind in ("validated", "no-validate"):
            a, b = r[kind]["seconds"], r[f"against {kind}"]["seconds"]
            cells.append(f"{_fmt(a, '.2f')} / {_fmt(b, '.2f')} | {_fmt(a / b if a and b else None, '.2f')}")
        lines.append(f"| {r['model']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def _fmt(x, spec=""):
    return "-" if x is None else format(x, spec)


def table(rows: list[dict]) -> str:
    lines = ["| model | in | none | fuse,fold | +promote | trt-fp32 | validation | graphopt | onnxsim | onnxslim | "
             "BN after conv | wall ×slim (val / no-val) | RSS ×slim |",
             "|---|---:|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ff, slim, sim = r["fuse,fold"], r["onnxslim"], r["onnxsim"]
        exits = [str(r[p]["exit"]) for p in PIPELINES]
        val = ff.get("validation_status") or ff.get("message", "")
        ratio = nv = rss = None
        if slim.get("exit") == 0 and slim.get("seconds"):
            ratio = ff["seconds"] / slim["seconds"] if ff.get("seconds") else None
            noval = r.get("fuse,fold --no-validate", {})
            nv = noval["seconds"] / slim["seconds"] if noval.get("seconds") else None
            rss = ff["rss_mb"] / slim["rss_mb"] if ff.get("rss_mb") and slim.get("rss_mb") else None
        lines.append(f"| {r['model']} | {r['nodes_in']} | {exits[0]} | {exits[1]} | {exits[2]} | {exits[3]} | "
                     f"{val[:40]} | {_fmt(ff.get('nodes'))} | {_nodes_cell(sim)} | {_nodes_cell(slim)} | "
                     f"{_fmt(ff.get('bn_after_conv'))} | {_fmt(ratio, '.2f')} / {_fmt(nv, '.2f')} | {_fmt(rss, '.2f')} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--only", default="", help="comma list of model names")
    ap.add_argument("--json", help="write every row here")
    ap.add_argument("--no-speed", action="store_true", help="skip the --no-validate timing run")
    ap.add_argument("--speed", type=int, default=0, metavar="N",
                    help="only measure speed: N interleaved rounds per model, medians")
    ap.add_argument("--against", default="", metavar="PYTHON",
                    help="with --speed: also time the graphopt installed for this interpreter, in the same rounds")
    args = ap.parse_args()
    if args.against and not args.speed:
        ap.error("--against needs --speed N")
    manifest = json.load(open(os.path.join(args.models, "manifest.json")))
    models = manifest["models"] if "models" in manifest else manifest
    only = {n for n in args.only.split(",") if n}
    rows = []
    for name, info in sorted(models.items()):
        if only and name not in only:
            continue
        path = os.path.join(args.models, info.get("file", f"{name}.onnx"))
        if info.get("build", "ok") != "ok" or not os.path.exists(path):
            continue
        if args.speed:
            row = speed_row(name, path, args.speed, args.against)
            rows.append(row)
            print(f"{name}: " + ", ".join(f"{k} {_fmt(row[k]['seconds'], '.2f')} s" for k in
                                          ("validated", "no-validate", "onnxslim")), file=sys.stderr, flush=True)
            continue
        row = run_model(name, path, not args.no_speed)
        rows.append(row)
        print(f"{name}: " + ", ".join(f"{p} exit {row[p]['exit']}" for p in PIPELINES) +
              f"; nodes {row['fuse,fold'].get('nodes')} (onnxsim {_nodes_cell(row['onnxsim'])}, "
              f"onnxslim {_nodes_cell(row['onnxslim'])})", file=sys.stderr, flush=True)
    print(speed_table(rows) if args.speed else table(rows))
    if args.against:
        print("\n" + against_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
