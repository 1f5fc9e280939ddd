"""Pruning: params, FLOPs, file size, onnxruntime CPU latency and accuracy before and after each
method, on the golden ResNet-50 (seeded weights: accuracy is agreement with the unpruned model on
seeded random images) and the trained digits CNN (accuracy on its labelled test set).

    python benchmarks/prune.py [--only resnet50 digits_cnn] [--rounds 20] [--json out.json]

Every method runs through `graphopt MODEL -p 'prune{...}'` (the Python API), validation off;
the baseline is the same model after `fuse,fold`, so only pruning differs. Latency: onnxruntime
CPU, every graph optimization on, one thread, after warm-up runs, in interleaved rounds (every
model once per round); medians. Magnitude and 2:4 sparsity keep the weights dense (zeros are
stored), so they change neither FLOPs nor size nor dense-kernel speed: the win needs sparse
kernels (TensorRT's 2:4 on Ampere and later). Channel pruning removes the channels.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

METHODS = [("baseline (fuse,fold)", "fuse,fold"), ("magnitude 50%", "prune{sparsity=0.5}"),
           ("2:4", "prune{method=2:4}"), ("channel 30%", "prune{method=channel,ratio=0.3}")]


def models(only):
    from _golden import golden

    g = golden()
    trained = os.path.join(os.path.dirname(HERE), "golden_models", "trained")
    out = []
    if not only or "resnet50" in only:
        x = np.random.default_rng(0).standard_normal((32, 3, 224, 224)).astype(np.float32)  # its batch is fixed at 1
        out.append(("resnet50", g.build(next(m for m in g.CORPUS if m.name == "resnet50")), {"gpu_0/data_0": x}, None, 1))
    if not only or "digits_cnn" in only:
        test = np.load(os.path.join(trained, "digits_cnn.test.npz"))
        out.append(("digits_cnn", os.path.join(trained, "digits_cnn.onnx"), {"input": test["input"]}, test["labels"], 32))
    return out


def session(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def predictions(sess, feeds, batch):
    n = len(next(iter(feeds.values())))
    outs = [sess.run(None, {k: v[i:i + batch] for k, v in feeds.items()})[0] for i in range(0, n, batch)]
    return np.concatenate(outs)


def main() -> int:
    from _golden import write_json

    import graphopt
    from graphopt.analysis.cost import model_cost
    from graphopt.lint.sparsity import layer_sparsity

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    results = {}
    for name, path, feeds, labels, batch in models(args.only):
        with tempfile.TemporaryDirectory() as tmp:
            rows = {}
            for label, passes in METHODS:
                out = os.path.join(tmp, label.split()[0].replace(":", "_") + ".onnx")
                start = time.perf_counter()
                graphopt.optimize(path, passes, output=out, validate=False, initializers_as_constants=True)
                model = graphopt.load(out)
                cost = model_cost(model)
                layers = layer_sparsity(model)
                params = sum(L.params for L in layers)
                rows[label] = {"path": out, "seconds": time.perf_counter() - start, "params": cost.params,
                               "mflops": cost.flops / 1e6, "size_mb": os.path.getsize(out) / 1e6,
                               "sparsity": sum(L.params * L.sparsity for L in layers) / max(params, 1),
                               "two_four": f"{sum(bool(L.two_four) for L in layers)}/{sum(L.eligible for L in layers)}"}
            sessions = {label: session(r["path"]) for label, r in rows.items()}
            first = {k: v[:batch] for k, v in feeds.items()}
            for s in sessions.values():
                for _ in range(3):
                    s.run(None, first)
            times = {label: [] for label in rows}
            for _ in range(args.rounds):
                for label, s in sessions.items():
                    t = time.perf_counter()
                    s.run(None, first)
                    times[label].append(time.perf_counter() - t)
            base = predictions(sessions[METHODS[0][0]], feeds, batch)
            for label, r in rows.items():
                pred = predictions(sessions[label], feeds, batch)
                r["latency_ms"] = 1e3 * statistics.median(times[label])
                r["agreement"] = 100.0 * float(np.mean(pred.argmax(-1) == base.argmax(-1)))
                a, b_ = pred.reshape(len(pred), -1).astype(np.float64), base.reshape(len(base), -1).astype(np.float64)
                r["cosine"] = float(np.mean(np.sum(a * b_, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b_, axis=1))))
                r["accuracy"] = 100.0 * float(np.mean(pred.argmax(-1) == labels)) if labels is not None else None
                del r["path"]
            results[name] = rows
        b = rows[METHODS[0][0]]
        print(f"\n### {name} (latency batch {batch}, {args.rounds} interleaved rounds)\n")
        print("| method | params | MFLOPs | size MB | zero weights % | 2:4 layers | latency ms | × baseline | "
              "cosine to baseline | top-1 agreement % | accuracy % |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for label, r in rows.items():
            acc = f"{r['accuracy']:.2f}" if r["accuracy"] is not None else ""
            print(f"| {label} | {r['params']:,} | {r['mflops']:,.1f} | {r['size_mb']:.1f} | {r['sparsity']:.1f} | "
                  f"{r['two_four']} | {r['latency_ms']:.2f} | {r['latency_ms'] / b['latency_ms']:.2f} | "
                  f"{r['cosine']:.4f} | {r['agreement']:.2f} | {acc} |", flush=True)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
