"""fuse-matmul-add: MatMul of two 2-D tensors followed by Add becomes Gemm, where Gemm's
unidirectional broadcasting of its C input gives the same result."""

from __future__ import annotations

from typing import Optional

from graphopt.analysis.shapes import infer_shapes
from graphopt.ir import Graph
from graphopt.ir.dtypes import DataType
from graphopt.pipeline.base import Pass, PassContext, PassResult
from graphopt.rewrite.driver import Driver
from graphopt.rewrite.pattern import Match, Op, Var
from graphopt.rewrite.rule import Builder, Rule


class MatMulAdd(Rule):
    name = "matmul-add-to-gemm"

    def __init__(self, bias_first: bool):
        mm = Op("MatMul", Var("a"), Var("b"), name="mm")
        self.pattern = Op("Add", Var("c"), mm, name="add") if bias_first else Op("Add", mm, Var("c"), name="add")

    def check(self, m: Match) -> Optional[str]:
        a, b, c = m.values["a"], m.values["b"], m.values["c"]
        if a.shape is None or b.shape is None or len(a.shape) != 2 or len(b.shape) != 2:
            return "MatMul inputs are not known to be 2-D"
        if a.dtype not in (DataType.FLOAT, DataType.FLOAT16, DataType.DOUBLE, DataType.BFLOAT16) or c.dtype != a.dtype:
            return "not a float MatMul, or the Add mixes types"
        if c.shape is None or len(c.shape) > 2:
            return "the Add's other input has unknown or higher rank"
        mn = (a.shape[0], b.shape[1])
        for dc, dy in zip(reversed(c.shape), reversed(mn)):
            if dc != 1 and dc != dy:
                return "the Add would broadcast the product to a new shape"
        return None

    def rewrite(self, m: Match, b: Builder):
        return [b.op("Gemm", [m.values["a"], m.values["b"], m.values["c"]])]


class FuseMatMulAdd(Pass):
    name = "fuse-matmul-add"
    summary = "turn 2-D MatMul + Add into Gemm where the shapes allow"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        driver = Driver.for_pass([MatMulAdd(False), MatMulAdd(True)], ctx)
        if not driver.applicable(graph):
            return PassResult(False, {"fused": 0})
        infer_shapes(ctx.model)
        fired = driver.run(graph, ctx.in_scope)
        return PassResult(bool(fired), {"fused": fired.get("matmul-add-to-gemm", 0)})
