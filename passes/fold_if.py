"""fold-if: an If whose condition is known before run time becomes the branch it takes.

The condition is known when it is a constant, folds from constants, or is a value the symbolic
shape engine knows (`Equal(Shape(x)[1], 3)` where dim 1 of x is a static 3, even if other dims
are dynamic). The taken branch's nodes and constants move into the graph that held the If: its
reads of outer values read them directly, names stay unique (the branch's own names are kept),
the If's outputs are replaced by the branch's and the branch outputs take the If's output names.
Nested Ifs are folded too, in subgraphs and in the branch just inlined.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from graphopt.ir import Graph, Node
from graphopt.pipeline.base import Pass, PassContext, PassResult


class FoldIf(Pass):
    name = "fold-if"
    summary = "an If whose condition is known before run time (constants, static dims) becomes its taken branch"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        stats = {"inlined": 0}
        if not any(n.op_type == "If" and n.is_standard for g in graph.walk() for n in g.nodes):
            return PassResult(False, stats)
        shapes_known = False
        while True:
            engines: dict[int, object] = {}
            for g in list(graph.walk()):
                for node in g.toposort():
                    if node.op_type != "If" or not node.is_standard or not ctx.in_scope(node):
                        continue
                    cond = g.const_value(node.inputs[0]) if node.inputs else None
                    if cond is None:
                        if not shapes_known:
                            from graphopt.analysis.shapes import infer_shapes

                            infer_shapes(ctx.model)
                            shapes_known = True
                        cond = self._symbolic(g, node, engines)
                    if cond is None or np.size(cond) != 1:
                        continue
                    self._inline(g, node, "then_branch" if bool(np.asarray(cond).ravel()[0]) else "else_branch")
                    stats["inlined"] += 1
                    break
                else:
                    continue
                break  # the graphs changed: walk them again
            else:
                return PassResult(stats["inlined"] > 0, stats)

    @staticmethod
    def _symbolic(g: Graph, node: Node, engines: dict) -> Optional[np.ndarray]:
        from graphopt.analysis.symbolic import Engine

        engine = engines.get(id(g))
        if engine is None:
            engine = engines[id(g)] = Engine(g)
        return engine.static(node.inputs[0])

    @staticmethod
    def _inline(g: Graph, node: Node, taken: str) -> None:
        branches = {a: s for a, _, s in node.subgraphs()}
        results = g.inline_subgraph(node, taken)
        outs = node.outputs
        names = {}
        for old, new in zip(outs, results):
            if old is None:
                continue
            if not old.is_graph_output:
                names[new.id] = (new, old.name)
            g.replace_all_uses(old, new)
        g.remove_node(node)
        for a, sub in branches.items():
            if a != taken:
                sub.release_names()
        # the branch's outputs take the If's output names (now free), where they can
        claimed = set()
        for new, name in names.values():
            if new.id not in claimed and g.can_take_output_name(new) and name not in g.scope.used:
                g.rename(new, name)
                claimed.add(new.id)
