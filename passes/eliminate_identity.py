"""eliminate-identity: Identity nodes forward their input to every reader."""

from __future__ import annotations

from typing import Optional

from graphopt.rewrite import Builder, Match, Op, Rule, RulePass, Var, forward_reason


class RemoveIdentity(Rule):
    name = "remove-identity"
    pattern = Op("Identity", Var("x"))

    def check(self, m: Match) -> Optional[str]:
        return forward_reason(m, m.value("x"))

    def rewrite(self, m: Match, b: Builder):
        return [m["x"]]


class EliminateIdentity(RulePass):
    name = "eliminate-identity"
    summary = "remove Identity nodes, keeping graph output names and subgraph reads intact"
    rules = [RemoveIdentity()]
    shapes = False
    stat = "removed"
