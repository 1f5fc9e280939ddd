"""dce: remove nodes, initializers and subgraph captures nothing reads."""

from __future__ import annotations

from graphopt.ir import Graph
from graphopt.pipeline.base import Pass, PassContext, PassResult


class DeadCodeElimination(Pass):
    name = "dce"
    summary = "remove nodes and initializers whose results nothing reads (graph outputs are kept)"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        stats = {"nodes_removed": 0, "initializers_removed": 0}
        self._sweep(graph, stats, ctx)
        return PassResult(any(stats.values()), stats)

    def _sweep(self, graph: Graph, stats: dict, ctx: PassContext) -> None:
        # Inner graphs first: a subgraph that stops reading an outer value frees it here.
        for node in graph.nodes:
            for _, _, sub in node.subgraphs():
                self._sweep(sub, stats, ctx)
        for node in reversed(graph.toposort()):
            if ctx.in_scope(node) and not any(v is not None and graph.has_uses(v) for v in node.outputs):
                graph.remove_node(node)
                stats["nodes_removed"] += 1
        for v in graph.values:
            if graph.has_uses(v) or v.is_graph_input:
                continue
            if v.const is not None or v.is_capture:
                graph.remove_value(v)
                stats["initializers_removed"] += v.const is not None
