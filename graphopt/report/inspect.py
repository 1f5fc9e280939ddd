"""`graphopt inspect`: what a model costs, per node and per op type.

Costs are polynomials in the model's symbolic dims, so an unpinned batch shows as a formula
("8178384896*N"); `--input-shape` pins dims and makes them numbers. Counting conventions:

- params: elements of the float initializers the graph reads (each once, charged to its first reader);
- Conv: MACs = N x Cout x Hout x Wout x (Cin/group) x Kh x Kw; FLOPs = 2 x MACs, plus one per
  output element for the bias. ConvTranspose: N x Cin x Hin x Win x (Cout/group) x Kh x Kw.
  Gemm / MatMul: batch x M x N x K MACs (+ M x N bias adds for Gemm's C);
- elementwise ops: one FLOP per output element; pooling: one per input element covered by the
  window; normalizations and Softmax: a few per element (see COST_PER_ELEMENT);
- peak activation memory: tensors live from their producer to their last reader, in execution
  order; the largest sum of live bytes (graph inputs included), for the pinned shapes (symbols
  still free count as 1).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from graphopt.analysis.shapes import infer_shapes
from graphopt.ir import Graph, Model, Node, Value
from graphopt.ir.dtypes import is_float, np_dtype

# FLOPs per output element of ops that are not products
COST_PER_ELEMENT = {"BatchNormalization": 2, "InstanceNormalization": 5, "LayerNormalization": 5,
                    "GroupNormalization": 5, "Softmax": 3, "LogSoftmax": 3, "Gelu": 8, "HardSwish": 3,
                    "HardSigmoid": 2, "Erf": 4, "Sigmoid": 4, "Tanh": 4, "Exp": 1, "Log": 1, "Sqrt": 1,
                    "Pow": 1, "Reciprocal": 1, "Clip": 1, "Relu": 1, "LeakyRelu": 1, "PRelu": 1, "Elu": 3,
                    "Selu": 3, "Softplus": 3, "Add": 1, "Sub": 1, "Mul": 1, "Div": 1, "Sum": 1, "Max": 1,
                    "Min": 1, "Mean": 1, "Neg": 1, "Abs": 1, "Where": 1, "Equal": 1, "Greater": 1, "Less": 1,
                    "Not": 1, "And": 1, "Or": 1, "ReduceMean": 1, "ReduceSum": 1, "ReduceMax": 1, "ReduceMin": 1,
                    "ReduceL2": 2, "ReduceSumSquare": 2, "LRN": 5, "Cast": 0}
POOLS = {"MaxPool", "AveragePool", "LpPool"}
GLOBAL_POOLS = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}


class Poly:
    """An integer polynomial in symbolic dims: {sorted tuple of symbols: coefficient}."""

    __slots__ = ("terms",)

    def __init__(self, terms: Optional[dict] = None):
        self.terms = {k: v for k, v in (terms or {}).items() if v}

    @staticmethod
    def of(d) -> "Poly":
        if isinstance(d, Poly):
            return d
        if isinstance(d, (int, np.integer)):
            return Poly({(): int(d)})
        return Poly({(str(d) if d else "?",): 1})

    def __add__(self, other) -> "Poly":
        other = Poly.of(other)
        terms = dict(self.terms)
        for k, v in other.terms.items():
            terms[k] = terms.get(k, 0) + v
        return Poly(terms)

    __radd__ = __add__

    def __mul__(self, other) -> "Poly":
        other = Poly.of(other)
        terms: dict = {}
        for k1, v1 in self.terms.items():
            for k2, v2 in other.terms.items():
                k = tuple(sorted(k1 + k2))
                terms[k] = terms.get(k, 0) + v1 * v2
        return Poly(terms)

    __rmul__ = __mul__

    def value(self, symbols: Optional[dict] = None) -> int:
        """The number it is with every symbol replaced (unknown symbols count as 1)."""
        symbols = symbols or {}
        return int(sum(v * math.prod(symbols.get(s, 1) for s in k) for k, v in self.terms.items()))

    @property
    def is_number(self) -> bool:
        return all(k == () for k in self.terms)

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        parts = []
        for k in sorted(self.terms, key=lambda k: (len(k), k)):
            v = self.terms[k]
            parts.append("*".join([str(v)] * (v != 1 or not k) + list(k)))
        return " + ".join(parts)

    def json(self) -> Union[int, str]:
        return self.value() if self.is_number else str(self)


def _elements(shape) -> Poly:
    p = Poly.of(1)
    for d in shape:
        p = p * Poly.of(d)
    return p


def _shape(v: Optional[Value]):
    return v.shape if v is not None and v.shape is not None else None


@dataclass
class NodeCost:
    name: str
    op: str
    params: int
    macs: Poly
    flops: Poly

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "params": self.params, "macs": self.macs.json(),
                "flops": self.flops.json()}


def node_cost(g: Graph, node: Node) -> tuple[Poly, Poly]:
    """(MACs, FLOPs) of one node from the shapes around it."""
    ins, outs = node.inputs, node.outputs
    out = _shape(outs[0]) if outs else None
    zero = Poly()
    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        w, x = _shape(ins[1]) if len(ins) > 1 else None, _shape(ins[0])
        if w is None or out is None or x is None:
            return zero, zero
        kernel = _elements(w[2:])
        if op == "Conv":
            macs = _elements(out) * Poly.of(w[1]) * kernel  # N*Cout*Hout*Wout * Cin/g * K
        else:
            macs = _elements(x) * Poly.of(w[1]) * kernel  # N*Cin*Hin*Win * Cout/g * K
        bias = _elements(out) if len(ins) > 2 and ins[2] is not None else zero
        return macs, 2 * macs + bias
    if op in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
        a, b = _shape(ins[0]), _shape(ins[1]) if len(ins) > 1 else None
        if a is None or b is None or out is None:
            return zero, zero
        if op == "Gemm":
            k = a[0] if node.attr("transA", 0) else a[-1]
        else:
            k = a[-1] if len(a) >= 1 else 1
        macs = _elements(out) * Poly.of(k)
        bias = _elements(out) if op == "Gemm" and len(ins) > 2 and ins[2] is not None else zero
        return macs, 2 * macs + bias
    if out is None:
        return zero, zero
    if op in POOLS:
        return zero, _elements(out) * _elements(node.attr("kernel_shape", []))
    if op in GLOBAL_POOLS:
        x = _shape(ins[0])
        return zero, _elements(x) if x is not None else zero
    per = COST_PER_ELEMENT.get(op)
    if per is None:
        return zero, zero  # data movement (Reshape, Transpose, Concat, Gather, ...): no arithmetic
    return zero, per * _elements(out)


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
    charged: set[int] = set()
    nodes: list[NodeCost] = []
    for node in order:
        params = 0
        for v in node.inputs:
            if v is not None and v.const is not None and v.id not in charged and is_float(v.dtype):
                charged.add(v.id)
                params += v.const.size
        macs, flops = node_cost(g, node)
        nodes.append(NodeCost(node.name, node.op_type, params, macs, flops))
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
    total_macs = sum((n.macs for n in nodes), Poly())
    total_flops = sum((n.flops for n in nodes), Poly())
    symbols = sorted({s for v in g.inputs + g.outputs for d in (v.shape or ()) if isinstance(d, str) for s in [d]})
    return {
        "params": sum(n.params for n in nodes),
        "macs": total_macs.json(),
        "flops": total_flops.json(),
        "weight_bytes": dict(sorted(weight_bytes.items())),
        "peak_activation_bytes": peak_activation_bytes(g, order),
        "ops": dict(sorted(Counter(n.op_type for sub in g.walk() for n in sub.nodes).items())),
        "by_op_type": {op: {**e, "macs": e["macs"].json(), "flops": e["flops"].json()} for op, e in sorted(by_op.items())},
        "nodes": [n.to_dict() for n in nodes],
        "opsets": dict(model.opset_imports),
        "dynamic_dims": symbols,
        "inputs": {v.name: _shape_text(v) for v in g.inputs if v.const is None},
        "outputs": {v.name: _shape_text(v) for v in g.outputs},
    }


def _shape_text(v: Value):
    return [d if d is not None else "?" for d in v.shape] if v.shape is not None else None


def _nbytes(v: Value) -> int:
    if v.shape is None or v.dtype is None:
        return 0
    try:
        itemsize = np.dtype(np_dtype(v.dtype)).itemsize
    except Exception:  # string or exotic types: not activation memory we can size
        return 0
    return _elements(v.shape).value() * itemsize


def peak_activation_bytes(g: Graph, order: list[Node]) -> int:
    """The largest sum of live non-constant tensors over the execution order."""
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
            if v is not None:
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
