"""Pattern rewriting: patterns, rules, the driver that applies them and the pass that wraps them
(docs in graphopt/rewrite/rule.py).

    class PadIntoConv(Rule):
        name = "pad-into-conv"
        pattern = Op("Conv", Op("Pad", Var("x"), Var("pads"), name="pad"), Var("w"), Opt(Var("b")), name="conv")

        def check(self, m):                     # None, or why this match is declined
            pads = m.const("pads")              # folded with the model's opset (m.ctx)
            return None if pads is not None else "the pads are not constant"

        def rewrite(self, m, b):                # values replacing the root's outputs
            return [b.op("Conv", [m["x"], m["w"], m["b"]], {...})]

    class FusePadConv(RulePass):
        name, summary, stat = "fuse-pad-conv", "...", "fused"
        rules = [PadIntoConv()]
"""

from graphopt.rewrite.driver import Driver, NearMiss
from graphopt.rewrite.pattern import (
           Absent,
           Match,
           Op,
           Opt,
           RewriteContext,
           Var,
           match,
           matches,
)
from graphopt.rewrite.rule import Builder, Rule, forward_reason
from graphopt.rewrite.rule_pass import RulePass

__all__ = ["Absent", "Builder", "Driver", "Match", "NearMiss", "Op", "Opt", "RewriteContext", "Rule", "RulePass",
           "Var", "forward_reason", "match", "matches"]
