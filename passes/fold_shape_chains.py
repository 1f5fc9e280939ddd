"""fold-shape-chains: shape computations feeding Reshape/Expand/Slice/Tile/Resize/
ConstantOfShape become constants.

Fully static chains become plain constants. A Reshape shape with run-time dims becomes a
constant using 0 (copy the input's dim at that position; allowzero is honoured: it is switched
to 0 only when the new shape has no literal zero) and at most one -1. An Expand shape with
run-time dims keeps them with 1 where they equal the input's aligned dim. What cannot be
expressed exactly is left alone.

Each is a rule that edits the node in place (its shape input becomes a constant; the chain that
computed it is left to dce): fold-reshape-shape, fold-expand-shape, fold-slice-dims (Slice
starts/ends equal to the data's run-time dim become INT64_MAX), and fold-static-input (one rule
per shape-like input of Slice, Tile, ConstantOfShape, Resize and Range). Dims come from the
symbolic shape engine (analysis/symbolic.Engine), which refines what onnx's inference lost.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from graphopt.analysis.constants import INT64_MAX
from graphopt.analysis.symbolic import (
    engine_for,
    engine_scope,
    expand_target,
    reshape_target,
    shape_elements,
    static_value,
)
from graphopt.ir import Graph
from graphopt.rewrite import Builder, Driver, Match, Op, Opt, Rule, RulePass, Var

# op type -> indices of its shape-like inputs that must be all ints to become constant
_STATIC_INPUTS = {"Slice": (1, 2, 3, 4), "Tile": (1,), "ConstantOfShape": (0,), "Resize": (3,),
                  "Range": (0, 1, 2)}


def _has_computed_shape_input(g: Graph, node) -> bool:
    indices = (1,) if node.op_type in ("Reshape", "Expand") else _STATIC_INPUTS.get(node.op_type, ())
    ins = node.inputs
    return any(i < len(ins) and ins[i] is not None and g.const_value(ins[i]) is None for i in indices)


def _computed(m: Match, name: str, what: str = "the shape") -> Optional[str]:
    """Why input `name` (present) is not a computed value, or None."""
    if m.ctx.const(m.value(name)) is not None:
        return f"{what} is already a constant"
    return None


class ReshapeShape(Rule):
    name = "fold-reshape-shape"
    pattern = Op("Reshape", Var("data"), Var("shape"))

    @staticmethod
    def target(m: Match) -> Optional[tuple[list[int], int]]:
        elems = shape_elements(m.graph, m.value("shape"))
        return None if elems is None else reshape_target(elems, m.value("data"), m.root.attr("allowzero", 0),
                                                         engine_for(m.graph).dims(m.value("data")))

    def check(self, m: Match) -> Optional[str]:
        reason = _computed(m, "shape")
        if reason:
            return reason
        target = self.target(m)
        if target is None:
            return "the shape cannot be written as a constant with 0 and one -1"
        if target[1] != m.root.attr("allowzero", 0) and m.ctx.opset < 14:
            return "the constant shape needs allowzero changed, which needs opset 14"
        return None

    def rewrite(self, m: Match, b: Builder):
        values, allowzero = self.target(m)
        if allowzero != m.root.attr("allowzero", 0):
            b.set_attr(m.root, "allowzero", allowzero)
        b.set_input(m.root, 1, b.const(np.array(values, np.int64), "shape"))


class ExpandShape(Rule):
    name = "fold-expand-shape"
    pattern = Op("Expand", Var("data"), Var("shape"))

    @staticmethod
    def target(m: Match) -> Optional[list[int]]:
        elems = shape_elements(m.graph, m.value("shape"))
        return None if elems is None else expand_target(elems, m.value("data"), engine_for(m.graph).dims(m.value("data")))

    def check(self, m: Match) -> Optional[str]:
        return _computed(m, "shape") or (None if self.target(m) is not None else
                                         "the shape cannot be written as a constant")

    def rewrite(self, m: Match, b: Builder):
        b.set_input(m.root, 1, b.const(np.array(self.target(m), np.int64), "shape"))


class StaticInput(Rule):
    """Input `index` of an `op` node, computed from static dims and constants, becomes a constant."""

    name = "fold-static-input"

    def __init__(self, op: str, index: int):
        self.index = index
        # input `index` present, any others
        self.pattern = Op(op, *[Var(f"in{i}") if i == index else Opt(Var(f"in{i}")) for i in range(6)])

    def check(self, m: Match) -> Optional[str]:
        name = f"in{self.index}"
        reason = _computed(m, name, f"input {self.index}")
        if reason:
            return reason
        if static_value(m.graph, m.value(name)) is None:
            return f"input {self.index} is not known before run time"
        return None

    def rewrite(self, m: Match, b: Builder):
        b.set_input(m.root, self.index, b.const(static_value(m.graph, m.value(f"in{self.index}")), f"in{self.index}"))


class SliceDims(Rule):
    """Slice starts/ends with run-time dims: an element equal to the data's dim on its axis
    becomes INT64_MAX (ONNX clamps both to the dim, for either step sign)."""

    name = "fold-slice-dims"
    pattern = Op("Slice", Var("data"), Var("starts"), Var("ends"), Opt(Var("axes")), Opt(Var("steps")))

    @staticmethod
    def targets(m: Match):
        g = m.graph
        eng = engine_for(g)
        dims = eng.dims(m.value("data"))
        if dims is None:
            return None
        rank = len(dims)
        starts, ends = shape_elements(g, m.value("starts")), shape_elements(g, m.value("ends"))
        if starts is None or ends is None or len(starts) != len(ends):
            return None
        if m["axes"] is None:
            axes = list(range(len(starts)))
        else:
            a = static_value(g, m.value("axes"))
            if a is None:
                return None
            axes = [int(x) % rank for x in np.asarray(a).ravel()]
        out = []
        for elems in (starts, ends):
            vals = []
            for e, ax in zip(elems, axes):
                if isinstance(e, int):
                    vals.append(e)
                elif ax < rank and dims[ax] == e:
                    vals.append(INT64_MAX)
                else:
                    return None
            out.append(vals)
        return out

    def check(self, m: Match) -> Optional[str]:
        g = m.graph
        if g.const_value(m.value("starts")) is not None and g.const_value(m.value("ends")) is not None:
            return "starts and ends are already constants"
        for k in ("axes", "steps"):
            if m[k] is not None and static_value(g, m.value(k)) is None:
                return f"{k} is not known before run time"
        if self.targets(m) is None:
            return "a start or end is a run-time value other than the data's dim on its axis"
        return None

    def rewrite(self, m: Match, b: Builder):
        starts, ends = self.targets(m)
        g = m.graph
        for i, name, vals in ((1, "starts", starts), (2, "ends", ends)):
            if g.const_value(m.value(name)) is None:
                dt = np.int32 if m.value(name).dtype == 6 else np.int64
                vals = [min(v, np.iinfo(dt).max) for v in vals]
                b.set_input(m.root, i, b.const(np.array(vals, dt), name))


class FoldShapeChains(RulePass):
    name = "fold-shape-chains"
    summary = "turn Shape/Gather/Concat/... chains feeding Reshape, Expand, Slice, ... into constants"
    rules = [ReshapeShape(), ExpandShape(), SliceDims()] + [StaticInput(op, i) for op, idx in _STATIC_INPUTS.items() for i in idx]
    stat = "inputs_folded"

    def run(self, graph, ctx):
        with engine_scope():  # its rules only replace inputs by equal constants
            return super().run(graph, ctx)

    def applicable(self, graph: Graph, driver: Driver) -> bool:
        # nothing to fold: skip shape inference
        return any(_has_computed_shape_input(g, n) for g in graph.walk() for n in g.nodes)
