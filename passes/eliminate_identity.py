"""eliminate-identity: Identity nodes forward their input to every reader."""

from __future__ import annotations

from graphopt.ir import Graph
from graphopt.passmanager import Pass, PassContext, PassResult


class EliminateIdentity(Pass):
    name = "eliminate-identity"
    summary = "remove Identity nodes, keeping graph output names and subgraph reads intact"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        removed = 0
        for g in list(graph.walk()):
            for node in g.nodes:
                if node.op_type != "Identity" or node.domain not in ("", "ai.onnx"):
                    continue
                (src,), (out,) = node.inputs, node.outputs
                if src is None or out is None:
                    continue
                # An output fed straight from an input, initializer or outer value needs the
                # Identity to carry its name.
                if out.is_graph_output and not g.can_take_output_name(src):
                    continue
                if out.is_graph_output and src.is_graph_output:
                    continue
                g.replace_all_uses(out, src)
                g.remove_node(node)
                removed += 1
        return PassResult(removed > 0, {"removed": removed})
