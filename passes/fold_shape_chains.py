"""fold-shape-chains: shape computations feeding Reshape/Expand/Slice/Tile/Resize/
ConstantOfShape become constants.

Fully static chains become plain constants. A Reshape shape with run-time dims becomes a
constant using 0 (copy the input's dim at that position; allowzero is honoured: it is switched
to 0 only when the new shape has no literal zero) and at most one -1. An Expand shape with
run-time dims keeps them with 1 where they equal the input's aligned dim. What cannot be
expressed exactly is left alone.
"""

from __future__ import annotations

import numpy as np

from graphopt.analysis.shapes import infer_shapes
from graphopt.analysis.symbolic import (
    expand_target,
    reshape_target,
    shape_elements,
    static_value,
)
from graphopt.ir import Graph
from graphopt.pipeline.base import Pass, PassContext, PassResult

# op type -> indices of its shape-like inputs that must be all ints to become constant
_STATIC_INPUTS = {"Slice": (1, 2, 3, 4), "Tile": (1,), "ConstantOfShape": (0,), "Resize": (3,),
                  "Range": (0, 1, 2)}


def _has_computed_shape_input(g: Graph, node) -> bool:
    indices = (1,) if node.op_type in ("Reshape", "Expand") else _STATIC_INPUTS.get(node.op_type, ())
    ins = node.inputs
    return any(i < len(ins) and ins[i] is not None and g.const_value(ins[i]) is None for i in indices)


class FoldShapeChains(Pass):
    name = "fold-shape-chains"
    summary = "turn Shape/Gather/Concat/... chains feeding Reshape, Expand, Slice, ... into constants"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if not any(_has_computed_shape_input(g, n) for g in graph.walk() for n in g.nodes):
            return PassResult(False, {"inputs_folded": 0})  # nothing to fold: skip shape inference
        infer_shapes(ctx.model)
        folded = 0
        for g in list(graph.walk()):
            for node in g.toposort():
                if not node.is_standard or not ctx.in_scope(node):
                    continue
                if node.op_type == "Reshape" and ctx.opset >= 5:
                    folded += self._reshape(g, node, ctx.opset)
                elif node.op_type == "Expand":
                    folded += self._expand(g, node)
                for i in _STATIC_INPUTS.get(node.op_type, ()):
                    folded += self._static(g, node, i)
        return PassResult(folded > 0, {"inputs_folded": folded})

    @staticmethod
    def _reshape(g: Graph, node, opset: int) -> int:
        data, shape = node.inputs[0], node.inputs[1]
        if data is None or shape is None or g.const_value(shape) is not None:
            return 0
        elems = shape_elements(g, shape)
        if elems is None:
            return 0
        allowzero = node.attr("allowzero", 0)
        target = reshape_target(elems, data, allowzero)
        if target is None:
            return 0
        values, new_allowzero = target
        if new_allowzero != allowzero:
            if opset < 14:
                return 0
            g.set_attr(node, "allowzero", new_allowzero)
        g.set_input(node, 1, g.add_constant(np.array(values, np.int64), shape.name + "_const"))
        return 1

    @staticmethod
    def _expand(g: Graph, node) -> int:
        data, shape = node.inputs[0], node.inputs[1]
        if data is None or shape is None or g.const_value(shape) is not None:
            return 0
        elems = shape_elements(g, shape)
        target = expand_target(elems, data) if elems is not None else None
        if target is None:
            return 0
        g.set_input(node, 1, g.add_constant(np.array(target, np.int64), shape.name + "_const"))
        return 1

    @staticmethod
    def _static(g: Graph, node, i: int) -> int:
        ins = node.inputs
        if i >= len(ins) or ins[i] is None or g.const_value(ins[i]) is not None:
            return 0
        v = ins[i]
        arr = static_value(g, v)
        if arr is None:
            return 0
        g.set_input(node, i, g.add_constant(arr, v.name + "_const"))
        return 1
