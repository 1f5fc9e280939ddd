"""The cost model: parameters, multiply-accumulates and FLOPs of a model, per node and in total.

Costs are polynomials in the model's symbolic dims (an unpinned batch stays a symbol: the cost
of a ResNet is "8178384896*N"); pinning dims with --input-shape makes them numbers. `inspect`,
the pruning summaries and the run report's before/after diff all count with this one model.

- params: elements of the weights the graph reads, in their stored type, each weight once and
  charged to its first reader. A weight is a float initializer, or an integer initializer a
  DequantizeLinear reads (an INT8 weight); quantization scales and zero points are not params.
- Conv: MACs = N x Cout x Hout x Wout x (Cin/group) x Kh x Kw; FLOPs = 2 x MACs, plus one per
  output element for the bias. ConvTranspose: N x Cin x Hin x Win x (Cout/group) x Kh x Kw.
  Gemm / MatMul: batch x M x N x K MACs (+ M x N bias adds for Gemm's C);
- elementwise ops: one FLOP per output element; pooling: one per input element covered by the
  window; normalizations and Softmax: a few per element (see COST_PER_ELEMENT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from graphopt.analysis.shapes import infer_shapes
from graphopt.ir import Graph, Model, Node, Value
from graphopt.ir.dtypes import is_float, is_integer

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


def elements(shape) -> Poly:
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
        kernel = elements(w[2:])
        if op == "Conv":
            macs = elements(out) * Poly.of(w[1]) * kernel  # N*Cout*Hout*Wout * Cin/g * K
        else:
            macs = elements(x) * Poly.of(w[1]) * kernel  # N*Cin*Hin*Win * Cout/g * K
        bias = elements(out) if len(ins) > 2 and ins[2] is not None else zero
        return macs, 2 * macs + bias
    if op in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
        a, b = _shape(ins[0]), _shape(ins[1]) if len(ins) > 1 else None
        if a is None or b is None or out is None:
            return zero, zero
        if op == "Gemm":
            k = a[0] if node.attr("transA", 0) else a[-1]
        else:
            k = a[-1] if len(a) >= 1 else 1
        macs = elements(out) * Poly.of(k)
        bias = elements(out) if op == "Gemm" and len(ins) > 2 and ins[2] is not None else zero
        return macs, 2 * macs + bias
    if out is None:
        return zero, zero
    if op in POOLS:
        return zero, elements(out) * elements(node.attr("kernel_shape", []))
    if op in GLOBAL_POOLS:
        x = _shape(ins[0])
        return zero, elements(x) if x is not None else zero
    per = COST_PER_ELEMENT.get(op)
    if per is None:
        return zero, zero  # data movement (Reshape, Transpose, Concat, Gather, ...): no arithmetic
    return zero, per * elements(out)



QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


# integer weights of the QOperator ops: (op, input index)
INTEGER_WEIGHT_INPUTS = {("DequantizeLinear", 0), ("QLinearConv", 3), ("QLinearMatMul", 3), ("ConvInteger", 1),
                         ("MatMulInteger", 1)}


def weights(g: Graph) -> dict[int, int]:
    """Value id -> elements of every weight (see the module docstring): initializers and the
    outputs of Constant nodes."""
    out = {}
    constants = [v for v in g.initializers] + [n.outputs[0] for n in g.nodes
                                               if n.op_type == "Constant" and n.is_standard and n.outputs]
    for v in constants:
        uses = g.uses(v)
        if not uses or v.dtype is None:
            continue
        if is_float(v.dtype) and not all(u.op_type in QDQ_OPS and k in (1, 2) for u, k in uses):
            pass
        elif not (is_integer(v.dtype) and any((u.op_type, k) in INTEGER_WEIGHT_INPUTS for u, k in uses)):
            continue
        data = v.const if v.const is not None else None
        out[v.id] = data.size if data is not None else int(np.asarray(g.const_value(v)).size)
    return out


@dataclass
class ModelCost:
    """Per-node and total cost of a model's main graph, in execution order."""

    nodes: list[NodeCost] = field(default_factory=list)

    @property
    def params(self) -> int:
        return sum(n.params for n in self.nodes)

    @property
    def macs_poly(self) -> Poly:
        return sum((n.macs for n in self.nodes), Poly())

    @property
    def flops_poly(self) -> Poly:
        return sum((n.flops for n in self.nodes), Poly())

    @property
    def macs(self) -> int:
        """MACs with every symbol still free counted as 1 (a batch of one)."""
        return self.macs_poly.value()

    @property
    def flops(self) -> int:
        return self.flops_poly.value()

    def to_dict(self) -> dict:
        """As `inspect --json` gives them: numbers, or formulas in the free symbols."""
        return {"params": self.params, "macs": self.macs_poly.json(), "flops": self.flops_poly.json(),
                "flops_one": self.flops}  # free symbols counted as 1 (a batch of one): for ratios


def model_cost(model: Model, order: Optional[list[Node]] = None) -> ModelCost:
    """Costs of every node of the main graph (shapes are inferred first)."""
    infer_shapes(model)
    g = model.graph
    sizes = weights(g)
    charged: set[int] = set()
    out = ModelCost()
    for node in order if order is not None else g.toposort():
        params = 0
        for v in node.inputs:
            if v is not None and v.id in sizes and v.id not in charged:
                charged.add(v.id)
                params += sizes[v.id]
        macs, flops = node_cost(g, node)
        out.nodes.append(NodeCost(node.name, node.op_type, params, macs, flops))
    return out
