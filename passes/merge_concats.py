"""merge-concats: a Concat whose input is another Concat along the same axis, read only there,
takes that Concat's inputs in its place: `Concat(a, Concat(b, c))` is `Concat(a, b, c)`.

Exporters build shapes this way (`Concat(Shape(x)[:2], Concat(H, W))` before a Resize); the
inner Concat goes. The merged node keeps the outer one's name and output name.
"""

from __future__ import annotations

from typing import Optional

from graphopt.ir import Graph, Node
from graphopt.pipeline.base import Pass, PassContext, PassResult


def _axis(node: Node) -> Optional[int]:
    """The Concat's axis, non-negative, or None if it is negative and the rank is unknown."""
    axis = node.attr("axis")
    if axis is None or axis >= 0:
        return axis
    out = node.outputs[0]
    rank = len(out.shape) if out is not None and out.shape is not None else None
    if rank is None:
        ins = [v for v in node.inputs if v is not None and v.shape is not None]
        rank = len(ins[0].shape) if ins else None
    return None if rank is None else axis + rank


class MergeConcats(Pass):
    name = "merge-concats"
    summary = "a Concat read only by a Concat along the same axis is merged into it"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        merged = 0
        for g in list(graph.walk()):
            for node in g.toposort():
                if node in g and self._is_concat(node) and ctx.in_scope(node):
                    merged += self._merge(g, node, ctx)
        return PassResult(merged > 0, {"merged": merged})

    @staticmethod
    def _is_concat(node: Node) -> bool:
        return node.op_type == "Concat" and node.is_standard and node.outputs[0] is not None

    def _mergeable(self, g: Graph, node: Node, v, axis: Optional[int], ctx: PassContext) -> Optional[Node]:
        p = g.producer(v) if v is not None and not v.is_capture else None
        if p is None or not self._is_concat(p) or not ctx.in_scope(p) or v.is_graph_output:
            return None
        if len(g.uses(v)) != 1 or axis is None or _axis(p) != axis:
            return None
        return p

    def _merge(self, g: Graph, node: Node, ctx: PassContext) -> int:
        axis = _axis(node)
        ins = node.inputs
        inner = [self._mergeable(g, node, v, axis, ctx) for v in ins]
        if not any(inner):
            return 0
        flat = []
        for v, p in zip(ins, inner):
            flat += p.inputs if p is not None else [v]
        old = node.outputs[0]
        name, out_name = node.name, old.name
        new = g.add_node("Concat", flat, [out_name + "_merged"], {"axis": node.attr("axis")},
                         name=name + "_merged" if name else None)
        new.outputs[0].dtype, new.outputs[0].shape = old.dtype, old.shape
        new.doc_string, new.metadata = node.doc_string, dict(node.metadata)
        graph_output = old.is_graph_output
        g.replace_all_uses(old, new.outputs[0])
        g.remove_node(node)
        for p in inner:
            if p is not None:
                g.remove_node(p)
        if name:
            g.scope.release_node(new.name)
            new.name = g.scope.claim_node(name)
        if not graph_output:
            g.rename(new.outputs[0], out_name)
        return sum(p is not None for p in inner)
