"""INT8 accuracy, calibration time and CPU latency: graphopt `int8` against onnxruntime's
`quantize_static` configured for TensorRT, on the trained golden models (golden_models/train.py).

    python benchmarks/int8.py [--only digits_cnn ...] [--methods minmax entropy ...]
                              [--ort-methods MinMax Entropy ...] [--passes int8] [--json out.json]

For every model in golden_models/trained/ (MODEL.onnx, MODEL.calib.npz, MODEL.test.npz with a
`labels` key) and every calibration method it quantizes the FP32 model twice, on the same
calibration samples (all of MODEL.calib.npz, in the same order, in equal batches: the largest
divisor of the sample count up to --calib-batch, as onnxruntime's histogram calibrators stack the
batches into one array and fail on a shorter last batch):

- graphopt: `graphopt.optimize(MODEL, "int8", calibration=CalibrationSettings(method=...,
  holdout=0.0), validate=False)`; holdout 0 so every calibration sample calibrates, as with
  onnxruntime. "quantize s" is the wall time of the whole optimize call (load, passes,
  calibration, writing the model); "calib s" is the calibration the pass reports
  (pass_reports["quantize-int8"]["calibration"]["seconds"]).
- onnxruntime: `quantize_static(..., quant_format=QDQ, per_channel=True, activation_type=QInt8,
  weight_type=QInt8, calibrate_method=..., extra_options={ActivationSymmetric, WeightSymmetric:
  True, QuantizeBias: False})`, the TensorRT setup (symmetric per-tensor activations, symmetric
  per-channel weights, no bias quantization). "quantize s" is the wall time of the quantize_static
  call (calibration + quantization + writing); "calib s" is the time spent in its calibrator
  (creating the augmented model and its session, running the data, computing ranges), measured
  by wrapping onnxruntime.quantization.quantize.create_calibrator. `quant_pre_process` (default
  settings: symbolic shape inference, onnxruntime's basic graph optimizations, ONNX shape
  inference) runs before quantize_static, as onnxruntime recommends: it folds BatchNormalization
  into the convs, as graphopt's int8 alias does before placing Q/DQ (digits_cnn has six BNs).
  Its time is shown as "+ X pre" next to quantize s; --no-ort-preprocess skips it. onnxruntime
  has no MSE calibration, and its Entropy calibrator, with the defaults quantize_static cannot
  change (128 histogram bins, 128 quantized bins), tries only the full range: it equals MinMax.
  Percentile: each tool's default (graphopt 99.99, onnxruntime 99.999) unless --percentile sets
  both. Distribution (its FP8 calibrator) is tried too unless --ort-methods
  leaves it out, and a failure is reported as such. onnxruntime writes augmented models and
  "-inferred" copies next to its input: the FP32 model is copied into a temporary folder and
  quantize_static runs with that folder as the current one.

Columns, on MODEL.test.npz: accuracy (argmax over the last axis against `labels`; per position
for sequence outputs), top-1 agreement with the FP32 model's argmax, cosine to the FP32 logits
(per sample, flattened, then the mean), the two times above (medians over --repeats runs, the
runs of all tools and methods interleaved), QuantizeLinear nodes, file size, and onnxruntime CPU
latency: GraphOptimizationLevel.ORT_ENABLE_ALL, intra_op_num_threads=1, inter_op_num_threads=1,
a batch of --batch test samples; after --warmup runs of each model, --rounds rounds in which every
model runs once (round-robin, so machine noise hits all alike); median ms and the ratio to FP32.
Quantized models only exist in a temporary folder; nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np
import onnx
from _golden import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINED = os.path.join(ROOT, "golden_models", "trained")
GRAPHOPT_METHODS = ("minmax", "percentile", "entropy", "mse")
ORT_METHODS = ("MinMax", "Entropy", "Percentile", "Distribution")
LABELS = "labels"


# ------------------------------------------------------------------------------ data and metrics
def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def logits_of(path: str, inputs: dict[str, np.ndarray], batch: int = 256) -> np.ndarray:
    sess = session(path)
    names = [i.name for i in sess.get_inputs()]
    n = len(next(iter(inputs.values())))
    out = [sess.run(None, {k: inputs[k][i:i + batch] for k in names})[0] for i in range(0, n, batch)]
    return np.concatenate(out).astype(np.float64)


def metrics(logits: np.ndarray, labels: np.ndarray, ref: np.ndarray) -> dict:
    pred, ref_pred = logits.argmax(-1), ref.argmax(-1)
    valid = labels >= 0  # an ignore index (e.g. -100) does not count
    a, b = logits.reshape(len(logits), -1), ref.reshape(len(ref), -1)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return {"accuracy": float((pred == labels)[valid].mean() * 100), "agreement": float((pred == ref_pred).mean() * 100),
            "cosine": float(cos.mean()), "cosine_min": float(cos.min())}


def file_size(path: str) -> int:
    m = onnx.load(path, load_external_data=False)
    files = {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}
    return os.path.getsize(path) + sum(os.path.getsize(os.path.join(os.path.dirname(path), f)) for f in files)


def q_nodes(path: str) -> int:
    return sum(n.op_type == "QuantizeLinear" for n in onnx.load(path, load_external_data=False).graph.node)


# ------------------------------------------------------------------------------ the two quantizers
def run_graphopt(src: str, dst: str, calib: str, method: str, passes: str, batch: int, samples: int,
                 percentile: float | None) -> dict:
    import graphopt
    from graphopt.quant.calibration import CalibrationSettings

    settings = CalibrationSettings(data=calib, method=method, holdout=0.0, progress=False, batch_size=batch,
                                   samples=samples)
    if percentile is not None:
        settings.percentile = percentile
    start = time.perf_counter()
    result = graphopt.optimize(src, passes, output=dst, calibration=settings, validate=False, force=True)
    wall = time.perf_counter() - start
    report = (result.pass_reports.get("quantize-int8") or {}).get("calibration") or {}
    return {"wall": wall, "calib": report.get("seconds"), "samples": report.get("samples")}


class Reader:
    """onnxruntime CalibrationDataReader over the calibration samples, in batches."""

    def __init__(self, data: dict[str, np.ndarray], batch: int):
        n = len(next(iter(data.values())))
        self.batches = [{k: v[i:i + batch] for k, v in data.items()} for i in range(0, n, batch)]
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.batches):
            return None
        self.pos += 1
        return self.batches[self.pos - 1]

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

    def __len__(self):
        return len(self.batches)

    def rewind(self):
        self.pos = 0


@contextlib.contextmanager
def timed_calibrator(timer: dict):
    """Time onnxruntime's calibrator (creation, collect_data, compute_data) inside quantize_static."""
    import onnxruntime.quantization  # noqa: F401 (loads the module below)

    q = sys.modules["onnxruntime.quantization.quantize"]  # the package's `quantize` is a function of it
    original = q.create_calibrator

    def wrap(fn):
        def timed(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timer["calib"] = timer.get("calib", 0.0) + time.perf_counter() - start
        return timed

    def create(*a, **k):
        cal = wrap(original)(*a, **k)
        cal.collect_data = wrap(cal.collect_data)
        cal.compute_data = wrap(cal.compute_data)
        return cal

    q.create_calibrator = create
    try:
        yield
    finally:
        q.create_calibrator = original


def run_ort(src: str, dst: str, data: dict[str, np.ndarray], method: str, batch: int, preprocess: bool,
            percentile: float | None) -> dict:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    work = tempfile.mkdtemp(prefix="ort_", dir=os.path.dirname(dst))
    model = os.path.join(work, "model.onnx")
    shutil.copy(src, model)
    if os.path.exists(src + ".data"):
        shutil.copy(src + ".data", model + ".data")
    cwd, root_level = os.getcwd(), logging.getLogger().level
    os.chdir(work)  # anything onnxruntime writes relative to the current folder stays in the temporary one
    logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" warnings, once per call
    timer: dict = {}
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
    if percentile is not None:
        extra["CalibPercentile"] = percentile
    try:
        pre = None
        if preprocess:
            start = time.perf_counter()
            quant_pre_process(model, os.path.join(work, "pre.onnx"))
            pre = time.perf_counter() - start
            model = os.path.join(work, "pre.onnx")
        # its histogram calibrators print progress: kept off stdout, where the tables go
        with timed_calibrator(timer), open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            start = time.perf_counter()
            quantize_static(model, dst, Reader(data, batch), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, method),
                            extra_options=extra)
            wall = time.perf_counter() - start
    finally:
        os.chdir(cwd)
        logging.getLogger().setLevel(root_level)
        shutil.rmtree(work, ignore_errors=True)
    return {"wall": wall, "calib": timer.get("calib"), "preprocess": pre}


# ------------------------------------------------------------------------------ latency
def latency(paths: dict[str, str], feed: dict[str, np.ndarray], warmup: int, rounds: int) -> dict[str, float]:
    sessions = {k: session(p) for k, p in paths.items()}
    for s in sessions.values():
        for _ in range(warmup):
            s.run(None, feed)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feed)
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


# ------------------------------------------------------------------------------ main
def bench_model(name: str, args, tmp: str) -> dict:
    # a snapshot of the model and its data: every tool reads the same files, even if they are rebuilt meanwhile
    snapshot = os.path.join(tmp, "fp32")
    os.makedirs(snapshot, exist_ok=True)
    for suffix in (".onnx", ".onnx.data", ".calib.npz", ".test.npz"):
        if os.path.exists(os.path.join(args.models, name + suffix)):
            shutil.copy(os.path.join(args.models, name + suffix), os.path.join(snapshot, name + suffix))
    src = os.path.join(snapshot, f"{name}.onnx")
    calib_path, test_path = os.path.join(snapshot, f"{name}.calib.npz"), os.path.join(snapshot, f"{name}.test.npz")
    calib, test = load_npz(calib_path), load_npz(test_path)
    labels = test.pop(LABELS)
    inputs = [i.name for i in onnx.load(src, load_external_data=False).graph.input]
    inputs = [i for i in inputs if i in test]
    n_calib = len(next(iter(calib.values())))
    # onnxruntime's histogram calibrators (Entropy, Percentile, Distribution) stack all batches into
    # one array, so every batch must have the same size: the largest divisor of the sample count.
    batch = max(d for d in range(1, max(1, min(args.calib_batch, n_calib)) + 1) if n_calib % d == 0)

    variants: dict[str, dict] = {"FP32": {"tool": "fp32", "method": "", "path": src,
                                          "source": os.path.join(args.models, f"{name}.onnx")}}
    jobs = []
    for method in args.methods:
        key = f"graphopt int8 ({method})"
        dst = os.path.join(tmp, f"{name}.graphopt_{method}.onnx")
        variants[key] = {"tool": "graphopt", "method": method, "path": dst, "runs": []}
        jobs.append((key, lambda dst=dst, method=method: run_graphopt(src, dst, calib_path, method, args.passes,
                                                                       batch, max(n_calib, 1), args.percentile)))
    for method in args.ort_methods:
        key = f"ORT quantize_static ({method})"
        dst = os.path.join(tmp, f"{name}.ort_{method}.onnx")
        variants[key] = {"tool": "onnxruntime", "method": method, "path": dst, "runs": []}
        jobs.append((key, lambda dst=dst, method=method: run_ort(src, dst, calib, method, batch,
                                                                  args.ort_preprocess, args.percentile)))
    for _ in range(args.repeats):  # interleaved: every tool and method once per repetition
        for key, job in jobs:
            v = variants[key]
            if "error" in v:
                continue
            try:
                v["runs"].append(job())
            except Exception as e:  # reported in the table, with the exception's first line
                v["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
                v["traceback"] = traceback.format_exc()[-4000:]

    ref = logits_of(src, test)
    for key, v in variants.items():
        if "error" in v:
            continue
        if v["tool"] != "fp32":
            runs = v.pop("runs")
            v["quantize_s"] = statistics.median(r["wall"] for r in runs)
            calibs = [r["calib"] for r in runs if r["calib"] is not None]
            v["calib_s"] = statistics.median(calibs) if calibs else None
            if v["tool"] == "graphopt":  # the samples the pass calibrated on, as it reports them
                v["calibrated_samples"] = runs[-1].get("samples")
            pres = [r["preprocess"] for r in runs if r.get("preprocess") is not None]
            v["preprocess_s"] = statistics.median(pres) if pres else None
        try:
            v.update(metrics(ref if v["tool"] == "fp32" else logits_of(v["path"], test), labels, ref))
        except Exception as e:  # the quantizer wrote a model onnxruntime cannot run
            v["error"] = f"output does not run: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
            continue
        v["size"] = file_size(v["path"])
        v["q_nodes"] = q_nodes(v["path"])

    n_test = len(labels)
    idx = np.arange(args.batch) % n_test
    feed = {k: test[k][idx] for k in inputs}
    ok = {k: v["path"] for k, v in variants.items() if "error" not in v}
    lat = latency(ok, feed, args.warmup, args.rounds)
    for k, ms in lat.items():
        variants[k]["latency_ms"] = ms
        variants[k]["latency_ratio"] = ms / lat["FP32"]
    for v in variants.values():
        v["path"] = os.path.basename(v["path"])
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    return {"sha256": digest, "calib_samples": n_calib, "calib_batch": batch, "test_samples": n_test, "latency_batch": args.batch,
            "variants": variants}


def fmt(x, spec: str) -> str:
    return "" if x is None else format(x, spec)


def print_table(name: str, r: dict) -> None:
    print(f"\n### {name}\n\nsha256 {r['sha256']}…, {r['calib_samples']} calibration samples in batches of {r['calib_batch']}, "
          f"{r['test_samples']} test samples, "
          f"latency batch {r['latency_batch']} (onnxruntime CPU, ORT_ENABLE_ALL, 1 thread)\n")
    print("| model | test acc % | top-1 agree % | cosine vs FP32 | quantize s | calib s | latency ms | × FP32 "
          "| Q nodes | size KB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, v in r["variants"].items():
        if "error" in v:
            print(f"| {key} | failed: {v['error'][:160]} | | | | | | | | |")
            continue
        fp32 = v["tool"] == "fp32"
        pre = f" + {v['preprocess_s']:.3f} pre" if v.get("preprocess_s") is not None else ""
        print(f"| {key} | {v['accuracy']:.2f} | {v['agreement']:.2f} | {v['cosine']:.5f} | "
              f"{'' if fp32 else fmt(v['quantize_s'], '.3f')}{pre} | {'' if fp32 else fmt(v['calib_s'], '.3f')} | "
              f"{fmt(v.get('latency_ms'), '.3f')} | {fmt(v.get('latency_ratio'), '.2f')} | {v['q_nodes']} | "
              f"{v['size'] / 1024:.1f} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=TRAINED, help="folder of MODEL.onnx, MODEL.calib.npz, MODEL.test.npz")
    ap.add_argument("--only", nargs="*", help="model names (default: every MODEL.onnx with both .npz files)")
    ap.add_argument("--methods", nargs="*", default=list(GRAPHOPT_METHODS), choices=GRAPHOPT_METHODS,
                    help="graphopt calibration methods")
    ap.add_argument("--ort-methods", nargs="*", default=list(ORT_METHODS), choices=ORT_METHODS,
                    help="onnxruntime calibration methods")
    ap.add_argument("--passes", default="int8", help="graphopt pipeline (default: the int8 alias; a method= in it wins over --methods)")
    ap.add_argument("--ort-preprocess", action=argparse.BooleanOptionalAction, default=True,
                    help="run quant_pre_process before quantize_static (default: on)")
    ap.add_argument("--percentile", type=float, help="percentile method of both tools (default: each tool's own)")
    ap.add_argument("--calib-batch", type=int, default=32,
                    help="calibration batch size of both tools at most (the largest divisor of the sample count)")
    ap.add_argument("--repeats", type=int, default=3, help="quantization runs per tool and method (interleaved; medians)")
    ap.add_argument("--batch", type=int, default=32, help="latency batch size")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=30, help="latency rounds (every model once per round)")
    ap.add_argument("--json", help="also write all numbers here")
    args = ap.parse_args()

    names = sorted(os.path.basename(p)[:-len(".onnx")] for p in glob.glob(os.path.join(args.models, "*.onnx")))
    names = [n for n in names if all(os.path.exists(os.path.join(args.models, f"{n}.{s}.npz")) for s in ("calib", "test"))]
    if args.only:
        missing = [n for n in args.only if n not in names]
        if missing:
            ap.error(f"no model, calibration and test data for {', '.join(missing)} in {args.models}")
        names = args.only
    if not names:
        ap.error(f"no MODEL.onnx with MODEL.calib.npz and MODEL.test.npz in {args.models}")
    import onnxruntime

    import graphopt

    print(f"graphopt {graphopt.__version__}, onnxruntime {onnxruntime.__version__}, pipeline {args.passes!r}, "
          f"{'with' if args.ort_preprocess else 'without'} quant_pre_process, {args.repeats} quantization runs "
          f"(medians), latency: {args.warmup} warm-up runs, {args.rounds} interleaved rounds")
    results = {}
    with tempfile.TemporaryDirectory(prefix="graphopt_int8_bench_") as tmp:
        for name in names:
            results[name] = bench_model(name, args, tmp)
            print_table(name, results[name])
    write_json(args.json, {"settings": {k: v for k, v in vars(args).items() if k != "json"}, "models": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
