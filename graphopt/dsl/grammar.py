"""The lark side of the pipeline language: the LALR parser built from graphopt.lark, lark's
errors translated into DslErrors, and the transformer from parse trees to the frozen AST.
Imported only when text needs the full grammar (see parser.py)."""

from __future__ import annotations

import functools
from importlib import resources

from lark import Lark, Token, Transformer, UnexpectedInput, v_args

from graphopt.dsl import ast
from graphopt.dsl.parser import error_at


@functools.lru_cache(maxsize=None)
def _parser() -> Lark:
    grammar = resources.files("graphopt.dsl").joinpath("graphopt.lark").read_text()
    # cache=True keeps the built LALR tables in the temp folder, keyed by the grammar's hash
    return Lark(grammar, parser="lalr", start=["file", "inline"], propagate_positions=True,
                maybe_placeholders=True, cache=True)


_TOKEN_WORDS = {"COMMA": "','", "LBRACE": "'{'", "RBRACE": "'}'", "EQUAL": "'='", "NAME": "a name",
                "SIGNED_NUMBER": "a number", "NUMBER": "a number", "INT": "an integer", "RATIO": "a ratio like 2:4",
                "STRING": "a quoted string", "DIMS": "dims like 1x3x224x224", "$END": "end of input",
                "_SEP": "',' or ';'", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "COLON": "':'"}


def _describe(token: str) -> str:
    return _TOKEN_WORDS.get(token, f"'{token.lower()}'" if token.isupper() else token)


def parse_tree(text: str, start: str, source: str):
    try:
        return _parser().parse(text, start=start)
    except UnexpectedInput as e:
        line, col = getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1
        candidates = getattr(e, "expected", None) or getattr(e, "allowed", None) or []
        interactive = getattr(e, "interactive_parser", None)
        if interactive is not None:  # exactly what would have been accepted here
            try:
                candidates = interactive.accepts() or candidates
            except Exception:
                pass
        expected = sorted({_describe(t) for t in candidates})
        token = getattr(e, "token", None)
        if token is not None:
            got = "end of input" if token.type == "$END" else repr(str(token))
        else:
            got = repr(getattr(e, "char", "?"))
        what = f"expected {' or '.join(expected)}, got {got}" if expected else f"unexpected {got}"
        raise error_at(ast.Pos(line, col, source), what, text) from None


class _ToAst(Transformer):
    def __init__(self, source: str):
        super().__init__()
        self.source = source

    def _pos(self, tok) -> ast.Pos:
        if isinstance(tok, Token):
            return ast.Pos(tok.line, tok.column, self.source)
        return ast.Pos(getattr(tok, "line", 1), getattr(tok, "column", 1), self.source)

    # -- pipelines ---------------------------------------------------------------------------
    def inline(self, items):
        return ast.Pipeline(items[0] if items and items[0] is not None else ())

    def steps(self, items):
        return tuple(items)

    @v_args(meta=True)
    def pass_step(self, meta, items):
        name, *rest = items
        options = next((r for r in rest if isinstance(r, list)), [])
        scopes = tuple(r for r in rest if isinstance(r, ast.Scope))
        return ast.Step(str(name), tuple(options), self._pos(name), scopes)

    @v_args(meta=True)
    def fixpoint(self, meta, items):
        cap, steps = items
        return ast.FixPoint(tuple(steps or ()), ast.Pos(meta.line, meta.column, self.source),
                            int(cap) if cap is not None else None)

    def options(self, items):
        return [o for o in items if o is not None]

    def option(self, items):
        name, value = items
        return ast.Option(str(name), value, self._pos(name))

    @v_args(meta=True)
    def scope(self, meta, items):
        mode, kind, *names = items
        return ast.Scope(mode, kind, tuple(n for n in names if n is not None),
                         ast.Pos(meta.line, meta.column, self.source))

    def scope_mode(self, items):
        return str(items[0])

    def scope_kind(self, items):
        return str(items[0])

    def ratio(self, items):
        return str(items[0])

    def number(self, items):
        return _number(str(items[0]))

    def word(self, items):
        return str(items[0])

    def string(self, items):
        tok = items[0]
        if isinstance(tok, Token) and tok.type == "STRING":
            return str(tok)[1:-1]
        return tok

    # -- files -------------------------------------------------------------------------------
    def file(self, items):
        return items

    @v_args(meta=True)
    def include(self, meta, items):
        return ast.Include(str(items[0])[1:-1], ast.Pos(meta.line, meta.column, self.source))

    @v_args(meta=True)
    def input_shape(self, meta, items):
        name, dims = items
        return ast.InputShape(str(name), dims, ast.Pos(meta.line, meta.column, self.source))

    def shape(self, items):
        return tuple(int(d) for d in str(items[0]).split("x"))

    @v_args(meta=True)
    def pipeline(self, meta, items):
        return ast.PipelineBlock(tuple(items[0] or ()), ast.Pos(meta.line, meta.column, self.source))

    @v_args(meta=True)
    def settings(self, meta, items):
        kind, *options = items
        return ast.Settings(kind, tuple(options), ast.Pos(meta.line, meta.column, self.source))

    def settings_kind(self, items):
        return str(items[0])

    def setting(self, items):
        return self.option(items)

    # -- rules -------------------------------------------------------------------------------
    @v_args(meta=True)
    def rule(self, meta, items):
        name, benefit, match, where, replace = items
        return ast.Rule(str(name), benefit if benefit is not None else 1, tuple(match), tuple(where or ()),
                        tuple(replace), ast.Pos(meta.line, meta.column, self.source))

    def benefit(self, items):
        return int(items[0])

    def match(self, items):
        return items

    def where(self, items):
        return [i for i in items if i is not None]

    def replace(self, items):
        return items

    def _op_stmt(self, items, meta):
        out, op, *rest = items
        attrs = ()
        if rest and isinstance(rest[-1], tuple) and (not rest[-1] or isinstance(rest[-1][0], ast.Attr)):
            attrs = rest.pop()
        args = tuple(None if a == "_" else (str(a) if a is not None else None) for a in rest)
        if args and args[-1] is None and len(rest) == 1 and rest[0] is None:
            args = ()
        return ast.OpStmt(str(out), str(op), args, attrs, ast.Pos(meta.line, meta.column, self.source))

    @v_args(meta=True)
    def pat_stmt(self, meta, items):
        return self._op_stmt(items, meta)

    @v_args(meta=True)
    def rep_stmt(self, meta, items):
        return self._op_stmt(items, meta)

    def arg(self, items):
        return str(items[0])

    def absent(self, items):
        return "_"

    def attrs(self, items):
        return tuple(items)

    def attr(self, items):
        name, value = items
        return ast.Attr(str(name), value, self._pos(name))

    # -- expressions ---------------------------------------------------------------------------
    def _chain(self, items, ops=None):
        items = [i for i in items if i is not None]
        if len(items) == 1:
            return items[0]
        out = items[0]
        rest = items[1:]
        if ops is None:  # tokens interleaved: operand, op, operand, ...
            for op, rhs in zip(rest[0::2], rest[1::2]):
                out = ast.BinOp(str(op), out, rhs, getattr(out, "pos", ast.Pos(1, 1, self.source)))
            return out
        for rhs in rest:
            out = ast.BinOp(ops, out, rhs, getattr(out, "pos", ast.Pos(1, 1, self.source)))
        return out

    def or_(self, items):
        return self._chain(items, "or")

    def and_(self, items):
        return self._chain(items, "and")

    def compare(self, items):
        return self._chain(items)

    def arith(self, items):
        return self._chain(items)

    @v_args(meta=True)
    def not_(self, meta, items):
        return ast.UnOp("not", items[0], ast.Pos(meta.line, meta.column, self.source))

    @v_args(meta=True)
    def neg(self, meta, items):
        return ast.UnOp("-", items[0], ast.Pos(meta.line, meta.column, self.source))

    def num(self, items):
        return ast.Num(_number(str(items[0])), self._pos(items[0]))

    def ref(self, items):
        return ast.Ref(str(items[0]), self._pos(items[0]))

    def call(self, items):
        name, *args = items
        return ast.Call(str(name), tuple(a for a in args if a is not None), self._pos(name))

    @v_args(meta=True)
    def list(self, meta, items):
        return ast.ListExpr(tuple(i for i in items if i is not None), ast.Pos(meta.line, meta.column, self.source))


def _number(text: str):
    stripped = text.lstrip("+-")
    return int(text) if stripped.isdigit() else float(text)


def to_ast(tree, source: str):
    return _ToAst(source).transform(tree)
