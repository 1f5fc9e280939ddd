"""eliminate-identity: Identity nodes forward their input to every reader."""

from __future__ import annotations

from graphopt.ir import Graph
from graphopt.pipeline.base import Pass, PassContext, PassResult


class EliminateIdentity(Pass):
    name = "eliminate-identity"
    summary = "remove Identity nodes, keeping graph output names and subgraph reads intact"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        removed = 0
        for g in list(graph.walk()):
            for node in g.nodes:
                if node.op_type == "Identity" and node.is_standard and node.inputs[0] is not None \
                        and ctx.in_scope(node):
                    removed += g.bypass(node, node.inputs[0])
        return PassResult(removed > 0, {"removed": removed})
