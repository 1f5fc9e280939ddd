"""Parse pipeline text (a `-p` string or a .gopt file) into the frozen AST.

The grammar (graphopt.lark, LALR, in grammar.py) is loaded once per process and its tables are
cached. A `-p` string that is only a comma list of pass names (the common case) is read without
loading the grammar at all. Errors name source:line:col, show the line with a caret and say what
was expected.
"""

from __future__ import annotations

import re

from graphopt.dsl import ast
from graphopt.errors import PipelineError


class DslError(PipelineError):
    """A pipeline-language error: position, the offending line and a caret."""

    def __init__(self, message: str):
        Exception.__init__(self, message)  # keep the lines: they carry the caret


def error_at(pos: ast.Pos, message: str, text: str | None) -> DslError:
    lines = text.splitlines() if text else []
    src_line = lines[pos.line - 1] if 0 < pos.line <= len(lines) else ""
    caret = " " * max(pos.column - 1, 0) + "^"
    detail = f"\n    {src_line}\n    {caret}" if src_line else ""
    return DslError(f"{pos.source}:{pos.line}:{pos.column}: {message}{detail}")


def parse_inline(text: str, *, source: str = "-p") -> ast.Pipeline:
    """Parse a `-p` string. `none` (or an empty string) is the empty pipeline."""
    if text.strip() in ("", "none"):
        return ast.Pipeline(())
    simple = _simple_inline(text, source)
    if simple is not None:
        return simple
    from graphopt.dsl.grammar import parse_tree, to_ast

    return to_ast(parse_tree(text, "inline", source), source)


def parse_file(text: str, *, source: str) -> ast.File:
    comments: list[ast.Comment] = []
    for i, line in enumerate(text.splitlines(), 1):
        at = _comment_start(line)
        if at is not None:
            comments.append(ast.Comment(line[at:].rstrip(), i, trailing=bool(line[:at].strip())))
    from graphopt.dsl.grammar import parse_tree, to_ast

    statements = to_ast(parse_tree(text, "file", source), source)
    return ast.File(tuple(statements), source, tuple(comments))


def _comment_start(line: str):
    """Where a '#' comment starts on a line, outside quoted strings; None if there is none."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return i
    return None


# What the grammar's NAME token matches; keywords of the language are never pass names.
_NAME = r"[A-Za-z_][A-Za-z0-9_\-.]*"
_SIMPLE = re.compile(rf"\s*{_NAME}(\s*,\s*{_NAME})*\s*")
_KEYWORDS = {"fixpoint", "on", "except", "ops", "nodes", "include", "input", "pipeline", "validate",
             "calibrate", "output", "rule", "match", "where", "replace", "benefit", "and", "or", "not"}


def _simple_inline(text: str, source: str):
    """`fuse,fold`-style text as the AST the grammar would build, or None for anything else."""
    if "\n" in text or not _SIMPLE.fullmatch(text):
        return None
    steps = []
    for m in re.finditer(_NAME, text):
        if m.group() in _KEYWORDS:
            return None
        steps.append(ast.Step(m.group(), (), ast.Pos(1, m.start() + 1, source)))
    return ast.Pipeline(tuple(steps))


