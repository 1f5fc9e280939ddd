"""`graphopt fmt`: the canonical text of a pipeline file.

One statement per line, four-space indents, one blank line between top-level statements,
options and settings as `name = value`, full-line comments kept before what follows them.
Formatting the output again changes nothing.
"""

from __future__ import annotations

from graphopt.dsl import ast
from graphopt.dsl.rules import format_expr

INDENT = "    "


def format_file(f: ast.File) -> str:
    trailing = {c.line: c for c in f.comments if c.trailing}
    comments = sorted(f.comments, key=lambda c: c.line)
    out: list[str] = []
    state = {"i": 0}
    placed: set[int] = set()

    def emit(line: str, src_line: int) -> None:
        """A formatted line, with the trailing comment of its source line, if any."""
        c = trailing.get(src_line)
        if c is not None and src_line not in placed:
            placed.add(src_line)
            line += "  " + c.text
        out.append(line)

    def flush(before_line: int, indent: str) -> None:
        last = None
        while state["i"] < len(comments) and comments[state["i"]].line < before_line:
            c = comments[state["i"]]
            if c.trailing and c.line in placed:
                state["i"] += 1
                continue
            if last is not None and c.line - last.line > 1:
                out.append("")  # blank lines between comment blocks stay (as one)
            out.append(indent + c.text)
            last = c
            state["i"] += 1
        if last is not None and before_line - last.line > 1 and before_line < 10 ** 9:
            out.append("")  # a comment block set apart from what follows stays apart

    for n, st in enumerate(f.statements):
        if n:
            out.append("")
        flush(st.pos.line, "")
        if isinstance(st, ast.Include):
            emit(f'include "{st.path}"', st.pos.line)
        elif isinstance(st, ast.InputShape):
            emit(f"input {st.name}: {'x'.join(map(str, st.dims))}", st.pos.line)
        elif isinstance(st, ast.Settings):
            emit(f"{st.kind} {{", st.pos.line)
            for opt in st.options:
                flush(opt.pos.line, INDENT)
                emit(f"{INDENT}{opt.name} = {format_value(opt.value)}", opt.pos.line)
            out.append("}")
        elif isinstance(st, ast.PipelineBlock):
            emit("pipeline {", st.pos.line)
            _steps(st.steps, INDENT, emit, flush)
            out.append("}")
        elif isinstance(st, ast.Rule):
            _rule(st, emit, out, flush)
    flush(10 ** 9, "")
    return "\n".join(out) + "\n"


def _steps(steps, indent: str, emit, flush) -> None:
    for st in steps:
        flush(st.pos.line, indent)
        if isinstance(st, ast.FixPoint):
            cap = f" {st.max_iterations}" if st.max_iterations is not None else ""
            emit(f"{indent}fixpoint{cap} {{", st.pos.line)
            _steps(st.steps, indent + INDENT, emit, flush)
            emit(f"{indent}}}", -1)
        else:
            emit(indent + format_step(st), st.pos.line)


def format_step(st: ast.Step) -> str:
    text = st.name
    if st.options:
        text += "{" + ", ".join(f"{o.name}={format_value(o.value)}" for o in st.options) + "}"
    for sc in st.scopes:
        items = ", ".join(i if _is_word(i) else f'"{i}"' for i in sc.items)
        text += f" {sc.mode} {sc.kind} [{items}]"
    return text


def _rule(r: ast.Rule, emit, out: list, flush) -> None:
    benefit = f" benefit {r.benefit}" if r.benefit != 1 else ""
    emit(f"rule {r.name}{benefit} {{", r.pos.line)
    out.append(f"{INDENT}match {{")
    for s in r.match:
        flush(s.pos.line, INDENT * 2)
        emit(INDENT * 2 + _op_stmt(s), s.pos.line)
    out.append(f"{INDENT}}}")
    if r.where:
        out.append(f"{INDENT}where {{")
        for i, e in enumerate(r.where):
            flush(e.pos.line, INDENT * 2)
            emit(INDENT * 2 + format_expr(e) + (";" if i < len(r.where) - 1 else ""), e.pos.line)
        out.append(f"{INDENT}}}")
    out.append(f"{INDENT}replace {{")
    for s in r.replace:
        flush(s.pos.line, INDENT * 2)
        emit(INDENT * 2 + _op_stmt(s), s.pos.line)
    out.append(f"{INDENT}}}")
    out.append("}")


def _op_stmt(s: ast.OpStmt) -> str:
    args = ", ".join("_" if a is None else a for a in s.args)
    attrs = ""
    if s.attrs:
        attrs = " {" + ", ".join(f"{a.name} = {format_expr(a.value)}" for a in s.attrs) + "}"
    return f"{s.out} = {s.op}({args}){attrs}"


def format_value(v) -> str:
    if isinstance(v, str):
        return v if _is_word(v) or _is_ratio(v) else f'"{v}"'
    return repr(v)


def _is_word(v: str) -> bool:
    import re

    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-.]*", v))


def _is_ratio(v: str) -> bool:
    import re

    return bool(re.fullmatch(r"[0-9]+:[0-9]+", v))
