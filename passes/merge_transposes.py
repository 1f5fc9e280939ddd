"""merge-transposes: Transpose(Transpose(x)) becomes one Transpose, or nothing if they cancel."""

from __future__ import annotations

from typing import Optional

from graphopt.rewrite import Builder, Match, Op, Rule, RulePass, Var


class TransposePair(Rule):
    name = "transpose-pair"
    pattern = Op("Transpose", Op("Transpose", Var("x"), name="inner"), name="outer")

    def check(self, m: Match) -> Optional[str]:
        if m.node("inner").attr("perm") is None or m.node("outer").attr("perm") is None:
            return "a Transpose without perm reverses dims of unknown rank"
        return None

    def rewrite(self, m: Match, b: Builder):
        p1, p2 = m.node("inner").attr("perm"), m.node("outer").attr("perm")
        perm = [p1[i] for i in p2]  # out[i] = inner[p2[i]] = x[p1[p2[i]]]
        if perm == list(range(len(perm))):
            return [m["x"]]  # they cancel
        return [b.op("Transpose", [m["x"]], {"perm": perm})]


class MergeTransposes(RulePass):
    name = "merge-transposes"
    summary = "cancel or merge consecutive Transposes"
    rules = [TransposePair()]
    shapes = False
    stat = "merged"
