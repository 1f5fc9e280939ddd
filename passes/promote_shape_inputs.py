"""promote-shape-inputs: every input TensorRT needs as a build-time constant (Reshape/Expand
shape, Tile repeats, Slice parameters, Resize scales/sizes, Pad pads, Reduce/Squeeze axes, TopK k,
OneHot depth, Dropout training flag) becomes an initializer when it can be computed before run
time: from constants, from static dims, or, for Reshape and Expand, with run-time dims kept
dynamic as 0/-1/1. Values come only from the model's declared shapes (or --input-shape), never
from example or calibration data, so no batch size is baked in.

One rule, promote-input, per build-time input of each op: it replaces that input of the node
in place.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from graphopt.analysis.symbolic import engine_for, engine_scope, shape_elements, static_value
from graphopt.lint.trt_inputs import BUILD_TIME_INPUTS
from graphopt.rewrite import Builder, Match, Op, Opt, Rule, RulePass, Var


class PromoteInput(Rule):
    """Input `index` of an `op` node becomes an initializer when its value is known before run time."""

    name = "promote-input"

    def __init__(self, op: str, index: int):
        self.index = index
        # input `index` present, any others
        self.pattern = Op(op, *[Var(f"in{i}") if i == index else Opt(Var(f"in{i}")) for i in range(6)])

    def data(self, m: Match) -> Optional[np.ndarray]:
        data = m.const(f"in{self.index}")  # folded once per match: check and rewrite share it
        return static_value(m.graph, m.value(f"in{self.index}")) if data is None else data

    def check(self, m: Match) -> Optional[str]:
        v = m.value(f"in{self.index}")
        if v.const is not None and not v.is_graph_input:
            return f"input {self.index} is already an initializer"
        if self.data(m) is None:
            return f"input {self.index} is not known before run time"
        return None

    def rewrite(self, m: Match, b: Builder):
        b.set_input(m.root, self.index, b.const(np.asarray(self.data(m)), f"in{self.index}"))


class PromoteShapeInputs(RulePass):
    name = "promote-shape-inputs"
    summary = "make the inputs TensorRT needs at build time (shapes, axes, pads, k, ...) initializers"
    rules = [PromoteInput(op, i) for op, idx in BUILD_TIME_INPUTS.items() for i in idx]
    stat = "promoted"

    def run(self, graph, ctx):
        with engine_scope():
            result = super().run(graph, ctx)
            left = [f"{n.label}: {why}" for n, why in computed_shapes_left(graph)]
        result.stats["computed_shapes_left"] = len(left)
        if left:
            result.stats["left"] = left[:MAX_NAMED] + ([f"... {len(left) - MAX_NAMED} more"] if len(left) > MAX_NAMED else [])
        return result


MAX_NAMED = 20


def computed_shapes_left(graph):
    """(node, reason) for every Reshape/Expand whose shape is still computed at run time."""
    out = []
    for g in graph.walk():
        for n in g.nodes:
            if n.op_type not in ("Reshape", "Expand") or len(n.inputs) < 2 or n.inputs[1] is None:
                continue
            if g.const_value(n.inputs[1]) is not None:
                continue
            out.append((n, why_computed(g, n)))
    return out


def why_computed(g, n) -> str:
    elems = shape_elements(g, n.inputs[1])
    if elems is None:
        p = g.producer(n.inputs[1])
        return f"the shape depends on data or on an op the shape engine does not follow ({p.op_type if p else 'graph input'})"
    dims = engine_for(g).dims(n.inputs[0])
    unknown = [e for i, e in enumerate(elems) if not isinstance(e, int)
               and not (dims is not None and (i < len(dims) and dims[i] == e if n.op_type == "Reshape"
                                              else e in dims))]
    if n.op_type == "Expand":
        return f"run-time dims not equal to the input's aligned dims: {unknown}"
    if len(unknown) > 1:
        return f"{len(unknown)} run-time dims are not copies of the input's dims at their positions: {unknown}"
    if unknown and -1 in elems:
        return "a run-time dim beside a literal -1"
    if unknown:
        return "a -1 for the run-time dim would sit beside a copied dim or a literal 0 (not inferable in an empty batch)"
    return "allowzero with a literal 0 and a copied dim"
