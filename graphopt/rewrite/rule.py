"""A rewrite rule: a pattern, a side-effect-free `check` that names why it declines, and a
`rewrite` that builds the replacement through a Builder (which stamps the rule on new nodes).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np

from graphopt.ir import Graph, Node, Value, make_attr
from graphopt.rewrite.pattern import Match, Op


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


def attr(value) -> Any:
    """Shorthand for building attributes in rewrites."""
    return make_attr(value)
