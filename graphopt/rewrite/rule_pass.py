"""RulePass: a pass that is a list of rules applied by the driver."""

from __future__ import annotations

from typing import ClassVar, Optional, Sequence

from graphopt.ir import Graph
from graphopt.pipeline.base import Pass, PassContext, PassResult
from graphopt.rewrite.driver import Driver
from graphopt.rewrite.rule import Rule


class RulePass(Pass):
    """Applies `rules` to the graph and its subgraphs, within the step's scope, to a fixed point.

    Subclasses set `name`, `summary` and `rules` (every rule it may apply: `graphopt passes`
    lists their names for --explain); `shapes = False` skips shape inference (for rules that read
    no inferred shape or type); `stat` names the one statistic counting every firing (default: one
    count per rule name). `active_rules` (rules selected by options), `applicable` and `stats`
    may be overridden.
    """

    rules: Sequence[Rule] = ()  # a class attribute; user rule passes set it per instance
    shapes: ClassVar[bool] = True
    stat: ClassVar[Optional[str]] = None

    @classmethod
    def of(cls, *rules: Rule, name: Optional[str] = None, summary: str = "") -> type["RulePass"]:
        """A RulePass class applying `rules` (named after the first rule unless `name` is given):
        how a rule joins a pipeline list or the registry."""
        rule_name = name or rules[0].name
        return type(f"RulePass[{rule_name}]", (cls,), {
            "name": rule_name, "summary": summary or (type(rules[0]).__doc__ or f"rule {rule_name}").strip().splitlines()[0],
            "rules": list(rules), "__module__": type(rules[0]).__module__})

    def active_rules(self) -> Sequence[Rule]:
        """The rules this run applies (a pass whose options select rules overrides this)."""
        return self.rules

    def applicable(self, graph: Graph, driver: Driver) -> bool:
        """Whether any rule could fire; the pass does nothing (not even shape inference) if not."""
        return driver.applicable(graph)

    def stats(self, fired: dict[str, int]) -> dict:
        if self.stat:
            return {self.stat: sum(fired.values())}
        return dict(sorted(fired.items()))

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        driver = Driver.for_pass(self.active_rules(), ctx)
        if not self.applicable(graph, driver):
            return PassResult(False, self.stats({}))
        if self.shapes:
            from graphopt.analysis.shapes import infer_shapes

            infer_shapes(ctx.model)
        fired = driver.run(graph, ctx.in_scope)
        return PassResult(bool(fired), self.stats(fired))
