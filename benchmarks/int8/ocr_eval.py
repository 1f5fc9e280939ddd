"""How far a (quantized) OCR recognizer decodes from the FP32 one, on the rendered lines of
ocr_data.py.

    python benchmarks/int8/ocr_eval.py MODEL.onnx [--reference data/rec.onnx] [--data data/eval.npz]
                                       [--dict data/dict.txt] [--threads 2] [--json]

Runs MODEL and the FP32 reference on eval.npz in onnxruntime (CPUExecutionProvider), greedy-CTC
decodes both as rapidocr's CTCLabelDecode does (argmax over classes, collapse repeats, drop the
blank at index 0; classes are ["blank"] + dict.txt + [" "]) and reports:

- lines %      lines MODEL decodes exactly as FP32 does
- chars %      characters agreeing with FP32: 100 * (1 - sum edit distance / sum FP32 length)
- FP32 lines % / chars %   the reference's own accuracy against the ground truth
- MODEL lines % / chars %  MODEL's accuracy against the ground truth
- int8 weights %  share of the Conv/MatMul/Gemm weights (elements) stored as INT8: a weight
               input that comes from DequantizeLinear of an INT8 initializer (through Identity,
               Transpose, Reshape, Squeeze, Unsqueeze, Cast) counts as INT8, a float constant as
               float; inputs that are activations (e.g. attention's MatMuls) are not weights.
               Also the layer counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")


def load_classes(dict_path: str) -> list[str]:
    with open(dict_path, encoding="utf-8", newline="") as f:
        chars = f.read().split("\n")
    return ["blank"] + chars + [" "]  # rapidocr's CTCLabelDecode.get_character


def ctc_decode(logits: np.ndarray, classes: list[str]) -> list[str]:
    """rapidocr CTCLabelDecode.decode(remove_duplicate=True) without the confidences."""
    idx = logits.argmax(axis=2)
    out = []
    for row in idx:
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != 0
        out.append("".join(classes[i] for i in row[keep]))
    return out


def run_model(path: str, x: np.ndarray, name: str | None = None, threads: int = 2, batch: int = 16) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = name or sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs)


def edit_distance(a: str, b: str) -> int:
    if a == b:
        return 0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def agreement(pred: list[str], ref: list[str]) -> tuple[float, float]:
    """(% of lines equal, % of characters agreeing = 1 - total edit distance / total ref length)."""
    lines = 100.0 * sum(p == r for p, r in zip(pred, ref)) / max(len(ref), 1)
    dist = sum(edit_distance(p, r) for p, r in zip(pred, ref))
    chars = 100.0 * (1.0 - dist / max(sum(len(r) for r in ref), 1))
    return lines, chars


# ------------------------------------------------------------------------------ weight precision
PASS_THROUGH = {"Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Cast", "Flatten"}


def int8_weight_share(path: str) -> dict:
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.load(path)
    g = m.graph
    consts = {i.name: (i.data_type, int(np.prod(i.dims)) if i.dims else 1) for i in g.initializer}
    producer = {}
    for n in g.node:
        for o in n.output:
            producer[o] = n
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = (a.t.data_type, int(np.prod(a.t.dims)) if a.t.dims else 1)
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}

    def source(name: str, depth: int = 0):
        """('int8' | 'float' | None, elements) of a weight input; None: an activation."""
        if name in consts:
            dt, n = consts[name]
            if dt in floats:
                return "float", n
            if dt == TensorProto.INT8:
                return "int8", n
            return None, 0
        node = producer.get(name)
        if node is None or depth > 8:
            return None, 0
        if node.op_type == "DequantizeLinear":
            kind, n = source(node.input[0], depth + 1)
            return ("int8", n) if kind == "int8" else ("other-q", n) if kind else (None, 0)
        if node.op_type in PASS_THROUGH:
            return source(node.input[0], depth + 1)
        return None, 0

    totals = {"int8": 0, "float": 0, "other-q": 0}
    layers = {"int8": 0, "float": 0, "other-q": 0}
    for n in g.node:
        if n.op_type == "Conv":
            cands = [n.input[1]]
        elif n.op_type == "Gemm":
            cands = [n.input[1], n.input[0]]
        elif n.op_type == "MatMul":
            cands = [n.input[1], n.input[0]]
        else:
            continue
        for c in cands:
            kind, elems = source(c)
            if kind:
                totals[kind] += elems
                layers[kind] += 1
                break
    all_w = sum(totals.values())
    return {"int8_weight_pct": 100.0 * totals["int8"] / all_w if all_w else 0.0,
            "weights_int8": totals["int8"], "weights_total": all_w,
            "layers_int8": layers["int8"], "layers_total": sum(layers.values())}


# ------------------------------------------------------------------------------ main
def evaluate(model: str, reference: str, data: str, dict_path: str, threads: int = 2) -> dict:
    z = np.load(data, allow_pickle=False)
    truth = [str(t) for t in z["text"]]
    name = [k for k in z.files if k != "text"][0]
    x = z[name]
    classes = load_classes(dict_path)
    t0 = time.perf_counter()
    ref = ctc_decode(run_model(reference, x, name, threads), classes)
    t1 = time.perf_counter()
    pred = ref if os.path.abspath(model) == os.path.abspath(reference) else ctc_decode(
        run_model(model, x, name, threads), classes)
    t2 = time.perf_counter()
    lines, chars = agreement(pred, ref)
    fl, fc = agreement(ref, truth)
    ml, mc = agreement(pred, truth)
    res = {"model": model, "reference": reference, "lines": len(x),
           "lines_pct": lines, "chars_pct": chars,
           "fp32_gt_lines_pct": fl, "fp32_gt_chars_pct": fc,
           "model_gt_lines_pct": ml, "model_gt_chars_pct": mc,
           "seconds_fp32": t1 - t0, "seconds_model": t2 - t1,
           **int8_weight_share(model),
           "examples": [{"truth": t, "fp32": r, "model": p} for t, r, p in zip(truth, ref, pred) if p != r][:8]}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--reference", default=os.path.join(DATA, "rec.onnx"))
    ap.add_argument("--data", default=os.path.join(DATA, "eval.npz"))
    ap.add_argument("--dict", default=os.path.join(DATA, "dict.txt"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    for p in (args.model, args.reference, args.data, args.dict):
        if not os.path.exists(p):
            sys.exit(f"ocr_eval: {p} not found (run benchmarks/int8/ocr_data.py first)")
    res = evaluate(args.model, args.reference, args.data, args.dict, args.threads)
    if args.json:
        print(json.dumps(res, ensure_ascii=False, indent=1))
        return 0
    print(f"{os.path.basename(args.model)} on {res['lines']} lines vs FP32 {os.path.basename(args.reference)}:")
    print(f"  lines as FP32 {res['lines_pct']:.1f}%   chars as FP32 {res['chars_pct']:.2f}%")
    print(f"  vs ground truth: model {res['model_gt_lines_pct']:.1f}% lines / {res['model_gt_chars_pct']:.2f}% chars; "
          f"FP32 {res['fp32_gt_lines_pct']:.1f}% / {res['fp32_gt_chars_pct']:.2f}%")
    print(f"  INT8 weights: {res['int8_weight_pct']:.1f}% of {res['weights_total']} "
          f"({res['layers_int8']}/{res['layers_total']} Conv/MatMul/Gemm layers)")
    for e in res["examples"][:5]:
        print(f"  truth {e['truth']!r}  fp32 {e['fp32']!r}  model {e['model']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
