"""fuse-channel-affine: a per-channel constant Mul/Div/Add/Sub after a Conv, ConvTranspose,
Gemm or inference BatchNormalization is folded into that layer's weights and bias.

These are the "scale" layers of Caffe-converted models. The constant must vary only along the
channel axis (or be a scalar), so that it never broadcasts the layer's output to a new shape.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from graphopt.analysis.constants import fold_value
from graphopt.analysis.shapes import infer_shapes
from graphopt.ir import Graph
from graphopt.ir.layouts import out_channels, per_channel, scale_output_channels
from graphopt.pipeline.base import Pass, PassContext, PassResult
from graphopt.rewrite.driver import Driver
from graphopt.rewrite.pattern import Match, Op, Opt, Var
from graphopt.rewrite.rule import Builder, Rule

LAYERS = ("Conv", "ConvTranspose", "Gemm", "BatchNormalization")


def _layer_pattern():
    # Every input of the layer is captured by position; which ones matter depends on its type.
    return Op(LAYERS, Var("x"), Opt(Var("p1")), Opt(Var("p2")), Opt(Var("p3")), Opt(Var("p4")), name="layer")


class ChannelAffine(Rule):
    def __init__(self, op: str, const_first: bool, opset: int):
        self.op, self.opset = op, opset
        self.name = f"{op.lower()}-into-layer"
        inputs = (Var("c"), _layer_pattern()) if const_first else (_layer_pattern(), Var("c"))
        self.pattern = Op(op, *inputs, name="affine")

    def _vector(self, m: Match) -> Optional[np.ndarray]:
        layer, g = m.nodes["layer"], m.graph
        c = fold_value(g, m.values["c"], self.opset)
        w = fold_value(g, m.values["p1"], self.opset)
        if c is None or w is None or c.dtype != w.dtype or c.dtype.kind != "f":
            return None
        if layer.op_type == "BatchNormalization":
            out = layer.outputs[0]
            if out.shape is None:
                return None
            return per_channel(c, len(out.shape), len(w))
        if layer.op_type == "Gemm":
            n = w.shape[0] if layer.attr("transB", 0) else w.shape[1]
            return per_channel(c, 2, n)
        return per_channel(c, w.ndim, out_channels(layer.op_type, w, layer.attr("group", 1)))

    def check(self, m: Match) -> Optional[str]:
        layer, g = m.nodes["layer"], m.graph
        if self.op in ("Sub", "Div") and m.values["c"] is not m.nodes["affine"].inputs[1]:
            return "the constant is the left operand of a Sub/Div"
        if layer.op_type == "BatchNormalization":
            from graphopt.passes.fuse_batchnorm import bn_foldable

            reason = bn_foldable(g, layer, [m.values[k] for k in ("p1", "p2", "p3", "p4")], self.opset)
            if reason:
                return reason
            params = ("p1", "p2", "p3", "p4")
        else:
            params = ("p1", "p2")
        for p in params:
            if m.values[p] is not None and fold_value(g, m.values[p], self.opset) is None:
                return f"the layer's input {p} is not constant"
        if self._vector(m) is None:
            return "the constant is not per-channel, or its type differs"
        if self.op == "Div" and np.any(self._vector(m) == 0):
            return "division by zero"
        return None

    def rewrite(self, m: Match, b: Builder):
        layer, g = m.nodes["layer"], m.graph
        v = self._vector(m)
        mul, add = {"Mul": (v, 0.0), "Div": (1.0 / v, 0.0), "Add": (1.0, v), "Sub": (1.0, -v)}[self.op]
        mul = np.broadcast_to(np.asarray(mul, np.float64), v.shape)
        add = np.broadcast_to(np.asarray(add, np.float64), v.shape)
        p = [fold_value(g, m.values[k], self.opset) if m.values[k] is not None else None for k in ("p1", "p2", "p3", "p4")]
        dtype = p[0].dtype
        if layer.op_type == "BatchNormalization":  # y = (x - mean) * s + bias: scale s and bias
            scale, bias = p[0] * mul, p[1] * mul + add
            ins = [m.values["x"], b.const(scale.astype(dtype), "scale"), b.const(bias.astype(dtype), "bias"),
                   m.values["p3"], m.values["p4"]]
            return [b.op("BatchNormalization", ins, dict(layer.attrs))]
        if layer.op_type == "Gemm":
            trans_b = layer.attr("transB", 0)
            w = p[0].astype(np.float64) * (mul[:, None] if trans_b else mul[None, :])
            beta = layer.attr("beta", 1.0)
            c = (beta * p[1].astype(np.float64)) if p[1] is not None else np.zeros(len(v))
            c = c * mul + add if c.ndim <= 1 else c * mul[None, :] + add[None, :]
            attrs = {k: a for k, a in layer.attrs.items() if k != "beta"}
            return [b.op("Gemm", [m.values["x"], b.const(w.astype(dtype), "weight"), b.const(c.astype(dtype), "bias")], attrs)]
        group = layer.attr("group", 1)
        w = scale_output_channels(layer.op_type, p[0], mul, group)  # in the weight's dtype
        bias = p[1].astype(np.float64) if p[1] is not None else np.zeros(len(v))
        bias = bias * mul + add
        return [b.op(layer.op_type, [m.values["x"], b.const(w.astype(dtype), "weight"), b.const(bias.astype(dtype), "bias")],
                     dict(layer.attrs))]


class FuseChannelAffine(Pass):
    name = "fuse-channel-affine"
    summary = "fold per-channel constant Mul/Div/Add/Sub into the Conv/ConvTranspose/Gemm/BatchNorm before it"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        rules = [ChannelAffine(op, first, ctx.opset) for op in ("Mul", "Add", "Sub", "Div")
                 for first in (False, True) if not (first and op in ("Sub", "Div"))]
        driver = Driver.for_pass(rules, ctx)
        if not driver.applicable(graph):
            return PassResult(False)
        infer_shapes(ctx.model)
        fired = driver.run(graph, ctx.in_scope)
        return PassResult(bool(fired), dict(sorted(fired.items())))
