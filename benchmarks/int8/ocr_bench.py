"""INT8 on a real recognizer: graphopt's calibration methods against onnxruntime's quantize_static
(TensorRT-style settings), side by side on the PP-OCR text recognizer of ocr_data.py.

    python benchmarks/int8/ocr_data.py            # once: data/rec.onnx, calib.npz, eval.npz, dict.txt
    python benchmarks/int8/ocr_bench.py [--only NAME ...] [--json out.json] [--keep]
    python benchmarks/int8/ocr_bench.py --only default max_drop "ORT MinMax" --rounds 3 --no-eval   # times only

Every configuration runs as its own child process (under `nice`, unless this script already runs niced), on the same data/calib.npz:

- graphopt default      `graphopt data/rec.onnx -p fuse,fold,int8 --calib data/calib.npz -o Q.onnx`
                        (what a user types: method=auto, equalize=auto)
- graphopt minmax|percentile|entropy|mse   the same plus `--calib-method M`
- graphopt max_drop=1   `-p 'fuse,fold,int8{max_drop=1}'` (the defaults otherwise)
- ORT MinMax|Percentile|Entropy   onnxruntime.quantization.quantize_static after quant_pre_process:
                        QDQ, per_channel=True, QInt8 activations and weights, extra_options
                        ActivationSymmetric, WeightSymmetric True, QuantizeBias False; a
                        CalibrationDataReader over calib.npz in batches of --ort-batch lines
                        (all 300 lines calibrate; graphopt holds 20% of them back by default)

graphopt is only used through its command line (the `graphopt` beside this Python, else on PATH, or --graphopt).
Columns: lines % / chars % agreeing with FP32 on data/eval.npz (ocr_eval.py), share of the
Conv/MatMul/Gemm weights stored as INT8 and INT8 layers / weight layers, calibration seconds
(graphopt: the calibration time its --report records; ORT: time inside its calibrator), the whole
child's wall seconds, its peak RSS (os.wait4 rusage of the child), and graphopt's own printed
held-out cosine vs FP32; for graphopt also the accuracy budget's seconds from its --report
(sensitivity: every layer measured alone; search: the fewest layers to leave in FP32). With
--rounds N every configuration runs N times, interleaved (a, b, c, a, b, c, ...), and the table
gives medians; --no-eval skips decoding the quantized models (timing only). Quantized models go
to data/bench/ (kept with --keep, else deleted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ocr_eval  # noqa: E402

DATA = os.path.join(HERE, "data")
GRAPHOPT_METHODS = ("minmax", "percentile", "entropy", "mse")
ORT_METHODS = ("MinMax", "Percentile", "Entropy")


def configs(calib: str) -> list[tuple[str, list[str]]]:
    base = ["-p", "fuse,fold,int8", "--calib", calib]
    out = [("graphopt default", base)]
    out += [(f"graphopt {m}", base + ["--calib-method", m]) for m in GRAPHOPT_METHODS]
    out += [("graphopt max_drop=1", ["-p", "fuse,fold,int8{max_drop=1}", "--calib", calib])]
    return out


def nice() -> list[str]:
    """`nice` for the children, unless this process already runs niced (then they inherit it)."""
    return ["nice"] if os.nice(0) == 0 else []


def run_child(cmd: list[str], log: str, env=None) -> dict:
    """Run cmd with stdout+stderr to `log`; wall seconds, peak RSS (MB) and exit code of that child."""
    start = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": time.perf_counter() - start, "peak_rss_mb": usage.ru_maxrss / 1024.0, "rc": p.returncode}


def run_graphopt(graphopt: str, name: str, args: list[str], src: str, out_dir: str) -> dict:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    dst = os.path.join(out_dir, slug + ".onnx")
    report = os.path.join(out_dir, slug + ".report.json")
    log = os.path.join(out_dir, slug + ".log")
    cmd = [*nice(), graphopt, src, *args, "-o", dst, "--force", "--report", report]
    res = run_child(cmd, log)
    res.update(model=dst, log=log, cmd=" ".join(cmd[len(nice()):]))
    text = open(log, errors="replace").read()
    m = re.search(r"held-out vs FP32: cosine ([0-9.]+)", text)
    res["heldout_cosine"] = float(m.group(1)) if m else None
    m = re.search(r"int8: (\d+) layers INT8, (\d+) fallen back to FP32", text)
    res["int8_line"] = m.group(0) if m else None
    m = re.search(r"validation: (.*)", text)
    res["validation"] = m.group(1).strip() if m else None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        q = json.load(open(report))["pass_reports"]["quantize-int8"]
        res["calib_s"] = (q.get("calibration") or {}).get("seconds")
        res["budget"] = q.get("budget") or {}
        res["sensitivity_s"] = res["budget"].get("sensitivity_seconds")
        res["search_s"] = res["budget"].get("search_seconds")
    if res["rc"] != 0:
        res["error"] = text.strip().splitlines()[-1] if text.strip() else f"exit {res['rc']}"
    return res


def run_ort(method: str, src: str, calib: str, out_dir: str, batch: int, preprocess: bool, limit: int = 0) -> dict:
    src, calib, out_dir = os.path.abspath(src), os.path.abspath(calib), os.path.abspath(out_dir)  # the worker chdirs
    dst = os.path.join(out_dir, f"ort_{method.lower()}.onnx")
    timing = os.path.join(out_dir, f"ort_{method.lower()}.timing.json")
    log = os.path.join(out_dir, f"ort_{method.lower()}.log")
    cmd = [*nice(), sys.executable, os.path.abspath(__file__), "--ort-worker", method, "--src", src, "--calib", calib,
           "--dst", dst, "--timing", timing, "--ort-batch", str(batch), "--ort-limit", str(limit)] + ([] if preprocess else ["--no-ort-preprocess"])
    res = run_child(cmd, log)
    res.update(model=dst, log=log, heldout_cosine=None)
    with contextlib.suppress(OSError, ValueError):
        res.update(json.load(open(timing)))
    if res["rc"] != 0:
        text = open(log, errors="replace").read().strip()
        res["error"] = text.splitlines()[-1] if text else f"exit {res['rc']}"
    return res


# ------------------------------------------------------------------------------ onnxruntime worker
class Reader:
    """onnxruntime CalibrationDataReader over calib.npz, in batches."""

    def __init__(self, data: dict, batch: int):
        n = len(next(iter(data.values())))
        self.batches = [{k: v[i:i + batch] for k, v in data.items()} for i in range(0, n, batch)]
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.batches):
            return None
        self.pos += 1
        return self.batches[self.pos - 1]

    def rewind(self):
        self.pos = 0


def ort_worker(args) -> int:
    import logging
    import tempfile

    import numpy as np
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import onnxruntime.quantization  # noqa: F401
    q = sys.modules["onnxruntime.quantization.quantize"]
    timer = {"calib_s": 0.0}
    original = q.create_calibrator

    def timed(fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timer["calib_s"] += time.perf_counter() - t
        return wrapper

    def create(*a, **k):
        cal = timed(original)(*a, **k)
        cal.collect_data = timed(cal.collect_data)
        cal.compute_data = timed(cal.compute_data)
        return cal

    q.create_calibrator = create
    logging.getLogger().setLevel(logging.ERROR)
    with np.load(args.calib, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files if k != "labels"}
    if args.ort_limit:
        data = {k: v[: args.ort_limit] for k, v in data.items()}
    work = tempfile.mkdtemp(prefix="ort_", dir=os.path.dirname(os.path.abspath(args.dst)))
    model = os.path.join(work, "model.onnx")
    shutil.copy(args.src, model)
    import onnx

    m = onnx.load(model)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:  # per-channel DequantizeLinear needs opset 13; quantize_static does not raise it itself
        from onnx import version_converter

        onnx.save(version_converter.convert_version(m, 13), model)
        timer["opset"] = f"{opset} -> 13 (onnx.version_converter)"
    del m
    os.chdir(work)  # onnxruntime writes augmented models next to the current folder's files
    try:
        if args.ort_preprocess:
            t = time.perf_counter()
            try:
                quant_pre_process(model, os.path.join(work, "pre.onnx"))
            except Exception as e:  # symbolic shape inference gives up on some dynamic dims (PP-OCRv4)
                print(f"quant_pre_process failed ({e}); again with skip_symbolic_shape=True", file=sys.stderr)
                timer["preprocess_note"] = "skip_symbolic_shape=True"
                quant_pre_process(model, os.path.join(work, "pre.onnx"), skip_symbolic_shape=True)
            timer["preprocess_s"] = time.perf_counter() - t
            model = os.path.join(work, "pre.onnx")
        extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
        t = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            quantize_static(model, args.dst, Reader(data, args.ort_batch), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, args.ort_worker), extra_options=extra)
        timer["quantize_s"] = time.perf_counter() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(args.timing, "w") as f:
        json.dump(timer, f)
    return 0


# ------------------------------------------------------------------------------ table
def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(rows: list[dict], fp32: dict) -> str:
    head = ("config", "lines %", "chars %", "INT8 w %", "INT8 layers", "calib s", "sensitivity s", "wall s",
            "peak RSS MB", "held-out cos")
    lines = [head]
    for r in rows:
        if r.get("error") and "lines_pct" not in r:
            lines.append((r["name"], "failed: " + r["error"][:60], "", "", "", "", "", fmt(r.get("wall_s"), ".1f"),
                          fmt(r.get("peak_rss_mb"), ".0f"), ""))
            continue
        lines.append((r["name"], fmt(r.get("lines_pct"), ".1f"), fmt(r.get("chars_pct"), ".2f"),
                      fmt(r.get("int8_weight_pct"), ".1f"), f"{r.get('layers_int8', '-')}/{r.get('layers_total', '-')}",
                      fmt(r.get("calib_s"), ".1f"), fmt(r.get("sensitivity_s"), ".1f"), fmt(r.get("wall_s"), ".1f"),
                      fmt(r.get("peak_rss_mb"), ".0f"),
                      fmt(r.get("heldout_cosine"), ".5f")))
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(head))]
    out = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |" for row in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if fp32:
        out.append(f"FP32 on {fp32['lines']} eval lines vs ground truth: {fp32['fp32_gt_lines_pct']:.1f}% lines, "
                   f"{fp32['fp32_gt_chars_pct']:.2f}% chars")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DATA, help="folder written by ocr_data.py")
    ap.add_argument("--out", default=None, help="where quantized models go (default DATA/bench)")
    beside = os.path.join(os.path.dirname(sys.executable), "graphopt")  # this venv's, not another on PATH
    ap.add_argument("--graphopt", default=beside if os.path.exists(beside) else shutil.which("graphopt") or "graphopt")
    ap.add_argument("--only", nargs="*", help="run only configs whose name contains one of these")
    ap.add_argument("--skip-ort", action="store_true")
    ap.add_argument("--ort-batch", type=int, default=10)
    ap.add_argument("--ort-limit", type=int, default=0,
                    help="calibrate onnxruntime on the first N lines only (its histogram calibrators keep every "
                         "activation of every line in memory: all 300 lines of PP-OCRv4 need > 18 GB)")
    ap.add_argument("--no-ort-preprocess", dest="ort_preprocess", action="store_false")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads for evaluation")
    ap.add_argument("--json", help="also write all results here")
    ap.add_argument("--keep", action="store_true", help="keep the quantized models")
    ap.add_argument("--rounds", type=int, default=1, help="run every configuration this many times, interleaved; "
                                                          "the table gives medians")
    ap.add_argument("--no-eval", dest="evaluate", action="store_false", help="time only: do not decode the models")
    # internal: one onnxruntime quantization in its own process
    ap.add_argument("--ort-worker", choices=ORT_METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--calib", help=argparse.SUPPRESS)
    ap.add_argument("--dst", help=argparse.SUPPRESS)
    ap.add_argument("--timing", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.ort_worker:
        return ort_worker(args)

    src, calib = os.path.join(args.data, "rec.onnx"), os.path.join(args.data, "calib.npz")
    evaln, dct = os.path.join(args.data, "eval.npz"), os.path.join(args.data, "dict.txt")
    for p in (src, calib, evaln, dct):
        if not os.path.exists(p):
            sys.exit(f"ocr_bench: {p} not found: run benchmarks/int8/ocr_data.py first")
    out_dir = args.out or os.path.join(args.data, "bench")
    os.makedirs(out_dir, exist_ok=True)

    jobs = [("graphopt", n, a) for n, a in configs(calib)]
    if not args.skip_ort:
        jobs += [("ort", f"ORT {m}", m) for m in ORT_METHODS]
    if args.only:
        jobs = [j for j in jobs if any(o.lower() in j[1].lower() for o in args.only)]

    fp32 = ocr_eval.evaluate(src, src, evaln, dct, args.threads) if args.evaluate else {}
    rows = []
    for rnd, (kind, name, a) in [(r, j) for r in range(args.rounds) for j in jobs]:
        print(f"ocr_bench: {name} (round {rnd + 1}/{args.rounds}) ...", file=sys.stderr, flush=True)
        r = (run_graphopt(args.graphopt, name, a, src, out_dir) if kind == "graphopt"
             else run_ort(a, src, calib, out_dir, args.ort_batch, args.ort_preprocess, args.ort_limit))
        r["name"] = name + (f" ({args.ort_limit} lines)" if kind == "ort" and args.ort_limit else "")
        r["round"] = rnd
        if args.evaluate and r["rc"] == 0 and os.path.exists(r["model"]):
            try:
                r.update({k: v for k, v in ocr_eval.evaluate(r["model"], src, evaln, dct, args.threads).items()
                          if k not in ("model", "reference")})
            except Exception as e:  # a model onnxruntime cannot load: a result, not a crash
                r["error"] = f"evaluation failed: {type(e).__name__}: {str(e)[:200]}"
        print(f"ocr_bench: {name}: lines {fmt(r.get('lines_pct'), '.1f')}% chars {fmt(r.get('chars_pct'), '.2f')}% "
              f"calib {fmt(r.get('calib_s'), '.1f')}s sensitivity {fmt(r.get('sensitivity_s'), '.1f')}s "
              f"wall {r['wall_s']:.0f}s rss {r['peak_rss_mb']:.0f}MB{' ERROR ' + r['error'] if r.get('error') else ''}",
              file=sys.stderr, flush=True)
        rows.append(r)
        if args.json:  # partial results survive an interrupted run
            with open(args.json, "w") as f:
                json.dump({"fp32": fp32, "rows": rows}, f, ensure_ascii=False, indent=1)
        if not args.keep and os.path.exists(r["model"]):
            os.unlink(r["model"])
    print(table(medians(rows) if args.rounds > 1 else rows, fp32))
    return 0


def medians(rows: list[dict]) -> list[dict]:
    """One row per configuration: the median of every number over its rounds (the rest from its first)."""
    import statistics

    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(r["name"], []).append(r)
    merged = []
    for name, runs in out.items():
        m = dict(runs[0])
        for k, v in runs[0].items():
            vals = [x.get(k) for x in runs if isinstance(x.get(k), (int, float)) and not isinstance(x.get(k), bool)]
            if isinstance(v, (int, float)) and not isinstance(v, bool) and vals:
                m[k] = statistics.median(vals)
        m["name"] = f"{name} (median of {len(runs)})"
        merged.append(m)
    return merged


if __name__ == "__main__":
    sys.exit(main())
