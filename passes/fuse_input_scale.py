"""fuse-input-scale: a constant Mul feeding a Conv or Gemm, by a scalar or by one factor per input
channel, is folded into the layer's weights: Conv(x * s, W) = Conv(x, W * s[in channel]).

It is exact in real arithmetic because the Mul commutes with the layer's linear map: a Conv pads
with zeros (s * 0 = 0, whatever auto_pad says) and a Gemm has no padding. It is refused when the
Mul's output has other readers (the driver refuses a match whose inner value is read outside),
when the factor would broadcast the input to a new shape, or when the layer's weight is not a
constant. A Pad with a non-zero value between the Mul and the Conv is not matched at all.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from graphopt.ir.layouts import per_channel
from graphopt.rewrite import Builder, Match, Op, Opt, Rule, RulePass, Var


class MulIntoConv(Rule):
    """Conv(Mul(x, s), W, B) -> Conv(x, W * s, B)."""

    name = "mul-into-conv"
    pattern = Op("Conv", Op("Mul", Var("x"), Var("s"), commute=True, name="mul"), Var("w"), Opt(Var("b")))

    @staticmethod
    def factors(m: Match) -> Optional[np.ndarray]:
        s, w = m.const("s"), m.const("w")
        if s is None or w is None or s.dtype != w.dtype or s.dtype.kind != "f":
            return None
        group = m.root.attr("group", 1)
        return per_channel(s, w.ndim, w.shape[1] * group)

    def check(self, m: Match) -> Optional[str]:
        if m.const("w") is None:
            return "the weight is not a constant"
        if m.const("s") is None:
            return "the factor is not a constant"
        if m.const("x") is not None:
            return "both Mul operands are constants (fold-constants folds it)"
        if self.factors(m) is None:
            return "the factor is not a scalar or one value per input channel of matching type"
        x = m.value("x")
        if x.shape is None or len(x.shape) != m.const("w").ndim:
            return "the input's rank is unknown (the factor could broadcast it)"
        return None

    def rewrite(self, m: Match, b: Builder):
        w, s = m.const("w"), self.factors(m)
        group = m.root.attr("group", 1)
        cin_g = w.shape[1]
        mg = w.shape[0] // group
        f = np.empty((w.shape[0], cin_g), np.float64)
        for k in range(group):
            f[k * mg:(k + 1) * mg, :] = s[k * cin_g:(k + 1) * cin_g][None, :]
        new_w = (w * f.astype(w.dtype).reshape(f.shape + (1,) * (w.ndim - 2))).astype(w.dtype)
        b.set_input(m.root, 0, m.value("x"))
        b.set_input(m.root, 1, b.const(new_w, "weight"))


class MulIntoGemm(Rule):
    """Gemm(Mul(x, s), B, C) -> Gemm(x, B * s[k], C) with x not transposed."""

    name = "mul-into-gemm"
    pattern = Op("Gemm", Op("Mul", Var("x"), Var("s"), commute=True, name="mul"), Var("w"), Opt(Var("c")))

    @staticmethod
    def factors(m: Match) -> Optional[np.ndarray]:
        s, w = m.const("s"), m.const("w")
        if s is None or w is None or s.dtype != w.dtype or s.dtype.kind != "f" or w.ndim != 2:
            return None
        k = w.shape[1] if m.root.attr("transB", 0) else w.shape[0]
        return per_channel(s, 2, k, axis=1)

    def check(self, m: Match) -> Optional[str]:
        if m.root.attr("transA", 0):
            return "A is transposed"
        if m.const("w") is None or m.const("s") is None:
            return "the weight or the factor is not a constant"
        if m.const("x") is not None:
            return "both Mul operands are constants (fold-constants folds it)"
        if self.factors(m) is None:
            return "the factor is not a scalar or one value per input feature of matching type"
        x = m.value("x")
        if x.shape is None or len(x.shape) != 2:
            return "the input's rank is unknown (the factor could broadcast it)"
        return None

    def rewrite(self, m: Match, b: Builder):
        w, s = m.const("w"), self.factors(m).astype(m.const("w").dtype)
        new_w = w * (s[None, :] if m.root.attr("transB", 0) else s[:, None])
        b.set_input(m.root, 0, m.value("x"))
        b.set_input(m.root, 1, b.const(new_w.astype(w.dtype), "weight"))


class FuseInputScale(RulePass):
    name = "fuse-input-scale"
    summary = "fold a scalar or per-input-channel constant Mul before a Conv or Gemm into its weights"
    rules = [MulIntoConv(), MulIntoGemm()]
