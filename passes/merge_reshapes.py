"""merge-reshapes: consecutive Reshape/Flatten/Squeeze/Unsqueeze become one Reshape.

A Transpose that moves only dims of size 1 keeps the order of the elements in memory: it is a
reshape too, and merges with a reshape before or after it (`[B,1,1,C] -> [B,C,1,1] -> [B,C]`).

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
LIKE_RESHAPES = RESHAPES + ("Transpose",)  # a Transpose where it keeps the memory order


def keeps_memory_order(dims: Optional[list], perm) -> bool:
    """Whether a Transpose by `perm` of a tensor of `dims` moves only dims that are statically 1
    (the others keep their relative order), so that it is a reshape."""
    if dims is None or perm is None or len(perm) != len(dims):
        return False
    moved = [p for p in perm if dims[p] != 1]
    return moved == sorted(moved)


class ReshapeChain(Rule):
    name = "reshape-chain"
    pattern = Op(LIKE_RESHAPES, Op(LIKE_RESHAPES, Var("x"), Opt(Var("inner_arg")), name="inner"),
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
        inner, outer = m.node("inner"), m.node("outer")
        if inner.op_type == outer.op_type == "Transpose":
            return "two Transposes: merge-transposes merges them"
        for t in (inner, outer):
            if t.op_type == "Transpose" and not keeps_memory_order(engine_for(m.graph).dims(t.inputs[0]), t.attr("perm")):
                return f"Transpose {t.label} moves dims that are not statically 1: it is not a reshape"
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
    summary = ("merge consecutive Reshape/Flatten/Squeeze/Unsqueeze (and Transposes that move only dims of size 1) "
               "into one Reshape (allowzero honoured)")
    rules = [ReshapeChain()]
    stat = "merged"

    def run(self, graph, ctx):
        with engine_scope():  # rewrites keep what every existing value computes
            return super().run(graph, ctx)
