"""Patterns over the IR and the matcher: Op trees whose leaves capture values.

A match binds every name of its pattern: an `Op(..., name=...)` to its Node, a `Var` to its
Value, and a name under an absent `Opt` to None. Rules read the captures as `m["x"]` (whatever
was bound) or through the typed `m.node("conv")`, `m.value("x")` and `m.const("w")` (the value's
data when it folds to a constant).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Union

import numpy as np

from graphopt.ir import Graph, Node, Value
from graphopt.ir.graph import STANDARD_DOMAINS


@dataclass(frozen=True)
class Var:
    """Any present value, captured under `name` (the same name twice must be the same value)."""

    name: str


@dataclass(frozen=True)
class Opt:
    """An optional input: matches `inner`, or an absent input (its names are then bound to None)."""

    inner: Any


@dataclass(frozen=True)
class Absent:
    """An input that must be omitted."""


@dataclass(frozen=True)
class Op:
    """A node of `op_type` (one name or a tuple) whose inputs match `inputs` (trailing inputs
    the node has beyond them must be absent). `name` captures the node; `output` is which of its
    outputs the parent pattern reads. `commute=True` (two inputs only) also matches the node's
    inputs in the other order."""

    op_type: Union[str, tuple[str, ...]]
    inputs: tuple = ()
    name: Optional[str] = None
    output: int = 0
    domain: tuple[str, ...] = STANDARD_DOMAINS
    commute: bool = False

    def __init__(self, op_type, *inputs, name=None, output=0, domain=STANDARD_DOMAINS, commute=False):
        if commute and len(inputs) != 2:
            raise ValueError(f"Op({op_type!r}, commute=True) needs exactly two inputs, not {len(inputs)}")
        object.__setattr__(self, "op_type", op_type)
        object.__setattr__(self, "inputs", tuple(inputs))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "output", output)
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "commute", commute)

    def op_types(self) -> tuple[str, ...]:
        return (self.op_type,) if isinstance(self.op_type, str) else tuple(self.op_type)


Capture = Union[Node, Value, None]


@dataclass(frozen=True)
class RewriteContext:
    """What a rule may consult besides its match: the graph being rewritten (the main graph or a
    subgraph) and the model's opset, with the constant and shape helpers rules need."""

    graph: Graph
    opset: int

    def fold(self, v: Optional[Value]) -> Optional[np.ndarray]:
        """`v`'s data if it is a constant or computed from constants only, else None."""
        from graphopt.analysis.constants import fold_value

        return None if v is None else fold_value(self.graph, v, self.opset)

    def const(self, v: Optional[Value]) -> Optional[np.ndarray]:
        """`v`'s data if it is an initializer or a Constant output (no folding), else None."""
        return self.graph.const_value(v)

    def static_shape(self, v: Optional[Value]) -> Optional[tuple[int, ...]]:
        """`v`'s shape if every dim is a known integer, else None."""
        from graphopt.analysis.shapes import static_shape

        return None if v is None else static_shape(v)


@dataclass
class Match:
    """One way a pattern matched at `root`: its captures by name and the matched nodes."""

    root: Node
    ctx: RewriteContext
    captures: dict[str, Capture] = field(default_factory=dict)
    matched: list[Node] = field(default_factory=list)  # root first, each node before its inputs' producers
    _consts: dict[str, Optional[np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def graph(self) -> Graph:
        return self.ctx.graph

    def __getitem__(self, name: str) -> Capture:
        return self.captures[name]

    def __contains__(self, name: str) -> bool:
        return name in self.captures

    def node(self, name: str) -> Node:
        c = self.captures[name]
        if not isinstance(c, Node):
            raise TypeError(f"capture {name!r} is {c!r}, not a node")
        return c

    def value(self, name: str) -> Optional[Value]:
        """The value captured as `name` (None if it was an absent optional input)."""
        c = self.captures[name]
        if isinstance(c, Node):
            raise TypeError(f"capture {name!r} is a node, not a value")
        return c

    def const(self, name: str) -> Optional[np.ndarray]:
        """The data of the value captured as `name` when it folds to a constant, else None."""
        if name not in self._consts:
            self._consts[name] = self.ctx.fold(self.value(name))
        return self._consts[name]


def matches(pattern: Op, node: Node, ctx: RewriteContext) -> Iterator[Match]:
    """Every distinct way `pattern` matches with its root at `node` (several only when a
    commutative Op matches both ways), the inputs in written order first."""
    seen = set()
    for caps, matched in _match_op(pattern, node, ctx.graph, {}, ()):
        key = (tuple(n.id for n in matched), tuple(sorted((k, id(v)) for k, v in caps.items())))
        if key not in seen:
            seen.add(key)
            yield Match(node, ctx, dict(caps), list(matched))


def match(pattern: Op, node: Node, ctx: RewriteContext) -> Optional[Match]:
    """The first match of `pattern` at `node`, or None."""
    return next(matches(pattern, node, ctx), None)


# The matcher is a backtracking search over immutable partial states: (captures, matched nodes).
def _match_op(p: Op, node: Node, g: Graph, caps: dict, matched: tuple) -> Iterator[tuple[dict, tuple]]:
    if node.op_type not in p.op_types() or node.domain not in p.domain or node in matched:
        return
    inputs = node.inputs
    if any(v is not None for v in inputs[len(p.inputs):]):
        return
    matched = matched + (node,)
    if p.name:
        caps = _bind(caps, p.name, node)
        if caps is None:
            return
    orders = (p.inputs, p.inputs[::-1]) if p.commute else (p.inputs,)
    for pats in orders:
        yield from _match_inputs(pats, inputs, 0, g, caps, matched)


def _match_inputs(pats: tuple, inputs: list, i: int, g: Graph, caps: dict, matched: tuple):
    if i == len(pats):
        yield caps, matched
        return
    v = inputs[i] if i < len(inputs) else None
    for caps2, matched2 in _match_input(pats[i], v, g, caps, matched):
        yield from _match_inputs(pats, inputs, i + 1, g, caps2, matched2)


def _match_input(p, v: Optional[Value], g: Graph, caps: dict, matched: tuple):
    if isinstance(p, Absent):
        if v is None:
            yield caps, matched
        return
    if isinstance(p, Opt):
        if v is None:
            for name in _names(p.inner):
                caps = _bind(caps, name, None)
                if caps is None:
                    return
            yield caps, matched
            return
        yield from _match_input(p.inner, v, g, caps, matched)
        return
    if v is None:
        return
    if isinstance(p, Var):
        caps = _bind(caps, p.name, v)
        if caps is not None:
            yield caps, matched
        return
    if isinstance(p, Op):
        prod = g.producer(v)
        if prod is None or prod.outputs.index(v) != p.output:
            return
        yield from _match_op(p, prod, g, caps, matched)
        return
    raise TypeError(f"not a pattern: {p!r}")


def _bind(caps: dict, name: str, c: Capture) -> Optional[dict]:
    """`caps` with `name` bound to `c`, or None if it is already bound to something else."""
    if name in caps:
        return caps if caps[name] is c else None
    return {**caps, name: c}


def _names(p) -> list[str]:
    if isinstance(p, Var):
        return [p.name]
    if isinstance(p, Opt):
        return _names(p.inner)
    if isinstance(p, Op):
        return ([p.name] if p.name else []) + [n for sub in p.inputs for n in _names(sub)]
    return []
