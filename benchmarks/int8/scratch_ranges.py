"""EXPERIMENT (research scratch, not part of the benchmark): why does a calibration method hurt
the OCR recognizer, tensor by tensor, and does choosing the range per tensor by the error of the
layer's quantized output fix it?

    python benchmarks/int8/scratch_ranges.py [--data benchmarks/int8/data] [--work /tmp/ocr_research]

Unlike the benchmark scripts this one imports graphopt.quant.calibration (AbsHistogram, the exact
histogram/threshold code of graphopt's four methods) so the ranges are graphopt's own; graphopt
passes still run only through the CLI. Steps:

1. graphopt CLI: `-p fuse,fold,int8 --calib calib.npz --calib-cache WORK/cache.json --report`
   (default entropy): the quantized tensors, their consumers (the report's layers) and the cache's
   fingerprints; `-p fuse,fold,raise-opset,fuse,fold`: the FP32 graph graphopt quantizes
   (same tensor and node names).
2. The calibration split graphopt uses (first 80% of calib.npz, batches of 32): one |x| histogram
   per quantized tensor (graphopt's AbsHistogram), thresholds by minmax / percentile / entropy /
   mse (checked against the entropy cache graphopt wrote: must be identical).
3. On the 20% graphopt holds out: per layer, the layer run alone (its node in onnxruntime) with
   that one activation fake-quantized (symmetric INT8, scale amax/127, clip) and its weight
   per-channel INT8 as graphopt stores it, vs the FP32 layer: relative MSE of the output
   (||y_q - y||^2 / ||y||^2), for each method's amax and for a grid of amax = f * max|x|.
4. Per tensor the range with the smallest summed output error over its consumers ("best of 4
   methods" and "grid"); each written as a graphopt calibration cache and quantized with the
   graphopt CLI (--calib-cache), then scored with ocr_eval.

Outputs WORK/ranges.json, WORK/ranges.md and the quantized models' scores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ocr_eval  # noqa: E402

METHODS = ("minmax", "percentile", "entropy", "mse")
GRID = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.07, 0.05)


def sh(cmd, log):
    with open(log, "w") as f:
        r = subprocess.run([*(["nice"] if os.nice(0) == 0 else []), *cmd], stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}; see {log}")


def fq(x, amax):
    s = max(amax, 1e-30) / 127.0
    return (np.clip(np.round(x / s), -127, 127) * s).astype(np.float32)


def fq_weight(w, axis):
    if axis is None:
        return fq(w, float(np.abs(w).max()))
    red = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=red, keepdims=True)
    s = np.maximum(amax, 1e-30) / 127.0
    return (np.clip(np.round(w / s), -127, 127) * s).astype(np.float32)


def single_node_session(model, node, weight_override=None):
    """An onnxruntime session of `node` alone: its constant inputs as initializers (the weight
    replaced by weight_override), its other inputs as graph inputs."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    feeds, init = [], []
    for name in node.input:
        if not name:
            continue
        if name in inits:
            if weight_override is not None and name in weight_override:
                init.append(numpy_helper.from_array(weight_override[name], name))
            else:
                init.append(inits[name])
        elif name not in [f.name for f in feeds]:
            feeds.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    out = helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)
    gr = helper.make_graph([node], "one", feeds, [out], init)
    m = helper.make_model(gr, opset_imports=model.opset_import)
    m.ir_version = model.ir_version
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    ap.add_argument("--work", default="/tmp/ocr_research")
    ap.add_argument("--graphopt", default=shutil.which("graphopt") or "graphopt")
    ap.add_argument("--measure", type=int, default=60, help="held-out samples the layer errors are measured on")
    args = ap.parse_args(argv)
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from graphopt.quant.calibration import AbsHistogram

    os.makedirs(args.work, exist_ok=True)
    W = lambda *p: os.path.join(args.work, *p)  # noqa: E731
    src, calib = os.path.join(args.data, "rec.onnx"), os.path.join(args.data, "calib.npz")
    evaln, dct = os.path.join(args.data, "eval.npz"), os.path.join(args.data, "dict.txt")

    # 1. graphopt: the quantized tensors, and the FP32 graph it quantizes
    if not os.path.exists(W("cache.json")):
        sh([args.graphopt, src, "-p", "fuse,fold,int8", "--calib", calib, "--calib-cache", W("cache.json"),
            "-o", W("q_entropy.onnx"), "--force", "--report", W("q_entropy.report.json")], W("q_entropy.log"))
    if not os.path.exists(W("fused.onnx")):
        sh([args.graphopt, src, "-p", "fuse,fold,raise-opset,fuse,fold", "-o", W("fused.onnx"), "--force"],
           W("fused.log"))
    cache = json.load(open(W("cache.json")))
    tensors = sorted(cache["ranges"])
    layers = [L for L in json.load(open(W("q_entropy.report.json")))["pass_reports"]["quantize-int8"]["layers"]
              if L["precision"] == "int8"]
    fused = onnx.load(W("fused.onnx"))
    nodes = {n.name: n for n in fused.graph.node}
    inits = {i.name: numpy_helper.to_array(i) for i in fused.graph.initializer}
    missing = [L["node"] for L in layers if L["node"] not in nodes]
    if missing:
        sys.exit(f"layers not in the fused graph: {missing[:5]}")

    # 2. histograms on graphopt's calibration split, all four thresholds
    with np.load(calib) as z:
        name = [k for k in z.files if k != "labels"][0]
        x_all = z[name]
    n = len(x_all)
    held = int(round(n * 0.2))
    cal, hold = x_all[: n - held], x_all[n - held:][: args.measure]
    m = onnx.load(W("fused.onnx"))
    have = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in have and t != name:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    fetch = [t for t in tensors if t != name]
    hists = {t: AbsHistogram() for t in tensors}
    for i in range(0, len(cal), 32):
        feed = {name: cal[i:i + 32]}
        outs = dict(zip(fetch, sess.run(fetch, feed)))
        for t in tensors:
            hists[t].add(outs[t] if t in outs else feed[name])
    ranges = {meth: {t: hists[t].threshold(meth) for t in tensors} for meth in METHODS}
    diff = max(abs(ranges["entropy"][t] - cache["ranges"][t]) / max(cache["ranges"][t], 1e-12) for t in tensors)
    print(f"entropy ranges vs graphopt's cache: max relative difference {diff:.2e}", file=sys.stderr)
    amax_true = {t: hists[t].amax for t in tensors}

    # activations of the measurement samples (held out from calibration)
    acts = {}
    for i in range(0, len(hold), 20):
        feed = {name: hold[i:i + 20]}
        outs = dict(zip(fetch, sess.run(fetch, feed)))
        outs[name] = feed[name]
        for t in tensors:
            acts.setdefault(t, []).append(outs[t])
    acts = {t: np.concatenate(v) for t, v in acts.items()}
    del sess

    # 3. per layer: output error for each candidate range of each of its quantized inputs
    rows = []
    err_by_tensor = {t: {} for t in tensors}  # tensor -> candidate label -> summed rel. err
    cand_amax = {t: {} for t in tensors}
    for t in tensors:
        for meth in METHODS:
            cand_amax[t][meth] = ranges[meth][t]
        for f in GRID:
            cand_amax[t][f"grid{f}"] = f * amax_true[t]
    for L in layers:
        node = nodes[L["node"]]
        wq = None
        if L.get("weight"):
            wt = L["weight"]["tensor"]
            # the weight name in the report is graphopt's; in the fused graph it is the node's input 1
            wname = node.input[1]
            if wname in inits:
                wq = {wname: fq_weight(inits[wname], L["weight"].get("axis"))}
        s_ref = single_node_session(fused, node)
        s_q = single_node_session(fused, node, wq) if wq else s_ref
        names_in = [i.name for i in s_ref.get_inputs()]
        base = {k: acts[k] if k in acts else None for k in names_in}
        if any(v is None for v in base.values()):
            # an input that is not a calibrated tensor (e.g. the conv output into a residual Add): compute it
            need = [k for k, v in base.items() if v is None]
            mm = onnx.load(W("fused.onnx"))
            for k in need:
                mm.graph.output.append(onnx.helper.make_empty_tensor_value_info(k))
            ss = ort.InferenceSession(mm.SerializeToString(), so, providers=["CPUExecutionProvider"])
            outs = [ss.run(need, {name: hold[i:i + 20]}) for i in range(0, len(hold), 20)]
            for j, k in enumerate(need):
                base[k] = np.concatenate([o[j] for o in outs])
        y_ref = s_ref.run(None, base)[0].astype(np.float64)
        denom = float((y_ref ** 2).sum()) or 1.0
        for inp in L["inputs"]:
            t = inp["tensor"]
            if t not in acts:
                continue
            row = {"layer": L["node"], "kind": L["kind"], "tensor": t, "amax": amax_true[t],
                   "graphopt_amax": inp["amax"]}
            for lab, a in cand_amax[t].items():
                feed = dict(base)
                feed[t] = fq(acts[t], a)
                y = s_q.run(None, feed)[0].astype(np.float64)
                e = float(((y - y_ref) ** 2).sum()) / denom
                row[f"err_{lab}"] = e
                err_by_tensor[t][lab] = err_by_tensor[t].get(lab, 0.0) + e
            for meth in METHODS:
                row[f"amax_{meth}"] = ranges[meth][t]
                row[f"clip_{meth}"] = float((np.abs(acts[t]) > ranges[meth][t]).mean())
            rows.append(row)
        print(f"  {L['node']}: done", file=sys.stderr)

    # 4. per-tensor choices -> caches -> graphopt CLI -> ocr_eval
    choice = {}
    for t in tensors:
        e = err_by_tensor[t]
        if not e:
            choice[t] = {"best4": "entropy", "grid": "entropy"}
            continue
        choice[t] = {"best4": min(METHODS, key=lambda k: e[k]), "grid": min(e, key=e.get)}
    results = {}
    for variant in ("best4", "grid"):
        c = dict(cache)
        c["ranges"] = {t: float(cand_amax[t][choice[t][variant]]) for t in tensors}
        path = W(f"cache_{variant}.json")
        json.dump(c, open(path, "w"), indent=1)
        out = W(f"q_{variant}.onnx")
        sh([args.graphopt, src, "-p", "fuse,fold,int8", "--calib", calib, "--calib-method", cache["method"],
            "--calib-cache", path, "-o", out, "--force"], W(f"q_{variant}.log"))
        res = ocr_eval.evaluate(out, src, evaln, dct)
        results[variant] = {k: res[k] for k in ("lines_pct", "chars_pct", "int8_weight_pct")}
        results[variant]["log"] = open(W(f"q_{variant}.log")).read().strip().splitlines()[-2:]
        print(f"{variant}: {results[variant]}", file=sys.stderr)
    json.dump({"rows": rows, "choice": choice, "ranges": ranges, "amax": amax_true, "results": results,
               "err_by_tensor": err_by_tensor}, open(W("ranges.json"), "w"), indent=1)

    # table: per tensor, the four ranges (as a share of max|x|), clipped share and output errors
    lines = ["| tensor (consumer) | max|x| | minmax | pct | entropy | mse | clip% entropy | err minmax | err pct | "
             "err entropy | err mse | best4 | grid best (f, err) |", "|" + "---|" * 13]
    for r in sorted(rows, key=lambda r: -r["err_entropy"]):
        t = r["tensor"]
        g = min((k for k in r if k.startswith("err_grid")), key=lambda k: r[k])
        lines.append(f"| {t} ({r['layer']}, {r['kind']}) | {r['amax']:.3g} | " +
                     " | ".join(f"{r['amax_' + m] / max(r['amax'], 1e-12):.3f}" for m in METHODS) +
                     f" | {100 * r['clip_entropy']:.3f} | " + " | ".join(f"{r['err_' + m]:.2e}" for m in METHODS) +
                     f" | {choice[t]['best4']} | {g[8:]}, {r[g]:.2e} |")
    with open(W("ranges.md"), "w") as f:
        f.write("\n".join(lines) + "\n\n" + json.dumps(results, indent=1) + "\n")
    print("\n".join(lines[:40]))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
