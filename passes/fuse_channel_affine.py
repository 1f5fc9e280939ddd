"""fuse-channel-affine: a per-channel constant Mul/Div/Add/Sub after a Conv, ConvTranspose,
Gemm or inference BatchNormalization is folded into that layer's weights and bias.

These are the "scale" layers of Caffe-converted models. The constant must vary only along the
channel axis (or be a scalar), so that it never broadcasts the layer's output to a new shape.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from graphopt.ir.layouts import (
    out_channels,
    per_channel,
    scale_layer_outputs,
    scale_output_channels,
    weight_axes,
)
from graphopt.rewrite import Builder, Match, Op, Opt, Rule, RulePass, Var

LAYERS = ("Conv", "ConvTranspose", "Gemm", "BatchNormalization")


def _layer_pattern():
    # Every input of the layer is captured by position; which ones matter depends on its type.
    return Op(LAYERS, Var("x"), Opt(Var("p1")), Opt(Var("p2")), Opt(Var("p3")), Opt(Var("p4")), name="layer")


class ChannelAffine(Rule):
    """`op`(layer, c), and for Mul and Add also `op`(c, layer): one rule per op."""

    def __init__(self, op: str):
        self.op = op
        self.name = f"{op.lower()}-into-layer"
        self.pattern = Op(op, _layer_pattern(), Var("c"), name="affine", commute=op in ("Mul", "Add"))

    def _vector(self, m: Match) -> Optional[np.ndarray]:
        layer = m.node("layer")
        c, w = m.const("c"), m.const("p1")
        if c is None or w is None or c.dtype != w.dtype or c.dtype.kind != "f":
            return None
        if layer.op_type == "BatchNormalization":
            out = layer.outputs[0]
            if out.shape is None:
                return None
            return per_channel(c, len(out.shape), len(w))
        if layer.op_type == "Gemm":
            return per_channel(c, 2, w.shape[weight_axes(layer, 2)[0]])
        return per_channel(c, w.ndim, out_channels(layer.op_type, w, layer.attr("group", 1)))

    def check(self, m: Match) -> Optional[str]:
        layer = m.node("layer")
        if layer.op_type == "BatchNormalization":
            from graphopt.passes.fuse_batchnorm import bn_foldable

            reason = bn_foldable(m.graph, layer, [m.value(k) for k in ("p1", "p2", "p3", "p4")], m.ctx.opset)
            if reason:
                return reason
            params = ("p1", "p2", "p3", "p4")
        else:
            params = ("p1", "p2")
        for p in params:
            if m[p] is not None and m.const(p) is None:
                return f"the layer's input {p} is not constant"
        if self._vector(m) is None:
            return "the constant is not per-channel, or its type differs"
        if self.op == "Div" and np.any(self._vector(m) == 0):
            return "division by zero"
        return None

    def rewrite(self, m: Match, b: Builder):
        layer = m.node("layer")
        v = self._vector(m)
        mul, add = {"Mul": (v, 0.0), "Div": (1.0 / v, 0.0), "Add": (1.0, v), "Sub": (1.0, -v)}[self.op]
        mul = np.broadcast_to(np.asarray(mul, np.float64), v.shape)
        add = np.broadcast_to(np.asarray(add, np.float64), v.shape)
        p = [m.const(k) for k in ("p1", "p2", "p3", "p4")]
        dtype = p[0].dtype
        if layer.op_type == "BatchNormalization":  # y = (x - mean) * s + bias: scale s and bias
            scale, bias = p[0] * mul, p[1] * mul + add
            ins = [m["x"], b.const(scale.astype(dtype), "scale"), b.const(bias.astype(dtype), "bias"),
                   m["p3"], m["p4"]]
            return [b.op("BatchNormalization", ins, dict(layer.attrs))]
        if layer.op_type == "Gemm":
            w = scale_layer_outputs(layer, p[0], mul)
            beta = layer.attr("beta", 1.0)
            c = (beta * p[1].astype(np.float64)) if p[1] is not None else np.zeros(len(v))
            c = c * mul + add if c.ndim <= 1 else c * mul[None, :] + add[None, :]
            attrs = {k: a for k, a in layer.attrs.items() if k != "beta"}
            return [b.op("Gemm", [m["x"], b.const(w.astype(dtype), "weight"), b.const(c.astype(dtype), "bias")], attrs)]
        group = layer.attr("group", 1)
        w = scale_output_channels(layer.op_type, p[0], mul, group)  # in the weight's dtype
        bias = p[1].astype(np.float64) if p[1] is not None else np.zeros(len(v))
        bias = bias * mul + add
        return [b.op(layer.op_type, [m["x"], b.const(w.astype(dtype), "weight"), b.const(bias.astype(dtype), "bias")],
                     dict(layer.attrs))]


class FuseChannelAffine(RulePass):
    name = "fuse-channel-affine"
    summary = "fold per-channel constant Mul/Div/Add/Sub into the Conv/ConvTranspose/Gemm/BatchNorm before it"
    rules = [ChannelAffine(op) for op in ("Mul", "Add", "Sub", "Div")]
