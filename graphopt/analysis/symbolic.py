"""Partial evaluation of shape tensors whose elements may be symbolic dims.

`shape_elements` follows a 1-D integer tensor back through Shape/Gather/Slice/Unsqueeze/Squeeze/
Concat/Cast/Reshape/arithmetic and returns its elements: ints, or `Sym`s standing for a dim that is
only known at run time (a named dim such as 'batch', or an opaque token). Two equal Syms are
the same run-time number. The targets below turn such elements into a constant that computes the
same result: Reshape copies a dim with 0 (allowzero=0) or infers one with -1; Expand keeps a
dim with 1.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from graphopt.analysis.constants import onnx_slice
from graphopt.analysis.symexpr import (
    Expr,
    Sym,
    absolute,
    add,
    atom,
    equal,
    floordiv,
    is_static,
    maximum,
    minimum,
    mod,
    mul,
    neg,
    nonneg,
    sub,
    truncdiv,
)
from graphopt.ir import Graph, Value
from graphopt.ir.dtypes import SHAPE_TYPES, DataType, is_float, np_dtype

BOOL = DataType.BOOL
_OTHER_INTS: set = set()

MAX_DEPTH = 64
MAX_ELEMS = 64  # longer tensors are not shape values


def dim_elements(v: Value) -> Optional[list]:
    """The dims of `v` as ints and symbolic expressions (an unnamed unknown dim gets a token of
    its own)."""
    if v.shape is None:
        return None
    return [d if isinstance(d, int) else atom(Sym(d if d else ("?", v.graph.name, v.id, i)))
            for i, d in enumerate(v.shape)]


_SCOPE: list = []  # engines cached while a pass that only replaces values by equal constants runs


class engine_scope:
    """Within it, `engine_for(g)` returns one memoized Engine per graph (the pass promises its
    edits never change what a value computes); outside, a fresh one each time."""

    def __enter__(self):
        _SCOPE.append({})
        return self

    def __exit__(self, *exc):
        _SCOPE.pop()


def engine_for(g: Graph) -> "Engine":
    if not _SCOPE:
        return Engine(g)
    cache = _SCOPE[-1]
    e = cache.get(id(g))
    if e is None or e.g is not g:
        e = cache[id(g)] = Engine(g)
    return e


def shape_elements(g: Graph, v: Optional[Value]) -> Optional[list]:
    """Elements of a 0-D or 1-D integer tensor (a scalar is a one-element list), or None."""
    r = shape_value(g, v, engine_for(g))
    return None if r is None else r[0]


def shape_value(g: Graph, v: Optional[Value], engine: Optional["Engine"] = None) -> Optional[tuple[list, bool]]:
    """(elements, is_scalar) of a 0-D or 1-D integer tensor, or None."""
    r = (engine or Engine(g)).value(v)
    if r is None or r[2] != "i":
        return None
    return r[0], r[1]


_INT_KINDS = "iu"


def _kind_of(dtype) -> Optional[str]:
    if dtype is None:
        return None
    if dtype in SHAPE_TYPES or dtype in _OTHER_INTS:
        return "i"
    if dtype == BOOL:
        return "b"
    if is_float(dtype):
        return "f"
    return None


class Engine:
    """Symbolic values of small 0-D/1-D tensors in one graph, memoized: (elements, is_scalar,
    kind) with kind 'i' (integers), 'f' (floats holding exact integers) or 'b' (booleans);
    elements are ints (bools for 'b') or `Expr`s."""

    def __init__(self, g: Graph):
        self.g = g
        self.memo: dict[int, Any] = {}
        self.dim_memo: dict[int, Optional[list]] = {}

    # ---------------------------------------------------------------- dims of any tensor
    def dims(self, v: Optional[Value]) -> Optional[list]:
        """`v`'s dims as ints and expressions: the inferred shape, refined where onnx's inference
        lost a symbolic dim (an unnamed or unk__ dim) by following Reshape/Transpose/MatMul/
        elementwise ops/... symbolically from the graph inputs."""
        if v is None:
            return None
        if v.id in self.dim_memo:
            return self.dim_memo[v.id]
        stack = [(v, False)]
        while stack:
            x, ready = stack.pop()
            if x.id in self.dim_memo:
                continue
            if x.shape is not None and all(type(d) is int for d in x.shape):
                self.dim_memo[x.id] = list(x.shape)  # known ints are kept as they are: nothing to refine
                continue
            node = self.g.producer(x) if not x.is_capture and x.const is None else None
            deps = [i for i in node.inputs if i is not None] if node is not None and node.op_type in _DIM_OPS else []
            if ready or not any(d.id not in self.dim_memo for d in deps):
                try:
                    self.dim_memo[x.id] = self._dims(x, node)
                except (ValueError, TypeError, IndexError, ZeroDivisionError, KeyError, AttributeError):
                    self.dim_memo[x.id] = dim_elements(x)
                continue
            stack.append((x, True))
            stack.extend((d, False) for d in deps if d.id not in self.dim_memo)
        return self.dim_memo[v.id]

    def _dims(self, v: Value, node) -> Optional[list]:
        base = dim_elements(v)
        computed = self._computed_dims(v, node) if node is not None and node.op_type in _DIM_OPS and node.is_standard else None
        if computed is None:
            return base
        if base is None:
            return [c if c is not None else atom(Sym(("?", v.graph.name, v.id, i))) for i, c in enumerate(computed)]
        if len(base) != len(computed):
            return base
        out = []
        for b, c, raw in zip(base, computed, v.shape):
            if isinstance(raw, int):
                out.append(raw)
            elif c is not None and (raw is None or str(raw).startswith("unk__") or is_static(c)):
                out.append(c)
            else:
                out.append(b)
        return out

    def _computed_dims(self, v: Value, node) -> Optional[list]:
        op, ins = node.op_type, node.inputs
        if node.outputs[0] is not v:
            return None
        d = [self.dim_memo.get(i.id) if i is not None else None for i in ins]
        if op in _SAME_SHAPE:
            return d[0]
        if op in _BROADCAST:
            parts = [x for x in d if x is not None]
            if len(parts) != len([i for i in ins if i is not None]):
                return None
            n = max(len(x) for x in parts)
            out = []
            for j in range(n):
                col = [x[j - (n - len(x))] for x in parts if j - (n - len(x)) >= 0]
                out.append(_broadcast_dim(col))
            return out
        if op == "Transpose":
            if d[0] is None:
                return None
            perm = node.attr("perm") or list(range(len(d[0])))[::-1]
            return [d[0][p] for p in perm]
        if op == "MatMul":
            a, b = d
            if a is None or b is None or len(a) < 2 or len(b) < 2:
                return None
            ba, bb = a[:-2], b[:-2]
            n = max(len(ba), len(bb))
            batch = []
            for j in range(n):
                col = [x[j - (n - len(x))] for x in (ba, bb) if j - (n - len(x)) >= 0]
                batch.append(_broadcast_dim(col))
            return batch + [a[-2], b[-1]]
        if op == "Reshape":
            target = self.value(ins[1])
            if d[0] is None or target is None or target[1] or target[2] != "i":
                return None
            out = []
            for j, e in enumerate(target[0]):
                if e == 0 and not node.attr("allowzero", 0):
                    out.append(d[0][j])
                else:
                    out.append(e)
            if -1 in out:
                total = 1
                for x in d[0]:
                    total = mul(total, x)
                rest = 1
                for x in out:
                    if x != -1:
                        rest = mul(rest, x)
                q = exact_div(total, rest)
                out = [q if x == -1 else x for x in out]
            return out
        if op in ("Unsqueeze", "Squeeze"):
            axes = node.attr("axes")
            if len(ins) > 1 and ins[1] is not None:
                c = self.g.const_value(ins[1])
                axes = None if c is None else [int(a) for a in c.ravel()]
            if d[0] is None or axes is None:
                return None
            if op == "Squeeze":
                r = len(d[0])
                axes = {a % r for a in axes}
                return [x for j, x in enumerate(d[0]) if j not in axes]
            r = len(d[0]) + len(axes)
            axes = sorted(a % r for a in axes)
            out = list(d[0])
            for a in axes:
                out.insert(a, 1)
            return out
        if op == "Concat":
            if any(x is None for x in d):
                return None
            ax = node.attr("axis") % len(d[0])
            out = list(d[0])
            for x in d[1:]:
                out[ax] = add(out[ax], x[ax])
            return out
        if op == "Expand":
            shape = self.value(ins[1])
            if d[0] is None or shape is None or shape[2] != "i":
                return None
            s = shape[0]
            n = max(len(s), len(d[0]))
            out = []
            for j in range(n):
                a = d[0][j - (n - len(d[0]))] if j - (n - len(d[0])) >= 0 else 1
                b = s[j - (n - len(s))] if j - (n - len(s)) >= 0 else 1
                out.append(_broadcast_dim([a, b]))
            return out
        if op == "Gather":
            if d[0] is None or d[1] is None:
                return None
            ax = node.attr("axis", 0) % len(d[0])
            return d[0][:ax] + d[1] + d[0][ax + 1:]
        if op == "Flatten":
            if d[0] is None:
                return None
            ax = node.attr("axis", 1) % (len(d[0]) + 1) if len(d[0]) else 0
            a = b = 1
            for x in d[0][:ax]:
                a = mul(a, x)
            for x in d[0][ax:]:
                b = mul(b, x)
            return [a, b]
        if op in ("Conv", "MaxPool", "AveragePool"):
            x = d[0]
            if x is None or len(x) < 3 or node.attr("ceil_mode", 0):
                return None
            n_sp = len(x) - 2
            if op == "Conv":
                w = self.g.const_value(ins[1])
                if w is None:
                    return None
                kernel, out_c = list(w.shape[2:]), w.shape[0]
            else:
                kernel, out_c = node.attr("kernel_shape"), x[1]
            if kernel is None or len(kernel) != n_sp:
                return None
            strides = node.attr("strides") or [1] * n_sp
            dil = node.attr("dilations") or [1] * n_sp
            pads = node.attr("pads") or [0] * (2 * n_sp)
            auto = node.attr("auto_pad", "NOTSET")
            auto = auto.decode() if isinstance(auto, bytes) else auto
            out = [x[0], out_c]
            for i in range(n_sp):
                if auto in ("SAME_UPPER", "SAME_LOWER"):
                    out.append(floordiv(add(x[2 + i], strides[i] - 1), strides[i]))
                elif auto == "VALID":
                    out.append(add(floordiv(sub(x[2 + i], dil[i] * (kernel[i] - 1) + 1), strides[i]), 1))
                else:
                    span = sub(add(x[2 + i], pads[i] + pads[i + n_sp]), dil[i] * (int(kernel[i]) - 1) + 1)
                    out.append(add(floordiv(span, strides[i]), 1))
            return out
        if op == "ConstantOfShape":
            shape = self.value(ins[0])
            return None if shape is None or shape[1] or shape[2] != "i" else list(shape[0])
        if op == "Range":
            start, limit, delta = (self.value(i) for i in ins[:3])
            if None in (start, limit, delta) or not is_static(delta[0][0]):
                return None
            if start[0][0] == 0 and delta[0][0] == 1 and nonneg(limit[0][0]):
                return [limit[0][0]]
            span, dl = sub(limit[0][0], start[0][0]), int(delta[0][0])
            return [max(-(-int(span) // dl), 0)] if is_static(span) and dl else None
        if op == "Slice":
            if d[0] is None:
                return None
            rank = len(d[0])
            starts, ends = self.value(ins[1]), self.value(ins[2])
            axes = self.value(ins[3]) if len(ins) > 3 and ins[3] is not None else (list(range(rank)), False, "i")
            steps = self.value(ins[4]) if len(ins) > 4 and ins[4] is not None else ([1] * rank, False, "i")
            if None in (starts, ends, axes, steps) or not all(is_static(x) for x in axes[0] + steps[0] + starts[0]):
                return None
            out = list(d[0])
            for st, en, ax, sp in zip(starts[0], ends[0], axes[0], steps[0]):
                ax, dim = int(ax) % rank, out[int(ax) % rank]
                if int(sp) != 1 or int(st) < 0:
                    out[ax] = None
                elif is_static(en) and is_static(dim):
                    sl = onnx_slice(int(st), int(en), 1, int(dim))
                    out[ax] = max(sl.stop - sl.start, 0)
                elif is_static(en) and int(en) >= 1 << 62:
                    out[ax] = dim if int(st) == 0 else None
                elif not is_static(en) and nonneg(en) and int(st) == 0:
                    out[ax] = minimum(en, dim)
                else:
                    out[ax] = None
            return out
        return None

    def value(self, v: Optional[Value], depth: int = 0):
        if v is None or depth > MAX_DEPTH:
            return None
        if v.id in self.memo:
            return self.memo[v.id]
        try:
            r = self._eval(v, depth)
        except (ValueError, TypeError, IndexError, ZeroDivisionError, OverflowError, AttributeError, KeyError):
            r = None
        if r is not None and len(r[0]) > MAX_ELEMS:
            r = None
        self.memo[v.id] = r
        return r

    def static(self, v: Value) -> Optional[np.ndarray]:
        """The value as a numpy array of its declared type when every element is known."""
        r = self.value(v)
        if r is None or not all(is_static(e) for e in r[0]) or v.dtype is None:
            return None
        kind = _kind_of(v.dtype)
        if kind != r[2]:
            return None
        elems, scalar = r[0], r[1]
        arr = np.array([bool(e) if kind == "b" else int(e) for e in elems], np_dtype(v.dtype))
        if kind == "f" and any(abs(int(e)) > 1 << 24 for e in elems):
            return None
        return arr.reshape(()) if scalar else arr

    def _eval(self, v: Value, depth: int):
        g = self.g
        data = g.const_value(v)
        if data is not None:
            if data.ndim > 1 or data.size > MAX_ELEMS:
                return None
            if data.dtype.kind in _INT_KINDS:
                return [int(x) for x in data.ravel()], data.ndim == 0, "i"
            if data.dtype.kind == "b":
                return [bool(x) for x in data.ravel()], data.ndim == 0, "b"
            if data.dtype.kind == "f" and np.all(np.isfinite(data)) and np.all(data == np.round(data)) \
                    and np.all(np.abs(data) < (1 << 24)):
                return [int(x) for x in data.ravel()], data.ndim == 0, "f"
            return None
        node = g.producer(v)
        if node is None or not node.is_standard or v.is_capture:
            return None
        op, ins = node.op_type, node.inputs
        if node.outputs[0] is not v:
            return None

        def sub(i):
            return self.value(ins[i], depth + 1) if i < len(ins) and ins[i] is not None else None

        if op == "Shape":
            dims = self.dims(ins[0])
            if dims is None:
                return None
            start, end = node.attr("start", 0), node.attr("end", None)
            return dims[start:end], False, "i"
        if op == "Size":
            dims = self.dims(ins[0])
            if dims is None:
                return None
            p = 1
            for d in dims:
                p = mul(p, d)
            return [p], True, "i"
        if op == "Identity":
            return sub(0)
        if op == "Cast":
            a = sub(0)
            to = _kind_of(node.attr("to"))
            if a is None or to is None:
                return None
            elems = a[0]
            if to == "b":
                out = []
                for e in elems:
                    z = equal(e, 0)
                    if z is None:
                        return None
                    out.append(not z)
                return out, a[1], "b"
            if a[2] == "b":
                elems = [int(e) for e in elems]
            if to == "i" and node.attr("to") not in SHAPE_TYPES and not all(is_static(e) for e in elems):
                return None  # a narrow int type could wrap
            return elems, a[1], to
        if op == "ConstantOfShape":
            a = sub(0)
            if a is None or not all(is_static(e) for e in a[0]) or len(a[0]) != 1 or a[0][0] > MAX_ELEMS:
                return None
            t = node.attr("value")
            fill = np.zeros(1, np.float32) if t is None else np.asarray(_tensor_array(t)).ravel()
            kind = _kind_of(node.outputs[0].dtype) if node.outputs[0].dtype else None
            if kind is None:
                return None
            return [bool(fill[0]) if kind == "b" else int(fill[0])] * int(a[0][0]), False, kind
        a = sub(0)
        if a is None:
            return None
        elems, scalar, kind = a
        if op == "Gather":
            idx = self.value(ins[1], depth + 1)
            if scalar or idx is None or idx[2] != "i" or node.attr("axis", 0) not in (0, -1):
                return None
            n = len(elems)
            picked = []
            for i in idx[0]:
                if not is_static(i) or not -n <= i < n:
                    return None
                picked.append(elems[int(i)])
            return picked, idx[1], kind
        if op == "Unsqueeze":
            return (elems, False, kind) if scalar else None
        if op == "Squeeze":
            return (elems, True, kind) if not scalar and len(elems) == 1 else None
        if op == "Reshape":
            target = self.value(ins[1], depth + 1)
            if target is None or not all(is_static(e) for e in target[0]) or len(target[0]) > 1:
                return None
            if len(target[0]) == 0:
                return (elems, True, kind) if len(elems) == 1 else None
            return elems, False, kind  # [n], [-1], [0] of a vector/scalar: the same elements
        if op == "Concat":
            out = []
            for i in range(len(ins)):
                r = sub(i)
                if r is None or r[1] or r[2] != kind:
                    return None
                out.extend(r[0])
            return out, False, kind
        if op == "Slice":
            if scalar:
                return None
            starts, ends = sub(1), sub(2)
            axes = sub(3) if len(ins) > 3 and ins[3] is not None else ([0], False, "i")
            steps = sub(4) if len(ins) > 4 and ins[4] is not None else ([1], False, "i")
            if starts is None or ends is None or axes is None or steps is None:
                return None
            if not all(is_static(e) for r in (starts, ends, axes, steps) for e in r[0]):
                return None
            if [int(x) for x in axes[0]] not in ([0], [-1]):
                return None
            s, e, st = int(starts[0][0]), int(ends[0][0]), int(steps[0][0])
            return elems[onnx_slice(s, e, st, len(elems))], False, kind
        if op == "Expand":
            shape = sub(1)
            if shape is None or not all(is_static(e) for e in shape[0]) or len(shape[0]) > 1:
                return None
            if not shape[0]:
                return elems, scalar, kind
            n = int(shape[0][0])
            if len(elems) == 1:
                return elems * max(n, 1), False, kind
            return (elems, False, kind) if n in (1, len(elems)) else None
        if op in _UNARY:
            if kind == "b":
                return None
            if op in ("Floor", "Ceil", "Round") and kind == "f":
                return elems, scalar, kind  # exact integers already
            if op == "Sqrt" or op == "Reciprocal":
                return None  # leaves the integers (fold-constants folds a static result)
            fn = _UNARY[op]
            if fn is None:
                return None
            return [fn(e) for e in elems], scalar, kind
        if op == "Not":
            if kind != "b":
                return None
            return [not e for e in elems], scalar, "b"
        if op in ("ReduceSum", "ReduceProd", "ReduceMin", "ReduceMax"):
            if scalar or kind == "b" or not elems:
                return None
            axes = node.attr("axes")
            if len(ins) > 1 and ins[1] is not None:
                ax = sub(1)
                if ax is None or not all(is_static(e) for e in ax[0]):
                    return None
                axes = ax[0]
            if axes is not None and [int(x) for x in axes] not in ([], [0], [-1]):
                return None
            if axes is not None and not list(axes) and node.attr("noop_with_empty_axes", 0):
                return elems, scalar, kind
            fn = {"ReduceSum": add, "ReduceProd": mul, "ReduceMin": minimum, "ReduceMax": maximum}[op]
            r = elems[0]
            for e in elems[1:]:
                r = fn(r, e)
            return [r], not node.attr("keepdims", 1), kind
        if op in _BINARY or op in ("Min", "Max", "Sum"):
            operands = [a] + [sub(i) for i in range(1, len(ins))]
            if any(o is None for o in operands):
                return None
            if op in _BINARY and len(operands) != 2:
                return None
            res = operands[0]
            for b in operands[1:]:
                res = _binary(node, op, res, b)
                if res is None:
                    return None
            return res
        if op == "Where":
            x, y = sub(1), sub(2)
            if x is None or y is None or kind != "b" or x[2] != y[2]:
                return None
            n = max(len(elems), len(x[0]), len(y[0]))
            parts = []
            for e in (elems, x[0], y[0]):
                if len(e) not in (1, n):
                    return None
                parts.append(e * n if len(e) == 1 else e)
            return [xe if c else ye for c, xe, ye in zip(*parts)], scalar and x[1] and y[1], x[2]
        if op == "Range":
            lim, delta = sub(1), sub(2)
            if lim is None or delta is None or not scalar:
                return None
            s, l, d = elems[0], lim[0][0], delta[0][0]
            if not is_static(d) or int(d) == 0:
                return None
            span = sub_expr(l, s)
            if is_static(span):
                n = max(-(-int(span) // int(d)), 0)
                if n > MAX_ELEMS:
                    return None
                return [add(s, mul(i, d)) for i in range(n)], False, kind
            return None
        return None


_SAME_SHAPE = {"Identity", "Cast", "Relu", "Gelu", "Erf", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Neg",
               "Sqrt", "Exp", "Log", "Abs", "LayerNormalization", "Dropout", "HardSigmoid", "HardSwish",
               "LeakyRelu", "Elu", "Clip", "Not", "Reciprocal", "Floor", "Ceil", "Round", "Sin", "Cos",
               "InstanceNormalization", "BatchNormalization", "CastLike", "Softplus", "Mish", "SimplifiedLayerNormalization",
               "Trilu", "IsNaN", "IsInf", "Sign"}
_BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Where", "Equal", "Less", "Greater", "And", "Or", "Max", "Min",
              "Mod", "LessOrEqual", "GreaterOrEqual", "Sum", "PRelu"}
_DIM_OPS = _SAME_SHAPE | _BROADCAST | {"Transpose", "MatMul", "Reshape", "Unsqueeze", "Squeeze", "Concat", "Expand",
                                       "Gather", "Flatten", "Slice", "ConstantOfShape", "Range", "Conv",
                                       "MaxPool", "AveragePool"}


def _broadcast_dim(col: list):
    """The dim several broadcast operands give (the model is valid, so each is 1 or the result)."""
    if any(c is None for c in col):
        return None
    col = [c for c in col if c != 1] or [1]
    static = [c for c in col if is_static(c)]
    if static:
        return static[0]
    uniq = list(dict.fromkeys(col))
    if len(uniq) == 1:
        return uniq[0]
    if len(uniq) == 2:
        # broadcast(X, min(X, c)) is X: min(X, c) != X means X > c, and then it can only be 1
        for a, b in (uniq, uniq[::-1]):
            if isinstance(b, Expr) and len(b.terms) == 1:
                ((mono, cf),) = b.terms.items()
                if cf == 1 and len(mono) == 1 and mono[0][1] == 1:
                    key = mono[0][0].key
                    if isinstance(key, tuple) and key[0] == "min" and a in key[1:]:
                        return a
    return atom(Sym(("bcast",) + tuple(sorted(uniq, key=repr))))


def exact_div(x, y):
    """x / y when it divides exactly (as polynomials), else None."""
    if is_static(y):
        if int(y) == 0:
            return None
        if is_static(x):
            return int(x) // int(y) if int(x) % int(y) == 0 else None
        return truncdiv(x, y) if all(c % int(y) == 0 for c in x.terms.values()) else None
    if isinstance(y, Expr) and len(y.terms) == 1:
        ((mono, c),) = y.terms.items()
        if is_static(x):
            return None
        out = {}
        for m, cx in x.terms.items():
            powers = dict(m)
            for s_, p in mono:
                if powers.get(s_, 0) < p:
                    return None
                powers[s_] -= p
            if cx % c:
                return None
            key = tuple(sorted(((k, p) for k, p in powers.items() if p), key=lambda t: repr(t[0])))
            out[key] = out.get(key, 0) + cx // c
        from graphopt.analysis.symexpr import _mk

        return _mk(out)
    return None


def sub_expr(x, y):
    return sub(x, y)


def _tensor_array(t):
    if hasattr(t, "numpy"):
        return t.numpy()
    from onnx import numpy_helper

    return numpy_helper.to_array(t)


_UNARY = {"Neg": neg, "Abs": absolute, "Floor": None, "Ceil": None, "Round": None, "Sqrt": None,
          "Reciprocal": None, "Relu": lambda e: maximum(e, 0)}
_BINARY = {"Add", "Sub", "Mul", "Div", "Mod", "Pow", "Equal", "Less", "Greater", "LessOrEqual",
           "GreaterOrEqual", "And", "Or"}


def _binary(node, op, a, b):
    ea, sa, ka = a
    eb, sb, kb = b
    if ka != kb:
        return None
    n = max(len(ea), len(eb))
    if len(ea) not in (1, n) or len(eb) not in (1, n):
        return None
    ea = ea * n if len(ea) == 1 else ea
    eb = eb * n if len(eb) == 1 else eb
    scalar = sa and sb
    if op in ("And", "Or"):
        if ka != "b":
            return None
        f = (lambda x, y: x and y) if op == "And" else (lambda x, y: x or y)
        return [f(x, y) for x, y in zip(ea, eb)], scalar, "b"
    if ka == "b":
        if op == "Equal":
            return [x == y for x, y in zip(ea, eb)], scalar, "b"
        return None
    if op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"):
        out = []
        for x, y in zip(ea, eb):
            if op == "Equal":
                r = equal(x, y)
            else:
                lo, hi = (x, y) if op in ("Less", "LessOrEqual") else (y, x)
                d = sub(hi, lo)  # lo < hi  <=>  d > 0
                if is_static(d):
                    r = d > 0 if op in ("Less", "Greater") else d >= 0
                elif nonneg(d) and (op in ("LessOrEqual", "GreaterOrEqual") or d.const > 0):
                    r = True
                elif nonneg(neg(d)) and (op in ("Less", "Greater") or neg(d).const > 0):
                    r = False
                else:
                    r = None
            if r is None:
                return None
            out.append(r)
        return out, scalar, "b"
    out = []
    for x, y in zip(ea, eb):
        if op == "Add":
            r = add(x, y)
        elif op == "Sub":
            r = sub(x, y)
        elif op == "Mul":
            r = mul(x, y)
        elif op == "Div":
            if ka == "f":
                if is_static(x) and is_static(y) and y != 0 and int(x) % int(y) == 0:
                    r = int(x) // int(y)
                else:
                    return None  # a fraction: not an exact integer any more
            else:
                r = truncdiv(x, y)
        elif op == "Mod":
            if ka == "f" or node.attr("fmod", 0):
                if not (is_static(x) and is_static(y)) or y == 0:
                    return None
                r = int(np.fmod(int(x), int(y))) if node.attr("fmod", 0) else int(x) % int(y)
            else:
                r = mod(x, y)
        elif op == "Min":
            r = minimum(x, y)
        elif op == "Max":
            r = maximum(x, y)
        elif op == "Sum":
            r = add(x, y)
        elif op == "Pow":
            if not is_static(y) or int(y) < 0 or int(y) > 8:
                return None
            r = 1
            for _ in range(int(y)):
                r = mul(r, x)
        else:
            return None
        if r is None:
            return None
        out.append(r)
    return out, scalar, ka


def static_value(g: Graph, v: Value):
    """A 0-D or 1-D int32/int64 tensor whose elements are all known before run time, as a numpy
    array of the value's own type and rank; None otherwise."""

    if v is None or v.dtype not in SHAPE_TYPES:
        return None
    return engine_for(g).static(v)


def reshape_target(elems: list, data: Value, allowzero: int, dims: Optional[list] = None) -> Optional[tuple[list[int], int]]:
    """A constant Reshape shape equal to `elems` for input `data` (whose dims are `dims`, by
    default its inferred shape): (shape, allowzero) or None. A symbolic element equal to the
    input's dim at the same position becomes 0 (copy, needs allowzero=0); one remaining unknown
    becomes -1."""
    dims = dim_elements(data) if dims is None else dims
    r = _reshape_target(elems, dims, allowzero)
    if r is None:  # a literal -1 may be a static size that leaves its place to a run-time dim
        resolved = _resolve_minus_one(elems, dims, allowzero)
        if resolved is not elems:
            r = _reshape_target(resolved, dims, allowzero)
    return r


def _reshape_target(elems: list, dims: Optional[list], allowzero: int):
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


def _resolve_minus_one(elems: list, dims: Optional[list], allowzero: int) -> list:
    """A literal -1 whose size is a static number (all run-time dims cancel) becomes that number,
    so that a run-time element elsewhere can take the -1: [4*batch, 196, -1] of a
    [batch, 4, 196, 64] input is [4*batch, 196, 64], written [-1, 196, 64]."""
    if dims is None or sum(1 for e in elems if isinstance(e, int) and e == -1) != 1:
        return elems
    total = 1
    for d in dims:
        total = mul(total, d)
    rest = 1
    for i, e in enumerate(elems):
        if isinstance(e, int) and e == -1:
            continue
        if isinstance(e, int) and e == 0 and not allowzero:
            if i >= len(dims):
                return elems
            e = dims[i]
        rest = mul(rest, e)
    q = exact_div(total, rest)
    if q is None or not is_static(q) or int(q) <= 0:
        return elems
    return [int(q) if isinstance(e, int) and e == -1 else e for e in elems]


def expand_target(elems: list, data: Value, dims: Optional[list] = None) -> Optional[list[int]]:
    """A constant Expand shape equal to `elems` for input `data`: a symbolic element equal to the
    input's aligned dim becomes 1 (broadcasting keeps that dim)."""
    dims = dim_elements(data) if dims is None else dims
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
