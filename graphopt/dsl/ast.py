"""Frozen AST of the pipeline language; every node keeps its source position."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union


@dataclass(frozen=True)
class Pos:
    line: int
    column: int
    source: str = "-p"


# ------------------------------------------------------------------------------ pipelines
@dataclass(frozen=True)
class Option:
    name: str
    value: Union[str, int, float]
    pos: Pos


@dataclass(frozen=True)
class Scope:
    mode: str  # "on" or "except"
    kind: str  # "ops" or "nodes"
    items: tuple[str, ...]
    pos: Pos


@dataclass(frozen=True)
class Step:
    name: str
    options: tuple[Option, ...]
    pos: Pos
    scopes: tuple[Scope, ...] = ()


@dataclass(frozen=True)
class FixPoint:
    steps: tuple
    pos: Pos
    max_iterations: Optional[int] = None


@dataclass(frozen=True)
class Pipeline:
    steps: tuple


# ------------------------------------------------------------------------------ files
@dataclass(frozen=True)
class Include:
    path: str
    pos: Pos


@dataclass(frozen=True)
class InputShape:
    name: str
    dims: tuple[int, ...]
    pos: Pos


@dataclass(frozen=True)
class Settings:
    kind: str  # "validate", "calibrate" or "output"
    options: tuple[Option, ...]
    pos: Pos


@dataclass(frozen=True)
class PipelineBlock:
    steps: tuple
    pos: Pos


# ------------------------------------------------------------------------------ rules
@dataclass(frozen=True)
class Num:
    value: Union[int, float]
    pos: Pos


@dataclass(frozen=True)
class Str:
    value: str
    pos: Pos


@dataclass(frozen=True)
class Ref:
    name: str
    pos: Pos


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple
    pos: Pos


@dataclass(frozen=True)
class ListExpr:
    items: tuple
    pos: Pos


@dataclass(frozen=True)
class BinOp:
    op: str  # + - * / == != < <= > >= and or
    left: object
    right: object
    pos: Pos


@dataclass(frozen=True)
class UnOp:
    op: str  # "-" or "not"
    operand: object
    pos: Pos


@dataclass(frozen=True)
class Attr:
    name: str
    value: object  # an expression
    pos: Pos


@dataclass(frozen=True)
class OpStmt:
    """`out = Op(args) {attrs}` in a match or replace block (None in args: an absent input)."""

    out: str
    op: str
    args: tuple[Optional[str], ...]
    attrs: tuple[Attr, ...]
    pos: Pos


@dataclass(frozen=True)
class Rule:
    name: str
    benefit: int
    match: tuple[OpStmt, ...]
    where: tuple
    replace: tuple[OpStmt, ...]
    pos: Pos


@dataclass(frozen=True)
class Comment:
    text: str
    line: int
    trailing: bool = False  # after code on its line


@dataclass(frozen=True)
class File:
    statements: tuple
    source: str
    comments: tuple[Comment, ...] = field(default=())
