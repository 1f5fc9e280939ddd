"""merge-transposes: Transpose(Transpose(x)) becomes one Transpose, or nothing if they cancel."""

from __future__ import annotations

from typing import Optional

from graphopt.ir import Graph
from graphopt.pipeline.base import Pass, PassContext, PassResult
from graphopt.rewrite.driver import Driver
from graphopt.rewrite.pattern import Match, Op, Var
from graphopt.rewrite.rule import Builder, Rule


class TransposePair(Rule):
    name = "transpose-pair"
    pattern = Op("Transpose", Op("Transpose", Var("x"), name="inner"), name="outer")

    def check(self, m: Match) -> Optional[str]:
        if m.nodes["inner"].attr("perm") is None or m.nodes["outer"].attr("perm") is None:
            return "a Transpose without perm reverses dims of unknown rank"
        return None

    def rewrite(self, m: Match, b: Builder):
        p1, p2 = m.nodes["inner"].attr("perm"), m.nodes["outer"].attr("perm")
        perm = [p1[i] for i in p2]  # out[i] = inner[p2[i]] = x[p1[p2[i]]]
        if perm == list(range(len(perm))):
            return [m.values["x"]]  # they cancel
        return [b.op("Transpose", [m.values["x"]], {"perm": perm})]


class MergeTransposes(Pass):
    name = "merge-transposes"
    summary = "cancel or merge consecutive Transposes"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        fired = Driver.for_pass([TransposePair()], ctx).run(graph, ctx.in_scope)
        return PassResult(bool(fired), {"merged": fired.get("transpose-pair", 0)})
