"""graphopt's pass library. One pass per file; the registry below is the explicit list."""

from __future__ import annotations

from graphopt.passes.dead_code_elimination import DeadCodeElimination
from graphopt.passes.eliminate_identity import EliminateIdentity
from graphopt.registry import Alias, Registry

PASSES = [
    DeadCodeElimination,
    EliminateIdentity,
]

ALIASES = [
    Alias("cleanup", "remove Identity nodes and dead code, to a fixed point",
          ("eliminate-identity", "dce"), fixed_point=True),
]


def default_registry() -> Registry:
    return Registry(PASSES, ALIASES)
