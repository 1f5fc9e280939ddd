"""Pattern rules and the driver that applies them (DESIGN §3).

A rule is a pattern, a side-effect-free `check(match)` that returns a reason when it declines,
and a `rewrite(match, builder)` that builds the replacement for the root's outputs. Only the
driver mutates the graph: it dispatches each node to the rules whose pattern is rooted at its
op type (no whole-graph rescans per rule), refuses matches whose inner values are used outside
the match or are graph outputs, replaces the root's outputs, removes what became dead, and
stamps the rule's name on every node it creates. Python rules and the pipeline language's user
rules both compile to these classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from graphopt.ir import Graph, Node, Value, make_attr

STANDARD = ("", "ai.onnx")


# ------------------------------------------------------------------------------ patterns
@dataclass(frozen=True)
class Var:
    """Any present value, captured under `name`."""

    name: str


@dataclass(frozen=True)
class Const:
    """A constant value (initializer or Constant output), captured with its data."""

    name: str


@dataclass(frozen=True)
class Opt:
    """An optional input: matches `inner`, or an absent input."""

    inner: Any


@dataclass(frozen=True)
class Absent:
    """An input that must be omitted."""


@dataclass(frozen=True)
class Op:
    """A node of `op_type` (one name or a tuple) whose inputs match `inputs` (trailing inputs
    the node has beyond them must be absent). `name` captures the node; `output` is which of its
    outputs the parent pattern reads."""

    op_type: Union[str, tuple[str, ...]]
    inputs: tuple = ()
    name: Optional[str] = None
    output: int = 0
    domain: tuple[str, ...] = STANDARD

    def __init__(self, op_type, *inputs, name=None, output=0, domain=STANDARD):
        object.__setattr__(self, "op_type", op_type)
        object.__setattr__(self, "inputs", tuple(inputs))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "output", output)
        object.__setattr__(self, "domain", domain)

    def op_types(self) -> tuple[str, ...]:
        return (self.op_type,) if isinstance(self.op_type, str) else tuple(self.op_type)


@dataclass
class Match:
    root: Node
    graph: Graph
    nodes: dict[str, Node] = field(default_factory=dict)
    values: dict[str, Optional[Value]] = field(default_factory=dict)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    matched: list[Node] = field(default_factory=list)  # root first

    def __getitem__(self, name: str):
        if name in self.nodes:
            return self.nodes[name]
        return self.values[name]


def match(pattern: Op, node: Node, graph: Graph) -> Optional[Match]:
    m = Match(node, graph)
    return m if _match_op(pattern, node, m) else None


def _match_op(p: Op, node: Node, m: Match) -> bool:
    if node.op_type not in p.op_types() or node.domain not in p.domain:
        return False
    if any(node in (x,) for x in m.matched):
        return False
    inputs = node.inputs
    if any(v is not None for v in inputs[len(p.inputs):]):
        return False
    m.matched.append(node)
    if p.name:
        m.nodes[p.name] = node
    for i, sub in enumerate(p.inputs):
        v = inputs[i] if i < len(inputs) else None
        if not _match_input(sub, v, m):
            return False
    return True


def _match_input(p, v: Optional[Value], m: Match) -> bool:
    if isinstance(p, Absent):
        return v is None
    if isinstance(p, Opt):
        if v is None:
            if isinstance(p.inner, (Var, Const)):
                m.values[p.inner.name] = None
            return True
        return _match_input(p.inner, v, m)
    if v is None:
        return False
    if isinstance(p, Var):
        return _bind(m, p.name, v)
    if isinstance(p, Const):
        data = m.graph.const_value(v)
        if data is None:
            return False
        m.consts[p.name] = data
        return _bind(m, p.name, v)
    if isinstance(p, Op):
        prod = m.graph.producer(v)
        if prod is None or prod.outputs.index(v) != p.output:
            return False
        return _match_op(p, prod, m)
    raise TypeError(f"not a pattern: {p!r}")


def _bind(m: Match, name: str, v: Value) -> bool:
    old = m.values.get(name)
    if old is not None and old is not v:
        return False  # the same name twice must be the same value
    m.values[name] = v
    return True


# ------------------------------------------------------------------------------ rules
class Rule:
    """Subclasses set `name`, `pattern`, and implement `check` and `rewrite`."""

    name: str = ""
    pattern: Op

    def check(self, m: Match) -> Optional[str]:
        """None to go ahead, or the reason this match is declined. Must not mutate anything."""
        return None

    def rewrite(self, m: Match, b: "Builder") -> Sequence[Optional[Value]]:
        """Values replacing the root's outputs, in order (None leaves that output alone)."""
        raise NotImplementedError


class Builder:
    """Creates the replacement nodes of one rewrite, stamped with the rule's name."""

    def __init__(self, graph: Graph, rule: Rule, root: Node):
        self.graph, self.rule, self.root = graph, rule, root
        self.created: list[Node] = []

    def op(self, op_type: str, inputs: Sequence[Optional[Value]], attrs: Optional[dict] = None, *,
           outputs: int = 1, domain: str = "") -> Union[Value, list[Value]]:
        base = self.root.name or self.root.op_type
        node = self.graph.add_node(op_type, inputs, [f"{base}_{self.rule.name}"] * outputs if outputs else [],
                                   attrs, domain=domain, name=f"{base}/{self.rule.name}")
        node.doc_string = f"created by graphopt rule {self.rule.name}"
        self.created.append(node)
        outs = node.outputs
        return outs[0] if outputs == 1 else outs

    def const(self, array, name: str = "const") -> Value:
        base = self.root.name or self.root.op_type
        return self.graph.add_constant(np.asarray(array), f"{base}_{self.rule.name}_{name}")


@dataclass
class NearMiss:
    rule: str
    node: str
    reason: str


class Driver:
    """Applies rules to a graph and its subgraphs until none fires (at most `max_rounds`)."""

    @classmethod
    def for_pass(cls, rules: Sequence[Rule], ctx) -> "Driver":
        """A driver that records near misses of the rules the user asked to explain."""
        return cls(rules, explain=ctx.explain, near_misses=ctx.near_misses)

    def __init__(self, rules: Sequence[Rule], *, max_rounds: int = 16, explain: Optional[set[str]] = None,
                 near_misses: Optional[list] = None):
        self.by_op: dict[str, list[Rule]] = {}
        # higher benefit first; equal benefits keep their order
        for r in sorted(rules, key=lambda r: -getattr(r, "benefit", 1)):
            for op in r.pattern.op_types():
                self.by_op.setdefault(op, []).append(r)
        self.max_rounds = max_rounds
        self.explain = explain or set()
        self.near_misses: list[NearMiss] = near_misses if near_misses is not None else []

    def applicable(self, graph: Graph) -> bool:
        """Whether any node of the graph (or its subgraphs) has an op type a rule is rooted at:
        lets a pass skip its set-up, such as shape inference, when no rule could fire."""
        return any(n.op_type in self.by_op for g in graph.walk() for n in g.nodes)

    def run(self, graph: Graph, filter_node: Optional[Callable[[Node], bool]] = None) -> dict[str, int]:
        fired: dict[str, int] = {}
        for g in list(graph.walk()):
            for _ in range(self.max_rounds):
                if not self._round(g, fired, filter_node):
                    break
        return fired

    def _round(self, g: Graph, fired: dict[str, int], filter_node) -> bool:
        changed = False
        for node in g.toposort():
            if node not in g or (filter_node and not filter_node(node)):
                continue
            for rule in self.by_op.get(node.op_type, ()):
                m = match(rule.pattern, node, g)
                if m is None or (filter_node and not all(filter_node(n) for n in m.matched)):
                    continue  # a scoped step rewrites only nodes inside its scope
                reason = _escapes(m) or rule.check(m)
                if reason:
                    if rule.name in self.explain:
                        self.near_misses.append(NearMiss(rule.name, node.name or node.op_type, reason))
                    continue
                if rule.name in self.explain:
                    self.near_misses.append(NearMiss(rule.name, node.name or node.op_type, "fired"))
                self._apply(rule, m, g)
                fired[rule.name] = fired.get(rule.name, 0) + 1
                changed = True
                break
        return changed

    @staticmethod
    def _apply(rule: Rule, m: Match, g: Graph) -> None:
        b = Builder(g, rule, m.root)
        try:
            replacements = rule.rewrite(m, b)
        except Exception:
            for n in reversed(b.created):  # leave no half-built replacement behind
                for v in n.outputs:
                    if v is not None:
                        for user, idx in v.uses:
                            g.set_input(user, idx, None)
                g.remove_node(n)
            raise
        for old, new in zip(m.root.outputs, replacements):
            if old is not None and new is not None:
                g.replace_all_uses(old, new)
        for n in m.matched:  # root first: inner nodes become dead after it goes
            if n in g and not any(v is not None and g.has_uses(v) for v in n.outputs):
                g.remove_node(n)


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


def attr(value) -> Any:
    """Shorthand for building attributes in rewrites."""
    return make_attr(value)
