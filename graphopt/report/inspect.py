"""`graphopt inspect`: what a model costs, per node and per op type.

Costs are polynomials in the model's symbolic dims, so an unpinned batch shows as a formula
("8178384896*N"); `--input-shape` pins dims and makes them numbers. Counting conventions:

- params, MACs, FLOPs: graphopt.analysis.cost, the one cost model (weights counted in their
  stored type: INT8 and FP16 weights count);
- peak activation memory: tensors live from their producer to their last reader, in execution
  order; the largest sum of live bytes (graph inputs included; weights, dequantized or not, are
  not activations), for the pinned shapes (symbols still free count as 1).
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

import numpy as np

from graphopt.analysis.cost import Poly, elements, model_cost
from graphopt.analysis.shapes import infer_shapes
from graphopt.ir import Graph, Model, Node, Value, dtypes
from graphopt.ir.dtypes import np_dtype


def refine_shapes(model: Model, shapes_from: Optional[Model] = None) -> None:
    """Infer shapes; where onnx's inference leaves them unknown behind run-time shape
    computations (Shape -> Gather -> Concat -> Reshape), take them from `shapes_from`, a copy of
    the model whose shape chains are folded (folding keeps the names of the values it keeps).
    The caller folds that copy: this package sits below the pass library (docs/ARCHITECTURE.md)."""
    model.graph.toposort()  # a cycle is an error here, not in every fold pass
    infer_shapes(model)
    if shapes_from is None:
        return
    infer_shapes(shapes_from)
    for v in model.graph.values:
        better = shapes_from.graph.value(v.name)
        if v.const is None and better is not None and better.shape is not None and not _known(v.shape) \
                and _known(better.shape):
            v.shape = better.shape


def needs_refinement(model: Model) -> bool:
    """Whether some computed value's shape is still unknown after inference."""
    infer_shapes(model)
    return not all(_known(v.shape) for v in model.graph.values if v.const is None)


def _known(shape) -> bool:
    """Every dim an int or a real symbol (onnx's made-up `unk__N` names say nothing)."""
    return shape is not None and all(isinstance(d, int) or (isinstance(d, str) and not d.startswith("unk__"))
                                     for d in shape)


def inspect(model: Model, shapes_from: Optional[Model] = None) -> dict:
    """Everything `graphopt inspect --json` prints (see the module docstring). `shapes_from`:
    a folded copy of the model to take shapes from where inference leaves them unknown."""
    refine_shapes(model, shapes_from)
    g = model.graph
    order = g.toposort()
    cost = model_cost(model, order)
    nodes = cost.nodes
    by_op: dict[str, dict] = {}
    for n in nodes:
        e = by_op.setdefault(n.op, {"count": 0, "params": 0, "macs": Poly(), "flops": Poly()})
        e["count"] += 1
        e["params"] += n.params
        e["macs"] = e["macs"] + n.macs
        e["flops"] = e["flops"] + n.flops
    weight_bytes: Counter = Counter()
    for sub in g.walk():
        for v in sub.initializers:
            weight_bytes[str(np.dtype(np_dtype(v.const.dtype)))] += v.const.nbytes
        for n in sub.nodes:  # weights some exporters keep in Constant nodes
            data = sub.const_value(n.outputs[0]) if n.op_type == "Constant" and n.is_standard and n.outputs else None
            if data is not None and data.dtype != object:
                weight_bytes[str(data.dtype)] += data.nbytes
    symbols = sorted({s for v in g.inputs + g.outputs for d in (v.shape or ()) if isinstance(d, str) for s in [d]})
    return {
        **cost.to_dict(),
        "weight_bytes": dict(sorted(weight_bytes.items())),
        "peak_activation_bytes": peak_activation_bytes(g, order),
        "ops": dict(sorted(Counter(n.op_type for sub in g.walk() for n in sub.nodes).items())),
        "by_op_type": {op: {**e, "macs": e["macs"].json(), "flops": e["flops"].json()} for op, e in sorted(by_op.items())},
        "nodes": [n.to_dict() for n in nodes],
        "opsets": dict(model.opset_imports),
        "dynamic_dims": symbols,
        "inputs": {v.name: _io_entry(v) for v in g.inputs if v.const is None},
        "outputs": {v.name: _io_entry(v) for v in g.outputs},
    }


def _shape_text(v: Value):
    return [d if d is not None else "?" for d in v.shape] if v.shape is not None else None


def _io_entry(v: Value) -> dict:
    """A graph input or output as Polygraphy's `inspect model` shows it: dtype and shape."""
    return {"dtype": dtypes.name(v.dtype).lower(), "shape": _shape_text(v)}


def _nbytes(v: Value) -> int:
    if v.shape is None or v.dtype is None:
        return 0
    try:
        itemsize = np.dtype(np_dtype(v.dtype)).itemsize
    except Exception:  # string or exotic types: not activation memory we can size
        return 0
    return elements(v.shape).value() * itemsize


def peak_activation_bytes(g: Graph, order: list[Node]) -> int:
    """The largest sum of live activations over the execution order. Weights are not
    activations, nor is anything computed from constants alone (a dequantized INT8 weight)."""
    constant = {v.id for v in g.initializers}
    for node in order:
        if (node.op_type == "Constant" or node.n_inputs and all(v is None or v.id in constant for v in node.inputs)) \
                and not any(True for _ in node.subgraphs()):
            constant.update(v.id for v in node.outputs if v is not None)
    last_use: dict[int, int] = {}
    for i, node in enumerate(order):
        for v in node.inputs:
            if v is not None:
                last_use[v.id] = i
    for v in g.outputs:
        last_use[v.id] = len(order)
    live = {v.id: _nbytes(v) for v in g.inputs if v.const is None}
    peak = sum(live.values())
    for i, node in enumerate(order):
        for v in node.outputs:
            if v is not None and v.id not in constant:
                live[v.id] = _nbytes(v)
        peak = max(peak, sum(live.values()))
        for v in node.inputs + node.outputs:  # an output nothing reads dies at once
            if v is not None and last_use.get(v.id, i) == i:
                live.pop(v.id, None)
    return int(peak)


def diff(a: dict, b: dict) -> dict:
    """What changed from inspection `a` to inspection `b`."""
    ops = sorted(set(a["ops"]) | set(b["ops"]))
    changed_ops = {op: [a["ops"].get(op, 0), b["ops"].get(op, 0)] for op in ops
                   if a["ops"].get(op, 0) != b["ops"].get(op, 0)}
    out = {"ops": changed_ops}
    for key in ("params", "macs", "flops", "peak_activation_bytes"):
        out[key] = [a[key], b[key]]
    out["weight_bytes"] = [sum(a["weight_bytes"].values()), sum(b["weight_bytes"].values())]
    out["outputs"] = {name: [a["outputs"].get(name), b["outputs"].get(name)]
                      for name in sorted(set(a["outputs"]) | set(b["outputs"]))
                      if a["outputs"].get(name) != b["outputs"].get(name)}
    return out
