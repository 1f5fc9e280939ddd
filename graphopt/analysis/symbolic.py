"""Partial evaluation of shape tensors whose elements may be symbolic dims.

`shape_elements` follows a 1-D integer tensor back through Shape/Gather/Slice/Unsqueeze/Squeeze/
Concat/Cast/Reshape/arithmetic and returns its elements: ints, or `Sym`s standing for a dim that is
only known at run time (a named dim such as 'batch', or an opaque token). Two equal Syms are
the same run-time number. The targets below turn such elements into a constant that computes the
same result: Reshape copies a dim with 0 (allowzero=0) or infers one with -1; Expand keeps a
dim with 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from graphopt.ir import Graph, Value
from graphopt.ir.dtypes import SHAPE_TYPES, np_dtype

MAX_DEPTH = 32


@dataclass(frozen=True)
class Sym:
    key: Any  # a dim name (str) or a tuple describing how it was computed

    def __repr__(self) -> str:
        return f"Sym({self.key!r})"


def dim_elements(v: Value) -> Optional[list]:
    """The dims of `v` as ints and Syms (an unnamed unknown dim gets a token of its own)."""
    if v.shape is None:
        return None
    return [d if isinstance(d, int) else Sym(d if d else ("?", v.graph.name, v.id, i)) for i, d in enumerate(v.shape)]


def shape_elements(g: Graph, v: Optional[Value]) -> Optional[list]:
    """Elements of a 0-D or 1-D integer tensor (a scalar is a one-element list), or None."""
    r = _eval(g, v, 0)
    return None if r is None else r[0]


def shape_value(g: Graph, v: Optional[Value]) -> Optional[tuple[list, bool]]:
    """(elements, is_scalar) of a 0-D or 1-D integer tensor, or None."""
    return _eval(g, v, 0)


def _eval(g: Graph, v: Optional[Value], depth: int):
    """(elements, is_scalar) or None."""
    if v is None or depth > MAX_DEPTH:
        return None
    data = g.const_value(v)
    if data is not None:
        if data.dtype.kind not in "iu" or data.ndim > 1:
            return None
        return [int(x) for x in data.ravel()], data.ndim == 0
    node = g.producer(v)
    if node is None or not node.is_standard:
        return None
    op, ins = node.op_type, node.inputs

    def sub(i):
        return _eval(g, ins[i], depth + 1) if i < len(ins) and ins[i] is not None else None

    if op == "Shape":
        dims = dim_elements(ins[0])
        if dims is None:
            return None
        start, end = node.attr("start", 0), node.attr("end", None)
        return dims[start:end], False
    if op in ("Identity", "Cast"):
        if op == "Cast" and node.attr("to") not in SHAPE_TYPES:
            return None
        return sub(0)
    a = sub(0)
    if a is None:
        return None
    elems, scalar = a
    if op == "Gather":
        idx = g.const_value(ins[1])
        if scalar or idx is None or node.attr("axis", 0) != 0 or idx.ndim > 1:
            return None
        try:
            picked = [elems[int(i)] for i in idx.ravel()]
        except IndexError:
            return None
        return picked, idx.ndim == 0
    if op == "Unsqueeze":
        return (elems, False) if scalar else None
    if op == "Squeeze":
        return (elems, True) if not scalar and len(elems) == 1 else None
    if op == "Reshape":
        target = g.const_value(ins[1])
        if target is None or target.size > 1 or len(elems) != 1:
            return None
        return elems, target.size == 0  # target [] gives a scalar, [1] or [-1] a vector
    if op == "Concat":
        out = []
        for i in range(len(ins)):
            r = sub(i)
            if r is None or r[1]:
                return None
            out.extend(r[0])
        return out, False
    if op == "Slice":
        starts, ends = g.const_value(ins[1]) if len(ins) > 1 else None, g.const_value(ins[2]) if len(ins) > 2 else None
        steps = g.const_value(ins[4]) if len(ins) > 4 and ins[4] is not None else np.array([1])
        axes = g.const_value(ins[3]) if len(ins) > 3 and ins[3] is not None else np.array([0])
        if scalar or starts is None or ends is None or steps is None or axes is None or list(axes.ravel()) not in ([0], [-1]):
            return None
        from graphopt.analysis.constants import onnx_slice

        s, e, st = int(starts.ravel()[0]), int(ends.ravel()[0]), int(steps.ravel()[0])
        if st == 0:
            return None
        return elems[onnx_slice(s, e, st, len(elems))], False
    if op in ("Add", "Sub", "Mul", "Div"):
        b = sub(1)
        if b is None:
            return None
        belems, bscalar = b
        if len(elems) != len(belems) and len(elems) != 1 and len(belems) != 1:
            return None
        n = max(len(elems), len(belems))
        ea = elems * n if len(elems) == 1 else elems
        eb = belems * n if len(belems) == 1 else belems
        return [_arith(op, x, y) for x, y in zip(ea, eb)], scalar and bscalar
    return None


def _arith(op: str, x, y):
    if isinstance(x, int) and isinstance(y, int):
        if op == "Add":
            return x + y
        if op == "Sub":
            return x - y
        if op == "Mul":
            return x * y
        if y != 0:  # ONNX integer division truncates toward zero (exactly, in integers)
            q = abs(x) // abs(y)
            return -q if (x < 0) != (y < 0) else q
    if op == "Mul" and y == 1 or op == "Div" and y == 1 or op in ("Add", "Sub") and y == 0:
        return x
    if op == "Mul" and x == 1 or op == "Add" and x == 0:
        return y
    return Sym((op, x, y))


def static_value(g: Graph, v: Value):
    """A 0-D or 1-D int32/int64 tensor whose elements are all known before run time, as a numpy
    array of the value's own type and rank; None otherwise."""
    import numpy as np

    r = shape_value(g, v)
    if r is None or not all(isinstance(e, int) for e in r[0]) or v.dtype not in SHAPE_TYPES:
        return None
    elems, scalar = r
    return np.array(elems[0] if scalar else elems, np_dtype(v.dtype))


def reshape_target(elems: list, data: Value, allowzero: int) -> Optional[tuple[list[int], int]]:
    """A constant Reshape shape equal to `elems` for input `data`: (shape, allowzero) or None.
    A symbolic element equal to the input's dim at the same position becomes 0 (copy, needs
    allowzero=0); one remaining unknown becomes -1."""
    dims = dim_elements(data)
    out: list[Optional[int]] = []
    copies = unknown = 0
    for i, e in enumerate(elems):
        if isinstance(e, int):
            out.append(e)
        elif dims is not None and i < len(dims) and dims[i] == e:
            out.append(0)
            copies += 1
        else:
            out.append(None)
            unknown += 1
    ints = [e for e in elems if isinstance(e, int)]
    if unknown > 1 or (unknown == 1 and -1 in ints):
        return None
    if unknown == 1 and (copies or 0 in ints):
        # A -1 we introduce must be inferable for every input: next to a copied dim (which may be 0
        # at run time, in an empty batch) the size could not be inferred where the original could.
        return None
    if copies and allowzero and 0 in ints:
        return None  # a literal zero and a copied dim cannot share one shape
    result = [-1 if e is None else e for e in out]
    return result, 0 if copies else allowzero


def expand_target(elems: list, data: Value) -> Optional[list[int]]:
    """A constant Expand shape equal to `elems` for input `data`: a symbolic element equal to the
    input's aligned dim becomes 1 (broadcasting keeps that dim)."""
    dims = dim_elements(data)
    if dims is None:
        return None if any(not isinstance(e, int) for e in elems) else list(elems)
    offset = len(elems) - len(dims)
    out = []
    for j, e in enumerate(elems):
        if isinstance(e, int):
            out.append(e)
        elif j - offset >= 0 and dims[j - offset] == e:
            out.append(1)
        else:
            return None
    return out
