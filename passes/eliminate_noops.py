"""eliminate-noops: remove nodes that return their input unchanged.

Dropout in inference, Cast to the type it already has, Reshape/Flatten/Squeeze/Unsqueeze/Expand
to the shape it already has, Transpose with the identity perm, Pad of zeros, Slice of everything,
Concat/Sum/Max/Min of one input, and x*1, x/1, x+0, x-0 where the constant does not broadcast x
to a larger shape or another type. Each case is decided from constants and statically known
shapes only.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from graphopt.analysis.shapes import infer_shapes, static_shape
from graphopt.ir import Graph, Node, Value
from graphopt.pipeline.base import Pass, PassContext, PassResult


class EliminateNoops(Pass):
    name = "eliminate-noops"
    summary = "remove Dropout, same-type Cast, same-shape Reshape, identity Transpose, zero Pad, x*1, ..."

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        infer_shapes(ctx.model)
        removed: dict[str, int] = {}
        for g in list(graph.walk()):
            for node in g.toposort():
                if node not in g or not node.is_standard or not ctx.in_scope(node):
                    continue
                src = forwarded_input(g, node, ctx.opset)
                if src is not None and g.bypass(node, src):
                    removed[node.op_type] = removed.get(node.op_type, 0) + 1
        return PassResult(bool(removed), {"removed": sum(removed.values()), **{f"removed_{k}": v for k, v in sorted(removed.items())}})


def forwarded_input(g: Graph, node: Node, opset: int) -> Optional[Value]:
    """The input `node` returns unchanged as its first output, or None."""
    ins, outs = node.inputs, node.outputs
    if not ins or ins[0] is None or not outs or outs[0] is None:
        return None
    x, y, op = ins[0], outs[0], node.op_type
    if op == "Dropout":
        training = g.const_value(ins[2]) if len(ins) > 2 and ins[2] is not None else np.array(False)
        if training is None or bool(training) or (opset < 7 and node.attr("is_test", 0) == 0):
            return None
        return x
    if op == "Cast":
        return x if x.dtype is not None and x.dtype == node.attr("to") else None
    if op == "CastLike":
        return x if x.dtype is not None and len(ins) > 1 and ins[1] is not None and x.dtype == ins[1].dtype else None
    if op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand"):
        a, b = static_shape(x), static_shape(y)
        if a is not None and a == b:
            return x
        if op == "Squeeze" and _axes(g, node) == [] and opset >= 13 and x.shape is not None \
                and not any(d == 1 or not isinstance(d, int) for d in x.shape):
            return x  # no axes given and no dim of size 1
        if op == "Expand" and x.shape is not None:
            shape = g.const_value(ins[1])
            if shape is not None and len(shape) <= len(x.shape) and all(int(d) == 1 for d in shape):
                return x
        return None
    if op == "Transpose":
        perm = node.attr("perm")
        return x if perm is not None and list(perm) == list(range(len(perm))) else None
    if op == "Pad":
        pads = node.attr("pads") if opset < 11 else g.const_value(ins[1]) if len(ins) > 1 else None
        if pads is None or any(int(p) != 0 for p in np.asarray(pads).ravel()):
            return None
        return x
    if op == "Slice":
        return x if _slices_everything(g, node, opset) else None
    if op in ("Concat", "Sum", "Max", "Min", "Mean") and sum(v is not None for v in ins) == 1:
        return x
    if op in ("Mul", "Div", "Add", "Sub") and len(ins) == 2 and ins[1] is not None:
        return _neutral_binary(g, node, x, ins[1])
    return None


def _neutral_binary(g: Graph, node: Node, x: Value, c: Value) -> Optional[Value]:
    data = g.const_value(c)
    if data is None or x.dtype is None or x.shape is None or data.dtype.kind not in "fiu":
        return None
    neutral = 1 if node.op_type in ("Mul", "Div") else 0
    if data.size == 0 or not np.all(data == neutral):
        return None
    if node.op_type in ("Add", "Sub") and data.dtype.kind == "f":
        return None  # -0.0 + 0.0 is +0.0: not bitwise the input
    if c.dtype != x.dtype or len(data.shape) > len(x.shape):
        return None
    # the constant must not enlarge x by broadcasting
    for d_c, d_x in zip(reversed(data.shape), reversed(x.shape)):
        if d_c != 1 and d_c != d_x:
            return None
    return x


def _axes(g: Graph, node: Node):
    ins = node.inputs
    if len(ins) > 1 and ins[1] is not None:
        data = g.const_value(ins[1])
        return None if data is None else [int(a) for a in data.ravel()]
    a = node.attr("axes")
    return [] if a is None else list(a)


def _slices_everything(g: Graph, node: Node, opset: int) -> bool:
    x = node.inputs[0]
    shape = static_shape(x)
    if shape is None:
        return False
    if opset < 10:
        starts, ends, axes, steps = node.attr("starts"), node.attr("ends"), node.attr("axes"), None
    else:
        ins = node.inputs + [None] * 5
        starts, ends, axes, steps = (g.const_value(v) if v is not None else None for v in ins[1:5])
        if starts is None or ends is None or (ins[3] is not None and axes is None) or (ins[4] is not None and steps is None):
            return False
    starts = [int(s) for s in np.asarray(starts).ravel()]
    ends = [int(e) for e in np.asarray(ends).ravel()]
    axes = list(range(len(starts))) if axes is None else [int(a) for a in np.asarray(axes).ravel()]
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.asarray(steps).ravel()]
    for s, e, a, st in zip(starts, ends, axes, steps):
        dim = shape[a]
        if st != 1 or (s if s >= 0 else s + dim) > 0 or (e if e >= 0 else e + dim) < dim:
            return False
    return True
