"""Pattern rewriting: patterns, rules and the driver that applies them (docs/ARCHITECTURE.md)."""

from graphopt.rewrite.driver import Driver, NearMiss
from graphopt.rewrite.pattern import Absent, Match, Op, Opt, Var, match
from graphopt.rewrite.rule import Builder, Rule

__all__ = ["Absent", "Builder", "Driver", "Match", "NearMiss", "Op", "Opt", "Rule", "Var", "match"]
