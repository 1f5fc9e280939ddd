"""method=auto: per quantized activation, the candidate range (calibration.AUTO_CANDIDATES:
minmax, percentiles, entropy, MSE-optimal) whose effect on the layer that reads it is smallest.

Each consumer layer (Conv, ConvTranspose, Gemm, MatMul with a constant weight) runs alone in a
tiny onnxruntime session on the activations kept from the first calibration samples: the float
output (float activation, float weight) is the reference; a candidate's output has the
activation fake-quantized with that range (symmetric INT8, as the Q/DQ pair will) and the weight
quantized per channel as quantize-int8 stores it. The score is the relative squared error
||y_c - y||^2 / ||y||^2 summed over consumers; tensors no layer of that kind reads (residual
Adds, pools, Concats) are scored by the activation's own quantization error.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np

from graphopt.ir import Graph
from graphopt.runtime.session import usable_cores

log = logging.getLogger("graphopt")

QMAX = 127
SCORED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def fake_quant(x: np.ndarray, amax: float, out: Optional[np.ndarray] = None) -> np.ndarray:
    """x through symmetric INT8 quantize / dequantize with range `amax`, in float32 (into `out`,
    a buffer of x's shape, when given)."""
    s = np.float32(max(float(amax), 1e-30) / QMAX)
    out = np.empty(x.shape, np.float32) if out is None else out
    np.divide(x, s, out=out)
    np.rint(out, out=out)
    np.clip(out, -QMAX, QMAX, out=out)
    np.multiply(out, s, out=out)
    return out


def _session(graph: Graph, opset: int, node, act_index: int, weight_index: Optional[int], weight: Optional[np.ndarray]):
    """onnxruntime session of `node` alone: input `act_index` a graph input, the others constants
    (the weight replaced by `weight`). None when another input is not a constant."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    inputs, inits, names = [], [], []
    for i, v in enumerate(node.inputs):
        if v is None:
            names.append("")
            continue
        name = f"in{i}"
        names.append(name)
        if i == act_index:
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            continue
        const = weight if i == weight_index and weight is not None else graph.const_value(v)
        if const is None:
            return None
        inits.append(numpy_helper.from_array(np.asarray(const), name))
    attrs = {}
    for k, a in node.attrs.items():
        if not isinstance(a.value, (int, float, bytes, str, list, tuple)):
            return None
        attrs[k] = a.value
    n = helper.make_node(node.op_type, names, ["y"], **attrs)
    g = helper.make_graph([n], "layer", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", max(13, opset))])
    m.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]), f"in{act_index}"


def choose(graph: Graph, opset: int, layers: list, candidates: dict[str, dict[str, float]], kept: dict[str, list],
           quantized_weight: Callable[[np.ndarray, Optional[int]], np.ndarray]) -> tuple[dict[str, float], dict]:
    """(tensor -> chosen range, tensor -> {"method", "error", "errors": {candidate: error}})."""
    consumers: dict[str, list] = {}
    for L in layers:
        node = graph.node_by_id(L.node_id)
        if node.op_type not in SCORED_OPS or L.weight is None:
            continue
        for idx, name in L.activations:
            consumers.setdefault(name, []).append((node, idx, L.weight))

    def score(name: str, cands: dict[str, float]) -> tuple[float, dict]:
        batches = [np.asarray(b, np.float32) for b in kept.get(name, [])]
        errors = {c: 0.0 for c in cands}
        by_value: dict[float, list[str]] = {}
        for c, amax in cands.items():
            by_value.setdefault(amax, []).append(c)
        scored = False
        for node, idx, (w_idx, w_name, axis) in consumers.get(name, []):
            w = graph.const_value(graph.value(w_name))
            if w is None or not batches:
                continue
            try:
                ref = _session(graph, opset, node, idx, None, None)
                qs = _session(graph, opset, node, idx, w_idx, quantized_weight(np.asarray(w), axis))
                if ref is None or qs is None:
                    continue
                (rs, rin), (qsess, qin) = ref, qs
                ys = [rs.run(None, {rin: b})[0] for b in batches]
                den = sum(float(np.sum(np.square(y, dtype=np.float64))) for y in ys) or 1.0
                bufs = [np.empty(b.shape, np.float32) for b in batches]
                for amax, same in by_value.items():  # candidates of equal range are scored once
                    num = sum(float(np.sum(np.square(qsess.run(None, {qin: fake_quant(b, amax, buf)})[0] - y,
                                                      dtype=np.float64))) for b, buf, y in zip(batches, bufs, ys))
                    for c in same:
                        errors[c] += num / den
                scored = True
            except Exception as e:  # noqa: BLE001 - a layer onnxruntime cannot run alone is scored by its input
                log.debug("range search: %s alone did not run (%s)", node.label, e)
        if not scored:
            den = sum(float(np.sum(np.square(b, dtype=np.float64))) for b in batches) or 1.0
            for c, amax in cands.items():
                errors[c] = sum(float(np.sum(np.square(fake_quant(b, amax) - b, dtype=np.float64)))
                                for b in batches) / den if batches else (0.0 if c == "mse" else 1.0)
        best = min(errors, key=lambda c: (errors[c], c != "mse"))
        return cands[best], {"method": best, "error": errors[best],
                             "scored_on": "layer output" if scored else "activation", "errors": errors}

    # tensors are scored independently (each layer in its own small session): several at once
    names = list(candidates)
    with ThreadPoolExecutor(max(1, min(usable_cores(), len(names) or 1))) as pool:
        results = list(pool.map(lambda name: score(name, candidates[name]), names))
    chosen = {name: r[0] for name, r in zip(names, results)}
    report = {name: r[1] for name, r in zip(names, results)}
    return chosen, report

