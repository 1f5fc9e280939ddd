"""merge-reshapes: consecutive Reshape/Flatten/Squeeze/Unsqueeze become one Reshape.

The merged shape is the outer Reshape's constant shape when that does not copy dims from the
intermediate (allowzero honoured), else the chain's output shape from shape inference, with
run-time dims as 0 (copied from the input) or one -1.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from graphopt.analysis.symbolic import engine_for, engine_scope, reshape_target
from graphopt.rewrite import Builder, Match, Op, Opt, Rule, RulePass, Var

RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


class ReshapeChain(Rule):
    name = "reshape-chain"
    pattern = Op(RESHAPES, Op(RESHAPES, Var("x"), Opt(Var("inner_arg")), name="inner"),
                 Opt(Var("outer_arg")), name="outer")

    def target(self, m: Match) -> Optional[tuple[list[int], int]]:
        outer = m.node("outer")
        if outer.op_type == "Reshape":
            shape = m.ctx.const(m.value("outer_arg"))
            allowzero = outer.attr("allowzero", 0)
            if shape is not None and (allowzero or not np.any(shape == 0)):
                return [int(d) for d in shape], allowzero
        engine = engine_for(m.graph)  # dims refined symbolically where inference lost them
        elems = engine.dims(outer.outputs[0])
        if elems is None:
            return None
        if any(e == 0 for e in elems):
            return (list(elems), 1) if all(isinstance(e, int) for e in elems) else None
        return reshape_target(elems, m["x"], 0, engine.dims(m["x"]))

    def check(self, m: Match) -> Optional[str]:
        target = self.target(m)
        if target is None:
            return "the merged shape cannot be written as one constant"
        if target[1] and m.ctx.opset < 14:
            return "allowzero needs opset 14"
        return None

    def rewrite(self, m: Match, b: Builder):
        shape, allowzero = self.target(m)
        attrs = {"allowzero": 1} if allowzero else None
        return [b.op("Reshape", [m["x"], b.const(np.array(shape, np.int64), "shape")], attrs)]


class MergeReshapes(RulePass):
    name = "merge-reshapes"
    summary = "merge consecutive Reshape/Flatten/Squeeze/Unsqueeze into one Reshape (allowzero honoured)"
    rules = [ReshapeChain()]
    stat = "merged"

    def run(self, graph, ctx):
        with engine_scope():  # rewrites keep what every existing value computes
            return super().run(graph, ctx)
