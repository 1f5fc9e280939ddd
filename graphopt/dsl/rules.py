"""User rewrite rules: the `rule` blocks of pipeline files, compiled to the same Rule/Driver the
built-in passes use (same safety checks, same stamping, same --explain).

    rule hardswish benefit 2 {
        match   { p = Add(x, three)  c = Clip(p, lo, hi)  m = Mul(x, c)  y = Div(m, six) }
        where   { approx(value(three), 3); approx(value(lo), 0); approx(value(hi), 6); approx(value(six), 6) }
        replace { y = HardSwish(x) }
    }

A match statement's argument that names another match statement's output is that node; any
other name captures a value (the same name twice must be the same value); `_` is an absent
input. Add, Mul, Max, Min, Sum, And, Or, Xor and Equal with two inputs compile to commutative
patterns (`Op(..., commute=True)`): they also match with their inputs swapped.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx

from graphopt.dsl import ast
from graphopt.ir import Node, Value
from graphopt.ir.graph import STANDARD_DOMAINS
from graphopt.rewrite import Absent, Builder, Match, Op, Rule, RulePass, Var

COMMUTATIVE = {"Add", "Mul", "Max", "Min", "Sum", "And", "Or", "Xor", "Equal"}
FUNCTIONS = {"value", "is_const", "rank", "dtype", "shape", "single_use", "attr", "broadcastable", "approx",
             "len", "abs", "opset"}


class Unknown(Exception):
    """A constraint asked for something the graph does not know (a rank, a constant, ...)."""


class RuleError(Exception):
    """A compile-time problem, with the position of the offending part of the rule."""

    def __init__(self, pos: ast.Pos, message: str):
        super().__init__(message)
        self.pos = pos


# ------------------------------------------------------------------------------ compiling
def compile_rule(rule: ast.Rule) -> "UserRule":
    """The driver rule for one rule block."""
    by_out = {s.out: s for s in rule.match}
    if len(by_out) != len(rule.match):
        raise RuleError(rule.pos, f"rule {rule.name!r}: a match output is assigned twice")
    used = {a for s in rule.match for a in s.args if a is not None}
    roots = [s for s in rule.match if s.out not in used]
    if len(roots) != 1:
        raise RuleError(rule.pos, f"rule {rule.name!r}: the match block must end in exactly one root "
                                  f"(found {', '.join(s.out for s in roots) or 'none'})")
    root = roots[0]
    for s in rule.match + rule.replace:
        _check_op(s)
    captures = {a for s in rule.match for a in s.args if a is not None and a not in by_out}
    defined = set(captures) | set(by_out)
    for s in rule.replace:
        for a in s.args:
            if a is not None and a not in defined:
                raise RuleError(s.pos, f"rule {rule.name!r}: {a!r} is not captured by the match block or built above")
        defined.add(s.out)
    if root.out not in {s.out for s in rule.replace}:
        raise RuleError(rule.pos, f"rule {rule.name!r}: the replace block must assign {root.out!r}, the match's root")
    for expr in rule.where + tuple(a.value for s in rule.match + rule.replace for a in s.attrs):
        _check_expr(expr, defined)
    return UserRule(rule, _pattern(root, by_out))


def _pattern(stmt: ast.OpStmt, by_out: dict) -> Op:
    inputs = []
    for a in stmt.args:
        if a is None:
            inputs.append(Absent())
        elif a in by_out:
            inputs.append(_pattern(by_out[a], by_out))
        else:
            inputs.append(Var(a))
    return Op(stmt.op, *inputs, name=stmt.out, commute=stmt.op in COMMUTATIVE and len(inputs) == 2)


def _check_op(s: ast.OpStmt) -> None:
    if not onnx.defs.has(s.op):
        import difflib

        names = [sch.name for sch in onnx.defs.get_all_schemas() if sch.domain in STANDARD_DOMAINS]
        close = difflib.get_close_matches(s.op, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RuleError(s.pos, f"unknown ONNX op {s.op!r}{hint}")


def _check_expr(e, names: set) -> None:
    if isinstance(e, ast.Ref) and e.name not in names:
        raise RuleError(e.pos, f"{e.name!r} is not captured by the rule")
    if isinstance(e, ast.Call):
        if e.fn not in FUNCTIONS:
            import difflib

            close = difflib.get_close_matches(e.fn, sorted(FUNCTIONS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; functions are {', '.join(sorted(FUNCTIONS))}"
            raise RuleError(e.pos, f"unknown function {e.fn!r}{hint}")
        for a in e.args:
            if not (e.fn == "attr" and isinstance(a, ast.Str)):
                _check_expr(a, names)
    for child in ("left", "right", "operand"):
        if hasattr(e, child):
            _check_expr(getattr(e, child), names)
    if isinstance(e, ast.ListExpr):
        for i in e.items:
            _check_expr(i, names)


# ------------------------------------------------------------------------------ running
class UserRule(Rule):
    def __init__(self, rule: ast.Rule, pattern: Op):
        self.name = rule.name
        self.benefit = rule.benefit
        self.pattern = pattern
        self.ast = rule

    def check(self, m: Match) -> Optional[str]:
        env = _Env(m)
        for s in self.ast.match:
            node = m.node(s.out)
            for a in s.attrs:
                try:
                    want = env.eval(a.value)
                except Unknown as e:
                    return str(e)
                have = node.attr(a.name)
                if have is None or not _attr_matches(have, want):
                    return f"attribute {a.name} of {s.out} is {_show(have)}, not {_show(want)}"
        for expr in self.ast.where:
            try:
                ok = env.eval(expr)
            except Unknown as e:
                return str(e)
            if not ok:
                return f"{format_expr(expr)} is false"
        return None

    def rewrite(self, m: Match, b: Builder):
        env = _Env(m)
        built: dict[str, Value] = {}
        for s in self.ast.replace:
            ins = [None if a is None else (built[a] if a in built else env.value_of(a)) for a in s.args]
            attrs = {a.name: _attr_value(env.eval(a.value)) for a in s.attrs}
            built[s.out] = b.op(s.op, ins, attrs or None)
        return [built[_root_name(self.ast)]]  # compile_rule made sure the root is assigned


def _root_name(rule: ast.Rule) -> str:
    used = {a for s in rule.match for a in s.args if a is not None}
    return next(s.out for s in rule.match if s.out not in used)


class _Env:
    def __init__(self, m: Match):
        self.m, self.opset = m, m.ctx.opset

    def value_of(self, name: str) -> Value:
        v = self.m[name]
        if isinstance(v, Node):
            return v.outputs[0]
        if v is None:
            raise Unknown(f"{name} is absent")
        return v

    def eval(self, e):
        if isinstance(e, ast.Num):
            return e.value
        if isinstance(e, ast.Str):
            return e.value
        if isinstance(e, ast.ListExpr):
            return [self.eval(i) for i in e.items]
        if isinstance(e, ast.Ref):
            return self.value_of(e.name)
        if isinstance(e, ast.UnOp):
            x = self.eval(e.operand)
            return (not x) if e.op == "not" else -x
        if isinstance(e, ast.BinOp):
            if e.op == "and":
                return bool(self.eval(e.left)) and bool(self.eval(e.right))
            if e.op == "or":
                return bool(self.eval(e.left)) or bool(self.eval(e.right))
            a, b = self.eval(e.left), self.eval(e.right)
            return _BINOPS[e.op](a, b)
        if isinstance(e, ast.Call):
            return getattr(self, "fn_" + e.fn)(*e.args)
        raise TypeError(f"not an expression: {e!r}")

    def _value(self, e) -> Value:
        v = self.eval(e)
        if not isinstance(v, Value):
            raise Unknown(f"{format_expr(e)} is not a value of the graph")
        return v

    # functions available in `where` and in computed attributes
    def fn_value(self, e):
        data = self.m.ctx.fold(self._value(e))
        if data is None:
            raise Unknown(f"{format_expr(e)} is not constant")
        return data.item() if data.size == 1 else data.tolist()

    def fn_is_const(self, e):
        return self.m.ctx.fold(self._value(e)) is not None

    def fn_rank(self, e):
        v = self._value(e)
        if v.shape is None:
            raise Unknown(f"the rank of {format_expr(e)} is unknown")
        return len(v.shape)

    def fn_shape(self, e):
        v = self._value(e)
        if v.shape is None:
            raise Unknown(f"the shape of {format_expr(e)} is unknown")
        return list(v.shape)

    def fn_dtype(self, e):
        v = self._value(e)
        if v.dtype is None:
            raise Unknown(f"the type of {format_expr(e)} is unknown")
        return onnx.helper.tensor_dtype_to_np_dtype(v.dtype).name

    def fn_single_use(self, e):
        v = self._value(e)
        return len(v.uses) == 1 and not v.is_graph_output

    def fn_attr(self, node_ref, name):
        node = self.m.captures.get(getattr(node_ref, "name", None))
        if not isinstance(node, Node):
            raise Unknown(f"{format_expr(node_ref)} is not a matched node")
        value = node.attr(self.eval(name))
        return value.decode() if isinstance(value, bytes) else value

    def fn_broadcastable(self, a, b):
        sa, sb = self.fn_shape(a), self.fn_shape(b)
        for x, y in zip(reversed(sa), reversed(sb)):
            if x != y and x != 1 and y != 1:
                return False
        return True

    def fn_approx(self, a, b, tol=None):
        x, y = np.asarray(self.eval(a), np.float64), np.asarray(self.eval(b), np.float64)
        rtol = 1e-6 if tol is None else float(self.eval(tol))
        if not (x.shape == y.shape or x.size == 1 or y.size == 1):
            return False
        return bool(np.allclose(x, y, rtol=rtol, atol=rtol))

    def fn_opset(self):
        return self.opset

    def fn_len(self, e):
        return len(self.eval(e))

    def fn_abs(self, e):
        return abs(self.eval(e))


_BINOPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b,
           "==": lambda a, b: _equal(a, b), "!=": lambda a, b: not _equal(a, b), "<": lambda a, b: a < b,
           "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _equal(a, b) -> bool:
    if isinstance(a, bytes):
        a = a.decode()
    if isinstance(b, bytes):
        b = b.decode()
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except Exception:
        return a == b


def _attr_matches(have, want) -> bool:
    """Attribute equality; floats (stored as float32 in the model) compare to 1e-6 relative."""
    if isinstance(have, float) or (isinstance(have, list) and have and isinstance(have[0], float)):
        try:
            return bool(np.allclose(np.asarray(have, np.float64), np.asarray(want, np.float64), rtol=1e-6, atol=1e-7))
        except (TypeError, ValueError):
            return False
    return _equal(have, want)


def _show(v) -> str:
    return repr(v.decode() if isinstance(v, bytes) else v)


def _attr_value(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


# ------------------------------------------------------------------------------ the pass
class UserRulesPass(RulePass):
    """Runs user rules through the shared driver; created by the pipeline lowering."""

    summary = "user rewrite rule"
    stat = "fired"

    def __init__(self, name: str, rules: list[UserRule], scope=None):
        super().__init__(None, scope)
        self.name = name
        self.rules = rules


# ------------------------------------------------------------------------------ printing
_PREC = {"or": 1, "and": 2, "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4, "+": 5, "-": 5, "*": 6, "/": 6}


def format_expr(e, parent: int = 0) -> str:
    """Canonical text of an expression (minimal parentheses)."""
    if isinstance(e, ast.Num):
        return repr(e.value)
    if isinstance(e, ast.Str):
        return f'"{e.value}"'
    if isinstance(e, ast.Ref):
        return e.name
    if isinstance(e, ast.ListExpr):
        return "[" + ", ".join(format_expr(i) for i in e.items) + "]"
    if isinstance(e, ast.Call):
        return f"{e.fn}(" + ", ".join(format_expr(a) for a in e.args) + ")"
    if isinstance(e, ast.UnOp):
        text = ("not " if e.op == "not" else "-") + format_expr(e.operand, 7 if e.op == "-" else 3)
        return f"({text})" if parent > (3 if e.op == "not" else 7) else text
    if isinstance(e, ast.BinOp):
        p = _PREC[e.op]
        text = f"{format_expr(e.left, p)} {e.op} {format_expr(e.right, p + 1)}"
        return f"({text})" if p < parent else text
    return str(e)
