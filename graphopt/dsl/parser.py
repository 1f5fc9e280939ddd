"""Parse pipeline text into the frozen AST (lark, LALR, grammar loaded once)."""

from __future__ import annotations

import functools
from importlib import resources

from lark import Lark, Token, Transformer, UnexpectedInput, v_args

from graphopt.dsl import ast
from graphopt.errors import PipelineError


@functools.lru_cache(maxsize=None)
def _parser() -> Lark:
    grammar = resources.files("graphopt.dsl").joinpath("pipeline.lark").read_text()
    # cache=True keeps the built LALR tables in the temp folder, keyed by the grammar's hash
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True, cache=True)


def _pos(tok: Token) -> ast.Pos:
    return ast.Pos(tok.line, tok.column)


@v_args(inline=True)
class _ToAst(Transformer):
    def start(self, *steps):
        return ast.Pipeline(tuple(steps))

    def step(self, name, options=None):
        return ast.Step(str(name), tuple(options or ()), _pos(name))

    def options(self, *opts):
        return [o for o in opts if o is not None]

    def option(self, name, value):
        return ast.Option(str(name), value, _pos(name))

    def ratio(self, tok):
        return str(tok)

    def number(self, tok):
        text = str(tok)
        return int(text) if text.lstrip("+-").isdigit() else float(text)

    def word(self, tok):
        return str(tok)

    def string(self, tok):
        return str(tok)[1:-1]


def parse_inline(text: str, *, source: str = "-p") -> ast.Pipeline:
    """Parse a `-p` string. `none` (or an empty string) is the empty pipeline."""
    if text.strip() in ("", "none"):
        return ast.Pipeline(())
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:
        col = getattr(e, "column", 0) or 0
        expected = sorted(getattr(e, "expected", None) or getattr(e, "allowed", None) or [])
        what = f"expected {' or '.join(_describe(t) for t in expected)}" if expected else "unexpected input"
        token = getattr(e, "token", None)
        got = "end of input" if token is None or token.type == "$END" else repr(str(token))
        if token is None and hasattr(e, "char"):
            got = repr(e.char)
        raise PipelineError(f"{source}:{getattr(e, 'line', 1)}:{col}: {what}, got {got} in {text!r}") from None
    return _ToAst().transform(tree)


_TOKEN_WORDS = {"COMMA": "','", "LBRACE": "'{'", "RBRACE": "'}'", "EQUAL": "'='", "NAME": "a name",
                "NUMBER": "a number", "RATIO": "a ratio like 2:4", "STRING": "a quoted string",
                "$END": "end of input"}


def _describe(token: str) -> str:
    return _TOKEN_WORDS.get(token, token)
