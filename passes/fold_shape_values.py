"""fold-shape-values: every small integer (or exact-integer float, or boolean) tensor the symbolic
shape engine knows element by element before run time becomes a constant, even where the shape
it was computed from has run-time dims: `Shape(x)[-1:]` with a static last dim, `H % 7` with a
static H, `Equal(Shape(x)[1], 3)`. Floats built from such values (the Cast, Sqrt, Div of an
attention scale) are then folded by fold-constants, by the runtime's own kernels.

The readers of a folded value read the constant; the nodes that computed it are left to dce.
A Shape of a Reshape/Squeeze/Unsqueeze/Flatten output whose dims equal its input's reads the
input instead (the reshape then has one reader less, so merge-reshapes can merge it).
"""

from __future__ import annotations

from graphopt.analysis.symbolic import Engine
from graphopt.ir import Graph
from graphopt.pipeline.base import Pass, PassContext, PassResult

_SKIP = {"Constant", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
# Ops the engine evaluates: nothing else can become static through it.
_SHAPE_OPS = {"Shape", "Size"}


class FoldShapeValues(Pass):
    name = "fold-shape-values"
    summary = "small int tensors known before run time (from static dims of dynamic shapes) become constants"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        stats = {"folded": 0}
        if not any(n.op_type in _SHAPE_OPS for g in graph.walk() for n in g.nodes):
            return PassResult(False, stats)
        from graphopt.analysis.shapes import infer_shapes

        infer_shapes(ctx.model)
        for g in list(graph.walk()):
            engine = Engine(g)
            for node in g.toposort():
                if node.op_type in _SKIP or not node.is_standard or not ctx.in_scope(node):
                    continue
                if any(True for _ in node.subgraphs()) or node.n_outputs != 1:
                    continue
                v = node.outputs[0]
                if node.op_type == "Shape" and self._shape_of_input(g, engine, node):
                    stats["shape_reads_moved"] = stats.get("shape_reads_moved", 0) + 1
                if v is None or v.is_graph_output or not g.has_uses(v) or g.const_value(v) is not None:
                    continue
                arr = engine.static(v)
                if arr is None:
                    continue
                const = g.add_constant(arr, v.name + "_folded")
                g.replace_all_uses(v, const)
                stats["folded"] += 1
        return PassResult(stats["folded"] + stats.get("shape_reads_moved", 0) > 0, stats)

    @staticmethod
    def _shape_of_input(g: Graph, engine: Engine, node) -> bool:
        x = node.inputs[0]
        p = g.producer(x) if x is not None and not x.is_capture else None
        if p is None or p.op_type not in ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity") or not p.is_standard:
            return False
        src = p.inputs[0]
        a, b = engine.dims(x), engine.dims(src)
        if a is None or b is None or len(a) != len(b) or a != b or src.is_capture:
            return False
        g.set_input(node, 0, src)
        return True
