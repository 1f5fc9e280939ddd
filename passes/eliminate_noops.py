"""eliminate-noops: remove nodes that return their input unchanged.

Dropout in inference, Cast to the type it already has, Reshape/Flatten/Squeeze/Unsqueeze/Expand
to the shape it already has, Transpose with the identity perm, Pad of zeros, Slice of everything,
Concat/Sum/Max/Min/Mean of one input, Split into one output, and x*1, x/1, x+0, x-0 where the constant does not
broadcast x to a larger shape or another type. Each case is decided from constants and statically
known shapes only.

One rule per op type, `noop-<op>` (`--explain noop-cast`), each a pattern and a check saying why
that node is not a no-op; the node's first input then replaces its output.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from graphopt.analysis.constants import INT64_MAX
from graphopt.analysis.shapes import shapes_contradict
from graphopt.rewrite import (
    Builder,
    Match,
    Op,
    Opt,
    Rule,
    RulePass,
    Var,
    forward_reason,
)


class Noop(Rule):
    """`op` nodes whose first input `x` is their output, as decided by `why_not(m)`."""

    def __init__(self, op: str, arity: int, why_not: Callable[[Match], Optional[str]]):
        self.op, self.why_not = op, why_not
        self.name = f"noop-{op.lower()}"
        self.pattern = Op(op, Var("x"), *[Opt(Var(f"in{i}")) for i in range(1, arity)])

    def check(self, m: Match) -> Optional[str]:
        if m.root.outputs[0] is None:
            return "its output is absent"
        return self.why_not(m) or forward_reason(m, m.value("x"))

    def rewrite(self, m: Match, b: Builder):
        return [m["x"]]


def _dropout(m: Match) -> Optional[str]:
    training = m.ctx.const(m.value("in2")) if m["in2"] is not None else np.array(False)
    if training is None or bool(training):
        return "its training_mode is not a constant false"
    if m.ctx.opset < 7 and m.root.attr("is_test", 0) == 0:
        return "it is not in test mode (is_test=0)"
    return None


def _cast(m: Match) -> Optional[str]:
    x = m.value("x")
    return None if x.dtype is not None and x.dtype == m.root.attr("to") else "it changes the type, or x's type is unknown"


def _cast_like(m: Match) -> Optional[str]:
    x, like = m.value("x"), m.value("in1")
    if x.dtype is not None and like is not None and x.dtype == like.dtype:
        return None
    return "it changes the type, or x's type is unknown"


def _same_shape(m: Match) -> Optional[str]:
    """Reshape, Flatten, Squeeze, Unsqueeze, Expand."""
    x, op = m.value("x"), m.root.op_type
    a, b = m.ctx.static_shape(x), m.ctx.static_shape(m.root.outputs[0])
    if a is not None and a == b:
        return None
    if op == "Squeeze" and _axes(m) == [] and m.ctx.opset >= 13 and x.shape is not None \
            and not any(d == 1 or not isinstance(d, int) for d in x.shape):
        return None  # no axes given and no dim of size 1
    if op == "Reshape" and _reshape_keeps(m):
        return None
    if op == "Flatten" and x.shape is not None and len(x.shape) == 2 and m.root.attr("axis", 1) in (1, -1):
        return None  # (d0, d1) flattened at axis 1 is (d0, d1), whatever d0 and d1 are
    if op == "Expand" and x.shape is not None:
        shape = m.ctx.const(m.value("in1"))
        if shape is not None and len(shape) <= len(x.shape) and all(int(d) == 1 for d in shape):
            return None
    return "the output's shape is not statically the input's"


def _reshape_keeps(m: Match) -> bool:
    """A target shape that names every dim of x, symbolic ones included: x's own size, 0 (copy
    x's dim, allowzero=0) or one -1, which the other dims' equality then pins to x's dim (exporters
    write `Reshape(x, [-1, C, 1, 1])` on an x already [N, C, 1, 1]). Where another dim is 0 at run
    time, onnxruntime cannot resolve the -1 and fails; without the Reshape, that input runs."""
    x = m.value("x")
    target = m.root.attr("shape") if m.ctx.opset < 5 else m.ctx.const(m.value("in1"))
    if x.shape is None or target is None:
        return False
    target = [int(t) for t in np.asarray(target).ravel()]
    if len(target) != len(x.shape) or target.count(-1) > 1:
        return False
    copies = m.root.attr("allowzero", 0) == 0
    if not all(t == -1 or (t == 0 and copies) or (isinstance(d, int) and d == t) for d, t in zip(x.shape, target)):
        return False
    # a cross-check of x's shape, which may be a declaration: the output's must not say otherwise
    return not shapes_contradict(m.root.outputs[0].shape, x.shape)


def _transpose(m: Match) -> Optional[str]:
    perm = m.root.attr("perm")
    return None if perm is not None and list(perm) == list(range(len(perm))) else "its perm is not the identity"


def _pad(m: Match) -> Optional[str]:
    pads = m.root.attr("pads") if m.ctx.opset < 11 else m.ctx.const(m["in1"])
    if pads is None or any(int(p) != 0 for p in np.asarray(pads).ravel()):
        return "its pads are not constant zeros"
    return None


def _slice(m: Match) -> Optional[str]:
    return None if _slices_everything(m) else "it does not provably keep everything"


def _one_input(m: Match) -> Optional[str]:
    return None  # the pattern has only x: Concat/Sum/Max/Min/Mean of one input


def _one_output(m: Match) -> Optional[str]:
    """Split into one piece: the piece is the whole input (a given split must add up to the dim)."""
    return None if m.root.n_outputs == 1 else "it has more than one output"


def _neutral_binary(m: Match) -> Optional[str]:
    x, c, op = m.value("x"), m.value("in1"), m.root.op_type
    data = m.ctx.const(c)
    if data is None or data.dtype.kind not in "fiu":
        return "the other operand is not a constant"
    if x.dtype is None and c.dtype is not None:
        x_dtype = c.dtype  # Add/Sub/Mul/Div take both operands of one type: x's is the constant's
    elif x.dtype is None:
        return "x's type is unknown"
    else:
        x_dtype = x.dtype
    if x.shape is None and data.ndim > 0:  # a scalar broadcasts to any shape without enlarging it
        return "x's shape is unknown and the constant is not a scalar"
    neutral = 1 if op in ("Mul", "Div") else 0
    if data.size == 0 or not np.all(data == neutral):
        return f"the constant is not all {neutral}"
    if op in ("Add", "Sub") and data.dtype.kind == "f":
        # x - (+0.0) and x + (-0.0) are x bit for bit, -0.0, inf and NaN included; x + (+0.0)
        # and x - (-0.0) turn -0.0 into +0.0
        if not np.all(np.signbit(data) == (op == "Add")):
            return f"-0.0 {'+' if op == 'Add' else '-'} {'' if op == 'Add' else '-'}0.0 is +0.0: not bitwise the input"
    if c.dtype != x_dtype or len(data.shape) > len(x.shape or ()):
        return "the constant would change x's type or rank"
    # the constant must not enlarge x by broadcasting
    for d_c, d_x in zip(reversed(data.shape), reversed(x.shape or ())):
        if d_c != 1 and d_c != d_x:
            return "the constant would broadcast x to a larger shape"
    return None


def _axes(m: Match):
    if m["in1"] is not None:
        data = m.ctx.const(m["in1"])
        return None if data is None else [int(a) for a in data.ravel()]
    a = m.root.attr("axes")
    return [] if a is None else list(a)


def _slices_everything(m: Match) -> bool:
    """Every sliced axis kept whole: step 1 from the first element to the last. An axis whose
    size is unknown qualifies only from 0 to INT64_MAX, which no size can fall short of."""
    node = m.root
    shape = m.value("x").shape
    if shape is None:
        return False
    if m.ctx.opset < 10:
        starts, ends, axes, steps = node.attr("starts"), node.attr("ends"), node.attr("axes"), None
    else:
        ins = [m[f"in{i}"] for i in range(1, 5)]
        starts, ends, axes, steps = (m.ctx.const(v) if v is not None else None for v in ins)
        if starts is None or ends is None or (ins[2] is not None and axes is None) or (ins[3] is not None and steps is None):
            return False
    starts = [int(s) for s in np.asarray(starts).ravel()]
    ends = [int(e) for e in np.asarray(ends).ravel()]
    axes = list(range(len(starts))) if axes is None else [int(a) for a in np.asarray(axes).ravel()]
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.asarray(steps).ravel()]
    for s, e, a, st in zip(starts, ends, axes, steps):
        if not -len(shape) <= a < len(shape):
            return False
        dim = shape[a]
        if st != 1:
            return False
        if not isinstance(dim, int):
            if s != 0 or e < INT64_MAX:
                return False
        elif (s if s >= 0 else s + dim) > 0 or (e if e >= 0 else e + dim) < dim:
            return False
    return True


# op type -> (inputs the pattern allows, check)
_NOOPS = {
    "Dropout": (3, _dropout), "Cast": (1, _cast), "CastLike": (2, _cast_like),
    "Reshape": (2, _same_shape), "Flatten": (1, _same_shape), "Squeeze": (2, _same_shape),
    "Unsqueeze": (2, _same_shape), "Expand": (2, _same_shape), "Transpose": (1, _transpose),
    "Pad": (4, _pad), "Slice": (5, _slice),
    "Concat": (1, _one_input), "Sum": (1, _one_input), "Max": (1, _one_input), "Min": (1, _one_input),
    "Mean": (1, _one_input), "Split": (2, _one_output),
    "Mul": (2, _neutral_binary), "Div": (2, _neutral_binary), "Add": (2, _neutral_binary), "Sub": (2, _neutral_binary),
}


class EliminateNoops(RulePass):
    name = "eliminate-noops"
    summary = "remove Dropout, same-type Cast, same-shape Reshape, identity Transpose, zero Pad, x*1, ..."
    rules = [Noop(op, arity, check) for op, (arity, check) in _NOOPS.items()]

    def stats(self, fired: dict[str, int]) -> dict:
        ops = {r.name: r.op for r in self.rules}
        by_op = {ops[name]: n for name, n in fired.items()}
        return {"removed": sum(by_op.values()), **{f"removed_{k}": v for k, v in sorted(by_op.items())}}
