"""drop-default-inputs: an optional input that holds exactly what the op assumes when it is
absent is dropped.

LSTM, GRU and RNN start from a zero hidden state (and LSTM from a zero cell state) when
`initial_h` (`initial_c`) is omitted: exporters often build those zeros at run time,
`ConstantOfShape(Concat(1, Shape(x)[1], hidden))`, a chain that stays because the batch is
dynamic. Zeros of any shape (a constant, or a ConstantOfShape of +0) are dropped, with the nodes
that computed their shape left to dce. A -0.0 is not the default and stays.

One rule per input (`lstm-zero-initial-h`, ...) that edits the node in place.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from graphopt.rewrite import Builder, Match, Op, Opt, Rule, RulePass, Var

# op -> (number of inputs, {input index: input name} of the optional inputs whose default is zeros)
_ZERO_DEFAULTS = {"LSTM": (8, {5: "initial_h", 6: "initial_c"}), "GRU": (6, {5: "initial_h"}),
                  "RNN": (6, {5: "initial_h"})}


def _positive_zeros(data) -> bool:
    a = np.asarray(data)
    return a.dtype.kind in "fiu" and not np.any(a) and not (a.dtype.kind == "f" and np.any(np.signbit(a)))


class ZeroDefault(Rule):
    """Input `index` of `op` is zeros, which is what the op assumes without it."""

    def __init__(self, op: str, arity: int, index: int, input_name: str):
        self.op, self.index, self.input_name = op, index, input_name
        self.name = f"{op.lower()}-zero-{input_name.replace('_', '-')}"
        self.pattern = Op(op, Var("x"), *[Opt(Var(f"in{i}")) for i in range(1, arity)])

    def check(self, m: Match) -> Optional[str]:
        v = m[f"in{self.index}"]
        if v is None:
            return f"{self.input_name} is absent"
        data = m.ctx.fold(v)
        if data is not None:
            return None if _positive_zeros(data) else f"{self.input_name} is not all +0"
        p = m.graph.producer(v) if not v.is_capture else None
        if p is None or p.op_type != "ConstantOfShape" or not p.is_standard:
            return f"{self.input_name} is neither a constant nor a ConstantOfShape"
        fill = p.attr("value")
        if fill is not None and not _positive_zeros(fill.numpy()):
            return f"{self.input_name} is a ConstantOfShape of something other than +0"
        return None

    def rewrite(self, m: Match, b: Builder):
        b.set_input(m.root, self.index, None)
        return None


class DropDefaultInputs(RulePass):
    name = "drop-default-inputs"
    summary = "drop optional inputs equal to the op's default (zero initial states of LSTM/GRU/RNN)"
    rules = [ZeroDefault(op, arity, i, name) for op, (arity, defaults) in _ZERO_DEFAULTS.items()
             for i, name in defaults.items()]
    shapes = False
    stat = "dropped"
