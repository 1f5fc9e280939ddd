"""fuse-pad-conv: a constant zero Pad of the spatial dims before a Conv becomes the Conv's pads."""

from __future__ import annotations

from typing import Optional

import numpy as np

from graphopt.rewrite import Builder, Match, Op, Opt, Rule, RulePass, Var


class PadIntoConv(Rule):
    name = "pad-into-conv"
    pattern = Op("Conv", Op("Pad", Var("x"), Opt(Var("pads")), Opt(Var("value")), Opt(Var("axes")), name="pad"),
                 Var("w"), Opt(Var("b")), name="conv")

    def _pads(self, m: Match) -> Optional[np.ndarray]:
        pad = m.node("pad")
        if m.ctx.opset < 11:
            pads = pad.attr("pads")
            return None if pads is None else np.array(pads, np.int64)
        return m.const("pads")

    def check(self, m: Match) -> Optional[str]:
        pad, conv = m.node("pad"), m.node("conv")
        if pad.attr("mode", b"constant") != b"constant":
            return "the Pad is not constant-mode"
        if m["axes"] is not None:
            return "the Pad has explicit axes"
        value = pad.attr("value", 0.0) if m.ctx.opset < 11 else (
            m.const("value") if m["value"] is not None else 0.0)
        if value is None or np.any(np.asarray(value) != 0):
            return "the Pad value is not zero"
        if conv.attr("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            return "the Conv uses auto_pad"
        pads = self._pads(m)
        if pads is None:
            return "the pads are not constant"
        rank = len(pads) // 2
        if rank < 3 or np.any(pads < 0) or np.any(pads[[0, 1, rank, rank + 1]] != 0):
            return "the Pad touches the batch or channel dim, or crops"
        return None

    def rewrite(self, m: Match, b: Builder):
        conv = m.node("conv")
        pads = self._pads(m)
        rank = len(pads) // 2
        k = rank - 2
        old = list(conv.attr("pads", [0] * (2 * k)))
        new = [old[i] + int(pads[2 + i]) for i in range(k)] + [old[k + i] + int(pads[rank + 2 + i]) for i in range(k)]
        attrs = dict(conv.attrs)
        attrs["pads"] = new
        return [b.op("Conv", [m["x"], m["w"], m["b"]], attrs)]


class FusePadConv(RulePass):
    name = "fuse-pad-conv"
    summary = "fold a zero Pad of the spatial dims into the following Conv"
    rules = [PadIntoConv()]
    shapes = False
    stat = "fused"
