"""promote-shape-inputs: every input TensorRT needs as a build-time constant (Reshape/Expand
shape, Tile repeats, Slice parameters, Resize scales/sizes, Pad pads, Reduce/Squeeze axes, TopK k,
OneHot depth, Dropout training flag) becomes an initializer when it can be computed before run
time: from constants, from static dims, or, for Reshape and Expand, with run-time dims kept
dynamic as 0/-1/1. Values come only from the model's declared shapes (or --input-shape), never
from example or calibration data, so no batch size is baked in.

One rule, promote-input, per build-time input of each op: it replaces that input of the node
in place.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from graphopt.analysis.symbolic import static_value
from graphopt.lint.trt_inputs import BUILD_TIME_INPUTS
from graphopt.rewrite import Builder, Match, Op, Opt, Rule, RulePass, Var


class PromoteInput(Rule):
    """Input `index` of an `op` node becomes an initializer when its value is known before run time."""

    name = "promote-input"

    def __init__(self, op: str, index: int):
        self.index = index
        # input `index` present, any others
        self.pattern = Op(op, *[Var(f"in{i}") if i == index else Opt(Var(f"in{i}")) for i in range(6)])

    def data(self, m: Match) -> Optional[np.ndarray]:
        data = m.const(f"in{self.index}")  # folded once per match: check and rewrite share it
        return static_value(m.graph, m.value(f"in{self.index}")) if data is None else data

    def check(self, m: Match) -> Optional[str]:
        v = m.value(f"in{self.index}")
        if v.const is not None and not v.is_graph_input:
            return f"input {self.index} is already an initializer"
        if self.data(m) is None:
            return f"input {self.index} is not known before run time"
        return None

    def rewrite(self, m: Match, b: Builder):
        b.set_input(m.root, self.index, b.const(np.asarray(self.data(m)), f"in{self.index}"))


class PromoteShapeInputs(RulePass):
    name = "promote-shape-inputs"
    summary = "make the inputs TensorRT needs at build time (shapes, axes, pads, k, ...) initializers"
    rules = [PromoteInput(op, i) for op, idx in BUILD_TIME_INPUTS.items() for i in idx]
    stat = "promoted"
