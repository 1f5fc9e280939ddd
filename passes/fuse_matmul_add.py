"""fuse-matmul-add: MatMul of two 2-D tensors followed by Add becomes Gemm, where Gemm's
unidirectional broadcasting of its C input gives the same result."""

from __future__ import annotations

from typing import Optional

from graphopt.ir.dtypes import DataType
from graphopt.rewrite import Builder, Match, Op, Rule, RulePass, Var


class MatMulAdd(Rule):
    name = "matmul-add-to-gemm"
    pattern = Op("Add", Op("MatMul", Var("a"), Var("b"), name="mm"), Var("c"), name="add", commute=True)

    def check(self, m: Match) -> Optional[str]:
        a, b, c = m.value("a"), m.value("b"), m.value("c")
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
        return [b.op("Gemm", [m["a"], m["b"], m["c"]])]


class FuseMatMulAdd(RulePass):
    name = "fuse-matmul-add"
    summary = "turn 2-D MatMul + Add into Gemm where the shapes allow"
    rules = [MatMulAdd()]
    stat = "fused"
