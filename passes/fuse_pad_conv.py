"""fuse-pad-conv: a constant zero Pad of the spatial dims before a Conv becomes the Conv's pads."""

from __future__ import annotations

from typing import Optional

import numpy as np

from graphopt.analysis.constants import fold_value
from graphopt.ir import Graph
from graphopt.pipeline.base import Pass, PassContext, PassResult
from graphopt.rewrite.driver import Driver
from graphopt.rewrite.pattern import Match, Op, Opt, Var
from graphopt.rewrite.rule import Builder, Rule


class PadIntoConv(Rule):
    name = "pad-into-conv"
    pattern = Op("Conv", Op("Pad", Var("x"), Opt(Var("pads")), Opt(Var("value")), Opt(Var("axes")), name="pad"),
                 Var("w"), Opt(Var("b")), name="conv")

    def __init__(self, opset: int):
        self.opset = opset

    def _pads(self, m: Match) -> Optional[np.ndarray]:
        pad = m.nodes["pad"]
        if self.opset < 11:
            pads = pad.attr("pads")
            return None if pads is None else np.array(pads, np.int64)
        return fold_value(m.graph, m.values["pads"], self.opset)

    def check(self, m: Match) -> Optional[str]:
        pad, conv = m.nodes["pad"], m.nodes["conv"]
        if pad.attr("mode", b"constant") != b"constant":
            return "the Pad is not constant-mode"
        if m.values["axes"] is not None:
            return "the Pad has explicit axes"
        value = pad.attr("value", 0.0) if self.opset < 11 else (
            fold_value(m.graph, m.values["value"], self.opset) if m.values["value"] is not None else 0.0)
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
        conv = m.nodes["conv"]
        pads = self._pads(m)
        rank = len(pads) // 2
        k = rank - 2
        old = list(conv.attr("pads", [0] * (2 * k)))
        new = [old[i] + int(pads[2 + i]) for i in range(k)] + [old[k + i] + int(pads[rank + 2 + i]) for i in range(k)]
        attrs = dict(conv.attrs)
        attrs["pads"] = new
        return [b.op("Conv", [m.values["x"], m.values["w"], m.values["b"]], attrs)]


class FusePadConv(Pass):
    name = "fuse-pad-conv"
    summary = "fold a zero Pad of the spatial dims into the following Conv"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        fired = Driver.for_pass([PadIntoConv(ctx.opset)], ctx).run(graph, ctx.in_scope)
        return PassResult(bool(fired), {"fused": fired.get("pad-into-conv", 0)})
