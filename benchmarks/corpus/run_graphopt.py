"""Run graphopt over the corpus and record what happens.

    python benchmarks/corpus/run_graphopt.py [--models DIR] [--only NAME,...] [-p fuse,fold] [--timeout S]

For every model built in DIR/manifest.json runs
``graphopt DIR/NAME.onnx -p PASSES -o TMP/NAME.onnx --force --report TMP/NAME.report.json``
(one at a time, under ``nice``) and writes DIR/graphopt_results.json with the exit code, the last
stderr line, the wall time and the node counts before/after, and compares graphopt's output with
the input on the corpus's own sensible inputs (manifest sample and alternative shapes); prints a
Markdown table. When graphopt exits non-zero (typically because onnxruntime cannot run the *input* model on
graphopt's own validation inputs) it is run again with --no-validate and that result is recorded too
(``retry_no_validate``).
The graphopt that runs is the one beside this Python (``bin/graphopt``) or on PATH.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _nodes(path: Path):
    try:
        import onnx

        return len(onnx.load(str(path), load_external_data=False).graph.node)
    except Exception:  # noqa: BLE001
        return None


def _compare(src: Path, dst: Path, rec: dict) -> dict:
    """Run the input and graphopt's output on the corpus's own sensible inputs (sample and
    alternative shapes) and report the largest differences."""
    import numpy as np
    import onnxruntime as ort

    sys.path.insert(0, str(HERE))
    from common import make_inputs

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    res = {}
    try:
        a = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        b = ort.InferenceSession(str(dst), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    spec = rec.get("inputs") or []
    shapes = [None] + list(rec.get("alt_shapes", []))
    for shp in shapes:
        sp = spec if shp is None else [dict(d, sample_shape=list(shp)) for d in spec]
        key = "sample" if shp is None else "x".join(map(str, shp))
        try:
            feeds = make_inputs(sp)
            ra, rb = a.run(None, feeds), b.run(None, feeds)
            worst = 0.0
            worst_rel = 0.0
            same_shapes = True
            for x, y in zip(ra, rb):
                x, y = np.asarray(x), np.asarray(y)
                if x.shape != y.shape:
                    same_shapes = False
                    continue
                if x.size == 0:
                    continue
                d = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))
                worst = max(worst, d)
                worst_rel = max(worst_rel, d / max(float(np.max(np.abs(x.astype(np.float64)))), 1e-30))
            res[key] = {"max_abs": worst, "max_rel_to_max": worst_rel, "same_shapes": same_shapes}
        except Exception as e:  # noqa: BLE001
            res[key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=Path, default=HERE / "models")
    ap.add_argument("--only", default="")
    ap.add_argument("-p", "--passes", default="fuse,fold")
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "corpus_graphopt")
    ap.add_argument("--results", type=Path, default=None, help="default: MODELS/graphopt_results.json")
    ap.add_argument("--no-retry", dest="retry", action="store_false",
                    help="do not re-run with --no-validate when onnxruntime cannot run the input on graphopt's inputs")
    a = ap.parse_args(argv)

    exe = Path(sys.executable).parent / "graphopt"
    exe = str(exe) if exe.exists() else shutil.which("graphopt")
    if not exe:
        print("graphopt not found", file=sys.stderr)
        return 2
    man = json.loads((a.models / "manifest.json").read_text())["models"]
    names = [n for n, r in man.items() if r.get("build") == "ok"]
    if a.only:
        want = {w.strip() for w in a.only.split(",")}
        names = [n for n in names if n in want]
    a.work.mkdir(parents=True, exist_ok=True)
    res_path = a.results or (a.models / "graphopt_results.json")
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    results.setdefault("runs", {})
    results["graphopt"] = exe
    results["passes"] = a.passes
    for n in names:
        src = a.models / f"{n}.onnx"
        dst = a.work / f"{n}.onnx"
        rep = a.work / f"{n}.report.json"
        for f in (dst, rep):
            if f.exists():
                f.unlink()
        cmd = ["nice", "-n", "10", exe, str(src), "-p", a.passes, "-o", str(dst), "--force", "--report", str(rep)]
        t0 = time.time()
        print(f"[{time.strftime('%H:%M:%S')}] {n} ...", flush=True)
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
            rc, err = p.returncode, p.stderr
        except subprocess.TimeoutExpired as e:
            rc, err = "timeout", (e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or ""))
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        r = {
            "cmd": " ".join(cmd[3:]),
            "exit_code": rc,
            "last_stderr_line": lines[-1] if lines else "",
            "stderr_tail": lines[-15:],
            "seconds": round(time.time() - t0, 1),
            "nodes_before": man[n].get("nodes"),
            "nodes_after": _nodes(dst) if dst.exists() else None,
        }
        if rep.exists():
            try:
                report = json.loads(rep.read_text())
                r["report_keys"] = sorted(report)[:30]
                for k in ("validation", "validate", "rolled_back", "passes_failed"):
                    if k in report:
                        r[k] = report[k]
            except ValueError:
                pass
        if rc != 0 and a.retry:
            # e.g. graphopt's own validation inputs (ints in [0, 4), symbolic dims = 32, dim_value -1
            # taken literally) are not valid for this model: run again without validation to see
            # whether the passes themselves go through.
            cmd2 = cmd[:-2] + ["--no-validate"]
            t1 = time.time()
            try:
                p2 = subprocess.run(cmd2, capture_output=True, text=True, timeout=a.timeout)
                rc2, err2 = p2.returncode, p2.stderr
            except subprocess.TimeoutExpired:
                rc2, err2 = "timeout", ""
            l2 = [ln for ln in err2.strip().splitlines() if ln.strip()]
            r["retry_no_validate"] = {"cmd": " ".join(cmd2[3:]), "exit_code": rc2, "last_stderr_line": l2[-1] if l2 else "",
                                      "seconds": round(time.time() - t1, 1),
                                      "nodes_after": _nodes(dst) if dst.exists() else None}
        if dst.exists() and man[n].get("inputs"):
            r["compare_on_corpus_inputs"] = _compare(src, dst, man[n])
        results["runs"][n] = r
        res_path.write_text(json.dumps(results, indent=1, default=str))
        print(f"    exit={rc} {r['nodes_before']}->{r['nodes_after']} nodes {r['seconds']}s | {r['last_stderr_line'][:200]}", flush=True)

    # a one-line summary per model in the manifest as well
    man_path = a.models / "manifest.json"
    full = json.loads(man_path.read_text())
    for n, r in results["runs"].items():
        if n in full["models"]:
            rt = r.get("retry_no_validate") or {}
            full["models"][n][f"graphopt[{results['passes']}]"] = {
                "exit_code": r["exit_code"], "last_stderr_line": r["last_stderr_line"],
                "nodes_after": r["nodes_after"], "no_validate_exit_code": rt.get("exit_code"),
                "no_validate_nodes_after": rt.get("nodes_after"),
                "compare_on_corpus_inputs": r.get("compare_on_corpus_inputs"),
            }
    man_path.write_text(json.dumps(full, indent=1, default=str))

    print("\n| model | exit | nodes before -> after | s | max rel err on corpus inputs | last stderr line |\n|---|---|---|---|---|---|")
    for n, r in results["runs"].items():
        line = r["last_stderr_line"][:160].replace("|", "/")
        rt = r.get("retry_no_validate")
        if rt:
            line += f" (with --no-validate: exit {rt['exit_code']}, {r['nodes_before']} -> {rt['nodes_after']} nodes)"
        cmp_ = r.get("compare_on_corpus_inputs") or {}
        errs = [v.get("max_rel_to_max") for v in cmp_.values() if "max_rel_to_max" in v]
        bad = [k for k, v in cmp_.items() if "error" in v or not v.get("same_shapes", True)]
        cs = (f"{max(errs):.1e}" if errs else "-") + (f" FAIL({','.join(bad)})" if bad else "")
        print(f"| {n} | {r['exit_code']} | {r['nodes_before']} -> {r['nodes_after']} | {r['seconds']} | {cs} | {line} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
