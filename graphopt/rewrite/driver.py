"""The rewrite driver: the only code that applies rules to a graph. It dispatches nodes to the
rules rooted at their op type, refuses matches whose inner values escape, replaces the root's
outputs and removes what became dead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from graphopt.ir import Graph, Node
from graphopt.rewrite.pattern import Match, RewriteContext, matches
from graphopt.rewrite.rule import Builder, Rule


@dataclass
class NearMiss:
    rule: str
    node: str
    reason: str  # "fired", or why the rule declined


class Driver:
    """Applies rules to a graph and its subgraphs until none fires (at most `max_rounds`)."""

    @classmethod
    def for_pass(cls, rules: Sequence[Rule], ctx) -> "Driver":
        """A driver for a pass's run: the model's opset, and near misses recorded for the rules
        the user asked to explain."""
        return cls(rules, opset=ctx.opset, explain=ctx.explain, near_misses=ctx.near_misses)

    def __init__(self, rules: Sequence[Rule], *, opset: int, max_rounds: int = 16,
                 explain: Optional[set[str]] = None, near_misses: Optional[list] = None):
        self.by_op: dict[str, list[Rule]] = {}
        # higher benefit first; equal benefits keep their order
        for r in sorted(rules, key=lambda r: -r.benefit):
            for op in r.pattern.op_types():
                self.by_op.setdefault(op, []).append(r)
        self.opset = opset
        self.max_rounds = max_rounds
        self.explain = explain or set()
        self.near_misses: list[NearMiss] = near_misses if near_misses is not None else []
        self._declined: set = set()  # (rule, graph, node, reason) recorded in this run: once, not every round

    def applicable(self, graph: Graph) -> bool:
        """Whether any node of the graph (or its subgraphs) has an op type a rule is rooted at:
        lets a pass skip its set-up, such as shape inference, when no rule could fire."""
        return any(n.op_type in self.by_op for g in graph.walk() for n in g.nodes)

    def run(self, graph: Graph, filter_node: Optional[Callable[[Node], bool]] = None) -> dict[str, int]:
        """Apply the rules; how many times each fired, by rule name. `filter_node` (a pass's
        scope) must accept every node of a match for it to fire."""
        fired: dict[str, int] = {}
        self._declined.clear()
        for g in list(graph.walk()):
            ctx = RewriteContext(g, self.opset)
            for _ in range(self.max_rounds):
                if not self._round(ctx, fired, filter_node):
                    break
        return fired

    def _round(self, ctx: RewriteContext, fired: dict[str, int], filter_node) -> bool:
        g, changed = ctx.graph, False
        for node in g.toposort():
            if node not in g or (filter_node and not filter_node(node)):
                continue
            for rule in self.by_op.get(node.op_type, ()):
                if not self._try(rule, node, ctx, filter_node):
                    continue
                fired[rule.name] = fired.get(rule.name, 0) + 1
                changed = True
                if node not in g:
                    break  # replaced; a rewrite in place lets the remaining rules try the node too
        return changed

    def _try(self, rule: Rule, node: Node, ctx: RewriteContext, filter_node) -> bool:
        """Fire `rule` at `node` with the first of its matches that passes, or record why none did."""
        reasons: list[str] = []
        for m in matches(rule.pattern, node, ctx):
            if filter_node and not all(filter_node(n) for n in m.matched):
                continue  # a scoped step rewrites only nodes inside its scope
            reason = _legacy_broadcast(m) or _escapes(m) or rule.check(m)
            if reason:
                reasons.append(reason)
                continue
            if rule.name in self.explain:
                self.near_misses.append(NearMiss(rule.name, node.name or node.op_type, "fired"))
            self._apply(rule, m)
            return True
        if reasons and rule.name in self.explain:
            distinct = list(dict.fromkeys(reasons))
            text = distinct[0] + "".join(f"; in another operand order: {r}" for r in distinct[1:])
            key = (rule.name, id(ctx.graph), node.id, text)
            if key not in self._declined:
                self._declined.add(key)
                self.near_misses.append(NearMiss(rule.name, node.name or node.op_type, text))
        return False

    @staticmethod
    def _apply(rule: Rule, m: Match) -> None:
        g = m.graph
        b = Builder(rule, m)
        try:
            replacements = rule.rewrite(m, b)
        except Exception:
            b.undo()  # leave no half-built replacement behind
            raise
        if replacements is None:  # edited in place: the root stays
            dead = m.matched[1:]
        else:
            for old, new in zip(m.root.outputs, replacements):
                if old is not None and new is not None:
                    g.replace_all_uses(old, new)
            dead = m.matched
        for n in dead:  # root first: inner nodes become dead after it goes
            if n in g and not any(v is not None and g.has_uses(v) for v in n.outputs):
                g.remove_node(n)
        b.finish()  # created nodes take the names of the layers they replace, now free


def _legacy_broadcast(m: Match) -> Optional[str]:
    """Before opset 7, Add/Mul/... and Gemm broadcast by attributes (`broadcast=1, axis=k` lines a
    1-D operand up with axis k): rules reason with today's numpy-style broadcasting, so a match
    that touches such a node is refused (raise-opset converts it)."""
    for n in m.matched:
        if "broadcast" in n.attrs:
            return f"{n.op_type} {n.label} uses pre-opset-7 broadcast attributes (run raise-opset first)"
    return None


def _escapes(m: Match) -> Optional[str]:
    """A reason to refuse if a value inside the match is read outside it."""
    inside = {n.id for n in m.matched}
    for n in m.matched[1:]:
        for v in n.outputs:
            if v is None:
                continue
            if v.is_graph_output:
                return f"{v.name!r} inside the match is a graph output"
            for user, _ in v.uses:
                if user.id not in inside:
                    return f"{v.name!r} inside the match is also read by {user.op_type} {user.name!r}"
    return None
