"""Frozen AST of the pipeline language; every node keeps its source position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Pos:
    line: int
    column: int


@dataclass(frozen=True)
class Option:
    name: str
    value: Union[str, int, float]
    pos: Pos


@dataclass(frozen=True)
class Step:
    name: str
    options: tuple[Option, ...]
    pos: Pos


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]
