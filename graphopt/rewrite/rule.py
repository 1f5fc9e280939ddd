"""A rewrite rule: a pattern, a side-effect-free `check` that names why it declines, and a
`rewrite` that builds the replacement through a Builder (which stamps the rule on new nodes and
undoes everything if the rewrite raises).

Rules are stateless: what a run knows (the graph, the opset) arrives in the match as `m.ctx`, so
a pass lists its rule instances once, as a class attribute.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from graphopt.ir import Graph, Node, Value
from graphopt.rewrite.pattern import Match, Op


class Rule:
    """Subclasses set `name` and `pattern` (and optionally `benefit`: higher is tried first) and
    implement `check` and `rewrite`."""

    name: str = ""
    pattern: Op
    benefit: int = 1

    def check(self, m: Match) -> Optional[str]:
        """None to go ahead, or the reason this match is declined. Must not mutate anything."""
        return None

    def rewrite(self, m: Match, b: "Builder") -> Optional[Sequence[Optional[Value]]]:
        """Values replacing the root's outputs, in order (None leaves that output alone), or None
        when the rewrite edited matched nodes in place (`b.set_input`, `b.set_attr`)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<rule {self.name}>"


def forward_reason(m: Match, value: Value, output: int = 0) -> Optional[str]:
    """For rules whose rewrite returns `value` in place of the root's output `output` and drops
    the root: why that cannot be done without a new node, or None."""
    return m.graph.why_not_bypass(m.root, value, output)


class Builder:
    """Creates the replacement nodes of one rewrite, stamped with the rule's name, and records
    every change so that `undo` can take a failed rewrite back."""

    def __init__(self, rule: Rule, m: Match):
        self.graph: Graph = m.graph
        self.rule, self.root, self.match = rule, m.root, m
        self.created: list[Node] = []
        self.constants: list[Value] = []
        self._undo: list[Callable[[], None]] = []
        self._names: dict[int, str] = {}  # created node id -> the name of the layer it replaces

    def _layer_replaced(self, op_type: str, domain: str) -> Optional[Node]:
        """The matched node a new node stands in for: one of the same op (the conv that a
        BatchNorm folds into), or None."""
        same = [n for n in self.match.matched if n.op_type == op_type and n.domain == domain]
        taken = set(self._names.values())
        for n in same:
            if n.name and n.name not in taken:
                return n
        return None

    def finish(self) -> None:
        """After the replaced nodes are gone: a created node takes the name of the layer it
        replaces (`/0/0.1/Conv` for a conv a BatchNorm folded into, not
        `/0/0.1/BatchNormalization/bn-into-conv`) when that name is free; names stay unique."""
        scope = self.graph.scope
        for node in self.created:
            wanted = self._names.get(node.id)
            if wanted and wanted not in scope.node_names and node in self.graph:
                scope.release_node(node.name)
                node.name = scope.claim_node(wanted)

    def op(self, op_type: str, inputs: Sequence[Optional[Value]], attrs: Optional[dict] = None, *,
           outputs: int = 1, domain: str = "") -> Union[Value, list[Value]]:
        base = self.root.name or self.root.op_type
        node = self.graph.add_node(op_type, inputs, [f"{base}_{self.rule.name}"] * outputs if outputs else [],
                                   attrs, domain=domain, name=f"{base}/{self.rule.name}")
        node.doc_string = f"created by graphopt rule {self.rule.name}"
        self.created.append(node)
        donor = self._layer_replaced(op_type, domain)
        if donor is not None and donor.name:
            self._names[node.id] = donor.name
        outs = node.outputs
        return outs[0] if outputs == 1 else outs

    def const(self, array, name: str = "const") -> Value:
        base = self.root.name or self.root.op_type
        v = self.graph.add_constant(np.asarray(array), f"{base}_{self.rule.name}_{name}")
        self.constants.append(v)
        return v

    def set_input(self, node: Node, index: int, value: Optional[Value]) -> None:
        """Rewire input `index` of a matched node (an in-place rewrite)."""
        self._check_matched(node)
        g, n_inputs = self.graph, node.n_inputs
        old = node.inputs[index] if index < n_inputs else None

        def undo():
            g.set_input(node, index, old)
            node.n_inputs = n_inputs

        g.set_input(node, index, value)
        self._undo.append(undo)

    def set_attr(self, node: Node, name: str, value: Any) -> None:
        """Set (None: remove) an attribute of a matched node (an in-place rewrite)."""
        self._check_matched(node)
        old = node.attrs.get(name)
        self.graph.set_attr(node, name, value)
        self._undo.append(lambda: self.graph.set_attr(node, name, old))

    def _check_matched(self, node: Node) -> None:
        if not any(node is n for n in self.match.matched):
            raise ValueError(f"rule {self.rule.name} may edit only the nodes it matched, not {node!r}")

    def undo(self) -> None:
        """Take back every change this builder made: edits, then nodes, then constants."""
        g = self.graph
        for fn in reversed(self._undo):
            fn()
        for n in reversed(self.created):
            for v in n.outputs:
                if v is not None:
                    for user, idx in v.uses:
                        g.set_input(user, idx, None)
            g.remove_node(n)
        for v in self.constants:
            if not g.has_uses(v):
                g.remove_value(v)
        self._undo.clear()
        self.created.clear()
        self.constants.clear()
