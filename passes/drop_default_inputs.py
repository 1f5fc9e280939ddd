"""drop-default-inputs: an optional input that holds exactly what the op assumes when it is
absent is dropped.

LSTM, GRU and RNN start from a zero hidden state (and LSTM from a zero cell state) when
`initial_h` (`initial_c`) is omitted: exporters often build those zeros at run time,
`ConstantOfShape(Concat(1, Shape(x)[1], hidden))`, a chain that stays because the batch is
dynamic. Zeros of any shape are dropped, with the nodes that computed their shape left to dce: a
constant, a ConstantOfShape of +0, or what moves or widens only zeros (tf2onnx writes
`Concat(Unsqueeze(Expand(0.0, shape)), ...)` for a bidirectional Keras LSTM). A -0.0 is not the
default and stays.

One rule per input (`lstm-zero-initial-h`, ...) that edits the node in place.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from graphopt.rewrite import Builder, Match, Op, Opt, Rule, RulePass, Var

# op -> (number of inputs, {input index: input name} of the optional inputs whose default is zeros)
_ZERO_DEFAULTS = {"LSTM": (8, {5: "initial_h", 6: "initial_c"}), "GRU": (6, {5: "initial_h"}),
                  "RNN": (6, {5: "initial_h"})}


# Cast targets that keep +0 as +0: float, double, float16, bfloat16 and the 8- to 64-bit integers
# (not bool, the float8 types or int4, which this does not need)
_FLOAT_OR_INT = {1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 16}


def _positive_zeros(data) -> bool:
    a = np.asarray(data)
    return a.dtype.kind in "fiu" and not np.any(a) and not (a.dtype.kind == "f" and np.any(np.signbit(a)))


# ops whose output holds only values of their first input (zeros in, zeros out)
_MOVES = {"Expand", "Tile", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Transpose", "Identity"}
_MAX_DEPTH = 8


def _not_zeros(m: Match, v, depth: int = 0) -> Optional[str]:
    """None if `v` is provably all +0, else why not."""
    data = m.ctx.fold(v)
    if data is not None:
        return None if _positive_zeros(data) else "is not all +0"
    p = m.graph.producer(v) if not v.is_capture else None
    if p is None or not p.is_standard or depth >= _MAX_DEPTH:
        return "is not a constant, a ConstantOfShape or zeros moved by Expand, Concat, Reshape, ..."
    if p.op_type == "ConstantOfShape":
        fill = p.attr("value")
        return None if fill is None or _positive_zeros(fill.numpy()) else \
            "is a ConstantOfShape of something other than +0"
    if p.op_type == "Concat":
        sources = [x for x in p.inputs if x is not None]
    elif p.op_type in _MOVES or (p.op_type == "Cast" and p.attr("to") in _FLOAT_OR_INT):
        sources = [p.inputs[0]]
    else:
        return "is not a constant, a ConstantOfShape or zeros moved by Expand, Concat, Reshape, ..."
    for x in sources:
        why = _not_zeros(m, x, depth + 1)
        if why:
            return why
    return None


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
        why = _not_zeros(m, v)
        return f"{self.input_name} {why}" if why else None

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
