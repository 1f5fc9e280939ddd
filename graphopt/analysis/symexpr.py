"""A small canonical-form algebra for symbolic dimension expressions (no sympy: start-up stays
fast for models without shape arithmetic).

An expression is an int or an `Expr`: a sum of monomials with integer coefficients, each
monomial a product of atoms with positive powers. Atoms are `Sym`s: a named dim ('batch'), an
opaque token for an unnamed dim, or an operation the algebra cannot distribute over
(floor-division and modulo by a constant, min/max, anything else), whose own arguments are
canonical. Two equal expressions are the same run-time number, so equality decides whether a
Reshape dim copies an input dim.

Simplifications: sums and products are expanded and collected; `floordiv(c*P + k, c)` is
`P + k // c` and `mod(c*P + k, c)` is `k % c` for an integer polynomial P; floor(x / 1) is x;
min/max with a constant are decided where the other side is known non-negative and the constant
is <= 0; everything that is static comes out as a plain int.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

Num = Union[int, "Expr"]


@dataclass(frozen=True)
class Sym:
    key: Any  # a dim name (str) or a tuple describing how it was computed

    def __repr__(self) -> str:
        return f"Sym({self.key!r})"


def _mono_key(m: tuple) -> str:
    return repr(m)


class Expr:
    """sum(coeff * prod(atom ** power)); never a constant alone (that is an int)."""

    __slots__ = ("terms", "_hash", "_repr")

    def __init__(self, terms: dict):
        self.terms = terms  # {monomial: coeff}; monomial = tuple of (Sym, power) sorted by repr
        self._hash = hash(frozenset(terms.items()))
        self._repr = None  # computed once: it is the sort key of every monomial holding this

    def __eq__(self, other) -> bool:
        return isinstance(other, Expr) and self.terms == other.terms

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        if self._repr is None:
            self._repr = self._render()
        return self._repr

    def _render(self) -> str:
        parts = []
        for mono, c in sorted(self.terms.items(), key=lambda t: _mono_key(t[0])):
            f = "*".join(f"{a.key if isinstance(a.key, str) else a.key!r}" + (f"^{p}" if p > 1 else "") for a, p in mono)
            parts.append(f"{c}*{f}" if f and c != 1 else (f or str(c)))
        return " + ".join(parts)

    @property
    def const(self) -> int:
        return self.terms.get((), 0)


def _mk(terms: dict) -> Num:
    terms = {m: c for m, c in terms.items() if c != 0}
    if not terms:
        return 0
    if list(terms) == [()]:
        return terms[()]
    return Expr(terms)


def _terms(x: Num) -> dict:
    if isinstance(x, Expr):
        return x.terms
    return {(): int(x)} if x else {}


def atom(s: Sym) -> Expr:
    return Expr({((s, 1),): 1})


def is_static(x) -> bool:
    return isinstance(x, (int, bool))


def add(x: Num, y: Num) -> Num:
    if is_static(x) and is_static(y):
        return int(x) + int(y)
    t = dict(_terms(x))
    for m, c in _terms(y).items():
        t[m] = t.get(m, 0) + c
    return _mk(t)


def neg(x: Num) -> Num:
    return -int(x) if is_static(x) else _mk({m: -c for m, c in x.terms.items()})


def sub(x: Num, y: Num) -> Num:
    return add(x, neg(y))


def _mono_mul(a: tuple, b: tuple) -> tuple:
    powers: dict = {}
    for s, p in a + b:
        powers[s] = powers.get(s, 0) + p
    return tuple(sorted(powers.items(), key=lambda t: repr(t[0])))


def mul(x: Num, y: Num) -> Num:
    if is_static(x) and is_static(y):
        return int(x) * int(y)
    t: dict = {}
    for ma, ca in _terms(x).items():
        for mb, cb in _terms(y).items():
            m = _mono_mul(ma, mb)
            t[m] = t.get(m, 0) + ca * cb
    return _mk(t)


def _split(x: Num, c: int):
    """(P, k) with x == c*P + k (P an integer polynomial, k an int) when every non-constant
    coefficient is a multiple of c; None otherwise."""
    t = _terms(x)
    if any(cf % c for m, cf in t.items() if m):
        return None
    return _mk({m: cf // c for m, cf in t.items() if m}), t.get((), 0)


def nonneg(x: Num) -> bool:
    """Known to be >= 0 at run time (dims, and what is built from them with + and *)."""
    if is_static(x):
        return int(x) >= 0
    for mono, c in x.terms.items():
        if c < 0:
            return False
        for s, p in mono:
            if not (p % 2 == 0 or _atom_nonneg(s)):
                return False
    return True


def _atom_nonneg(s: Sym) -> bool:
    k = s.key
    if not isinstance(k, tuple) or (k and k[0] == "?"):
        return True  # a dim
    if k[0] == "%":
        return k[2] > 0
    if k[0] == "//":
        return nonneg(k[1])
    if k[0] == "max":
        return any(nonneg(a) for a in k[1:])
    if k[0] == "min":
        return all(nonneg(a) for a in k[1:])
    return False


def floordiv(x: Num, y: Num) -> Num:
    """floor(x / y) (Python's //)."""
    if is_static(x) and is_static(y):
        return int(x) // int(y) if int(y) != 0 else None
    if is_static(y) and int(y) > 0:
        c = int(y)
        if c == 1:
            return x
        s = _split(x, c)
        if s is not None:
            return add(s[0], s[1] // c)
        k = _terms(x).get((), 0)
        if k // c:  # floor((P + k) / c) = floor((P + k mod c) / c) + k // c
            return add(floordiv(sub(x, k - k % c), c), k // c)
    return atom(Sym(("//", x, y)))


def mod(x: Num, y: Num) -> Num:
    """x mod y with the divisor's sign (Python's %, ONNX Mod with fmod=0 on integers)."""
    if is_static(x) and is_static(y):
        return int(x) % int(y) if int(y) != 0 else None
    if is_static(y) and int(y) != 0:
        c = int(y)
        if abs(c) == 1:
            return 0
        if c > 0:
            s = _split(x, c)
            if s is not None:
                return s[1] % c
            if isinstance(x, Expr) and len(x.terms) == 1:
                ((mono, cf),) = x.terms.items()
                if len(mono) == 1 and mono[0][1] == 1 and isinstance(mono[0][0].key, tuple) and \
                        mono[0][0].key[0] == "%" and mono[0][0].key[2] == c and cf == 1:
                    return x  # (a % c) % c
    return atom(Sym(("%", x, y)))


def truncdiv(x: Num, y: Num) -> Num:
    """Integer Div as ONNX computes it: the quotient truncated toward zero."""
    if is_static(x) and is_static(y):
        a, b = int(x), int(y)
        if b == 0:
            return None
        q = abs(a) // abs(b)
        return -q if (a < 0) != (b < 0) else q
    if is_static(y) and int(y) != 0:
        c = int(y)
        if c == 1:
            return x
        if c == -1:
            return neg(x)
        s = _split(x, abs(c))
        if s is not None and s[1] == 0:
            return s[0] if c > 0 else neg(s[0])  # exact division
        if c > 0 and nonneg(x):
            return floordiv(x, c)
    return atom(Sym(("/", x, y)))


def minimum(x: Num, y: Num) -> Num:
    if is_static(x) and is_static(y):
        return min(int(x), int(y))
    if x == y:
        return x
    d = sub(x, y)
    if nonneg(d):
        return y
    if nonneg(neg(d)):
        return x
    a, b = sorted((x, y), key=repr)
    return atom(Sym(("min", a, b)))


def maximum(x: Num, y: Num) -> Num:
    if is_static(x) and is_static(y):
        return max(int(x), int(y))
    if x == y:
        return x
    d = sub(x, y)
    if nonneg(d):
        return x
    if nonneg(neg(d)):
        return y
    a, b = sorted((x, y), key=repr)
    return atom(Sym(("max", a, b)))


def absolute(x: Num) -> Num:
    if is_static(x):
        return abs(int(x))
    if nonneg(x):
        return x
    if nonneg(neg(x)):
        return neg(x)
    return atom(Sym(("abs", x)))


def equal(x: Num, y: Num):
    """True/False when decidable, else None."""
    if is_static(x) and is_static(y):
        return int(x) == int(y)
    d = sub(x, y)
    if is_static(d):
        return d == 0
    if nonneg(d) and d.const > 0 or nonneg(neg(d)) and neg(d).const > 0:
        return False
    return None


def opaque(op: str, *args) -> Expr:
    return atom(Sym((op,) + tuple(args)))
