"""promote-shape-inputs: every input TensorRT needs as a build-time constant (Reshape/Expand
shape, Tile repeats, Slice parameters, Resize scales/sizes, Pad pads, Reduce/Squeeze axes, TopK k,
OneHot depth, Dropout training flag) becomes an initializer when it can be computed before run
time: from constants, from static dims, or, for Reshape and Expand, with run-time dims kept
dynamic as 0/-1/1. Values come only from the model's declared shapes (or --input-shape), never
from example or calibration data, so no batch size is baked in.
"""

from __future__ import annotations

import numpy as np

from graphopt.analysis.constants import fold_value
from graphopt.analysis.shapes import infer_shapes
from graphopt.analysis.symbolic import static_value
from graphopt.ir import Graph
from graphopt.lint.trt_inputs import build_time_inputs
from graphopt.pipeline.base import Pass, PassContext, PassResult


class PromoteShapeInputs(Pass):
    name = "promote-shape-inputs"
    summary = "make the inputs TensorRT needs at build time (shapes, axes, pads, k, ...) initializers"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        infer_shapes(ctx.model)
        promoted = 0
        for g in list(graph.walk()):
            for node in g.toposort():
                if not ctx.in_scope(node):
                    continue
                ins = node.inputs
                for i in build_time_inputs(node):
                    if i >= len(ins) or ins[i] is None:
                        continue
                    v = ins[i]
                    if v.const is not None and not v.is_graph_input:
                        continue  # already an initializer
                    data = fold_value(g, v, ctx.opset)
                    if data is None:
                        data = static_value(g, v)
                    if data is None:
                        continue
                    g.set_input(node, i, g.add_constant(np.asarray(data), v.name + "_const"))
                    promoted += 1
        return PassResult(promoted > 0, {"promoted": promoted})
