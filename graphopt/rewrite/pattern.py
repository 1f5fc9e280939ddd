"""Patterns over the IR and the matcher: Op trees whose leaves capture values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from graphopt.ir import Graph, Node, Value
from graphopt.ir.graph import STANDARD_DOMAINS


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
    domain: tuple[str, ...] = STANDARD_DOMAINS

    def __init__(self, op_type, *inputs, name=None, output=0, domain=STANDARD_DOMAINS):
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
