"""fuse-batchnorm: fold inference BatchNormalization into the Conv, ConvTranspose, Gemm or
MatMul before it.

The layer's weights and bias, and the BatchNorm parameters, must be constant or computed from
constants (the dynamo exporter builds a missing conv bias as Expand(CastLike(0, x), ...)).
Weights are rescaled in float64 and stored in the layer's dtype. A BatchNormalization with no
such layer before it is left alone, or with `lower=true` becomes Mul+Add.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from graphopt.analysis.constants import fold_value
from graphopt.ir.dtypes import np_dtype
from graphopt.ir.layouts import out_channels, scale_layer_outputs, scale_output_channels
from graphopt.rewrite import Builder, Match, Op, Opt, Rule, RulePass, Var

BN_PARAMS = (Var("scale"), Var("bias"), Var("mean"), Var("var"))


def _bn_check(m: Match) -> Optional[str]:
    return bn_foldable(m.graph, m.node("bn"), [m.value(k) for k in ("scale", "bias", "mean", "var")], m.ctx.opset)


def bn_foldable(g, bn, params, opset: int) -> Optional[str]:
    """Why an inference BatchNormalization cannot be folded into per-channel constants, or None."""
    if bn.attr("training_mode", 0) or (opset < 7 and bn.attr("is_test", 0) == 0):
        return "BatchNormalization is in training mode"
    if bn.attr("spatial", 1) == 0:
        return "BatchNormalization has spatial=0 (per-element statistics)"
    if any(v is not None and g.has_uses(v) for v in bn.outputs[1:]):
        return "its running statistics outputs are read"
    datas = [fold_value(g, v, opset) for v in params]
    for name, d in zip(("scale", "bias", "mean", "var"), datas):
        if d is None:
            return f"its {name} is not constant"
    if any(d.ndim != 1 or d.shape != datas[0].shape for d in datas):
        return "its parameters are not 1-D vectors of one length"
    return None


def _bn_affine(m: Match) -> tuple[np.ndarray, np.ndarray]:
    """(s, t) with bn(y) = y * s + t per channel, in float64."""
    scale, bias, mean, var = (m.const(k).astype(np.float64) for k in ("scale", "bias", "mean", "var"))
    eps = m.node("bn").attr("epsilon", 1e-5)
    s = scale / np.sqrt(var + eps)
    return s, bias - mean * s


class BnIntoConv(Rule):
    name = "bn-into-conv"
    pattern = Op("BatchNormalization", Op(("Conv", "ConvTranspose"), Var("x"), Var("w"), Opt(Var("b")), name="conv"),
                 *BN_PARAMS, name="bn")

    def check(self, m: Match) -> Optional[str]:
        w = m.const("w")
        if w is None or w.dtype.kind != "f":
            return "the conv weight is not a constant float tensor"
        if m["b"] is not None and m.const("b") is None:
            return "the conv bias is not constant"
        return _bn_check(m)

    def rewrite(self, m: Match, b: Builder):
        conv = m.node("conv")
        w = m.const("w")
        group = conv.attr("group", 1)
        s, t = _bn_affine(m)
        bias = m.const("b") if m["b"] is not None else np.zeros(out_channels(conv.op_type, w, group))
        new_w = scale_output_channels(conv.op_type, w, s, group)
        new_b = (bias.astype(np.float64) * s + t).astype(w.dtype)
        return [b.op(conv.op_type, [m["x"], b.const(new_w, "weight"), b.const(new_b, "bias")], dict(conv.attrs))]


class BnIntoGemm(Rule):
    name = "bn-into-gemm"
    pattern = Op("BatchNormalization", Op("Gemm", Var("a"), Var("w"), Opt(Var("c")), name="gemm"), *BN_PARAMS, name="bn")

    def check(self, m: Match) -> Optional[str]:
        w = m.const("w")
        if w is None or w.dtype.kind != "f" or w.ndim != 2:
            return "the Gemm weight is not a constant 2-D float tensor"
        if m["c"] is not None and m.const("c") is None:
            return "the Gemm bias is not constant"
        return _bn_check(m)

    def rewrite(self, m: Match, b: Builder):
        gemm = m.node("gemm")
        w = m.const("w")
        s, t = _bn_affine(m)
        new_w = scale_layer_outputs(gemm, w, s)
        beta = gemm.attr("beta", 1.0)
        c = m.const("c") if m["c"] is not None else np.zeros(len(s))
        new_c = (beta * c.astype(np.float64) * s + t).astype(w.dtype)
        attrs = {k: a for k, a in gemm.attrs.items() if k != "beta"}
        return [b.op("Gemm", [m["a"], b.const(new_w, "weight"), b.const(new_c, "bias")], attrs)]


class BnIntoMatMul(Rule):
    """A 2-D MatMul with a constant weight, then BatchNormalization: one Gemm."""

    name = "bn-into-matmul"
    pattern = Op("BatchNormalization", Op("MatMul", Var("a"), Var("w"), name="mm"), *BN_PARAMS, name="bn")

    def check(self, m: Match) -> Optional[str]:
        a = m.value("a")
        if a.shape is None or len(a.shape) != 2:
            return "the MatMul input is not known to be 2-D"
        w = m.const("w")
        if w is None or w.dtype.kind != "f" or w.ndim != 2:
            return "the MatMul weight is not a constant 2-D float tensor"
        return _bn_check(m)

    def rewrite(self, m: Match, b: Builder):
        w = m.const("w")
        s, t = _bn_affine(m)
        new_w = (w.astype(np.float64) * s[None, :]).astype(w.dtype)
        return [b.op("Gemm", [m["a"], b.const(new_w, "weight"), b.const(t.astype(w.dtype), "bias")])]


class LowerBn(Rule):
    """BatchNormalization (inference) → Mul + Add with per-channel constants."""

    name = "lower-bn"
    pattern = Op("BatchNormalization", Var("x"), *BN_PARAMS, name="bn")

    def check(self, m: Match) -> Optional[str]:
        x = m.value("x")
        if x.shape is None or len(x.shape) < 2 or x.dtype is None:
            return "the input's rank is unknown"
        return _bn_check(m)

    def rewrite(self, m: Match, b: Builder):
        s, t = _bn_affine(m)
        x = m.value("x")
        dtype = np_dtype(x.dtype)  # BatchNorm-15 allows parameters of another type than x
        shape = (-1,) + (1,) * (len(x.shape) - 2)
        mul = b.op("Mul", [x, b.const(s.astype(dtype).reshape(shape), "scale")])
        return [b.op("Add", [mul, b.const(t.astype(dtype).reshape(shape), "shift")])]


@dataclass
class FuseBatchNormOptions:
    lower: bool = field(default=False, metadata={"help": "lower BatchNorms that cannot be folded to Mul+Add"})


class FuseBatchNorm(RulePass):
    name = "fuse-batchnorm"
    summary = "fold BatchNormalization into the preceding Conv/ConvTranspose/Gemm/MatMul"
    Options = FuseBatchNormOptions
    rules = [BnIntoConv(), BnIntoGemm(), BnIntoMatMul(), LowerBn()]  # lower-bn last: only where no fold applies

    def active_rules(self):
        return [r for r in self.rules if self.options.lower or r.name != LowerBn.name]
