"""Issue 15: the equalization passes on the trained golden models, side by side in one run.

    python benchmarks/int8/equalize_trained.py [--json]

For each trained model (golden_models/trained: digits_cnn, histogram_transformer) and each
pipeline below, quantizes with its calibration data (graphopt's default 20% held out) and reports
on the test split: accuracy against the labels, top-1 agreement and mean per-sample output cosine
with FP32, and what int8's equalize=auto tried and kept (held-out channel-normalized cosine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAINED = os.path.join(ROOT, "golden_models", "trained")
PIPELINES = ["int8{equalize=none}", "int8", "fuse,fold,equalize-cross-layer,int8{equalize=none}",
             "fuse,fold,smooth-quant,int8{equalize=none}", "fuse,fold,correct-bias,int8{equalize=none}"]
MODELS = {"digits_cnn": "input", "histogram_transformer": "tokens"}


def run(path, feeds):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    src = path if isinstance(path, str) else path.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import graphopt
    from graphopt.quant.calibration import CalibrationSettings

    rows = []
    for name, inp in MODELS.items():
        model = os.path.join(TRAINED, f"{name}.onnx")
        test = np.load(os.path.join(TRAINED, f"{name}.test.npz"))
        ref = run(model, {inp: test[inp]})
        for pipe in PIPELINES:
            t0 = time.perf_counter()
            r = graphopt.optimize(model, pipe, calibration=CalibrationSettings(
                data=os.path.join(TRAINED, f"{name}.calib.npz"), progress=False), validate=False)
            seconds = time.perf_counter() - t0
            got = run(r.to_proto(), {inp: test[inp]})
            a, b = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
            cos = float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
            eq = r.pass_reports["quantize-int8"].get("equalization") or {}
            rows.append({"model": name, "pipeline": pipe, "seconds": round(seconds, 2),
                         "accuracy": float((got.argmax(-1) == test["labels"]).mean() * 100),
                         "fp32_accuracy": float((ref.argmax(-1) == test["labels"]).mean() * 100),
                         "top1_agreement": float((got.argmax(-1) == ref.argmax(-1)).mean() * 100),
                         "cosine": cos, "kept": eq.get("kept"), "baseline": eq.get("baseline"),
                         "tried": [(t["name"], t.get("norm_cosine"), t.get("kept")) for t in eq.get("tried", [])
                                   if t.get("applies")]})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| model | pipeline | accuracy % (FP32) | top-1 agree % | cosine | int8 equalize=auto: held-out norm. cosine "
          "baseline -> tried (kept) | s |")
    print("|---|---|---:|---:|---:|---|---:|")
    for r in rows:
        tried = "; ".join(f"{n} {m:.5f}{' kept' if k else ''}" for n, m, k in r["tried"]) if r["tried"] else ""
        auto = f"{r['baseline']:.5f} -> {tried}" if r["baseline"] is not None else ""
        print(f"| {r['model']} | `{r['pipeline']}` | {r['accuracy']:.2f} ({r['fp32_accuracy']:.2f}) | "
              f"{r['top1_agreement']:.2f} | {r['cosine']:.5f} | {auto} | {r['seconds']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
