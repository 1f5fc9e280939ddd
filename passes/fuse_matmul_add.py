"""fuse-matmul-add: MatMul of two 2-D tensors followed by Add becomes Gemm, where Gemm's
unidirectional broadcasting of its C input gives the same result."""

from __future__ import annotations

from typing import Optional

from graphopt.analysis.symbolic import engine_for, engine_scope
from graphopt.ir.dtypes import DataType
from graphopt.rewrite import Builder, Match, Op, Rule, RulePass, Var


class MatMulAdd(Rule):
    name = "matmul-add-to-gemm"
    pattern = Op("Add", Op("MatMul", Var("a"), Var("b"), name="mm"), Var("c"), name="add", commute=True)

    def check(self, m: Match) -> Optional[str]:
        a, b, c = m.value("a"), m.value("b"), m.value("c")
        if any(v.shape is not None and len(v.shape) != 2 for v in (a, b)):
            return "MatMul inputs are not known to be 2-D"  # an inferred rank is exact: no need to refine
        engine = engine_for(m.graph)  # ranks also where inference lost them (a Reshape by a computed shape)
        da, db = engine.dims(a), engine.dims(b)
        if da is None or db is None or len(da) != 2 or len(db) != 2:
            return "MatMul inputs are not known to be 2-D"
        if a.dtype not in (DataType.FLOAT, DataType.FLOAT16, DataType.DOUBLE, DataType.BFLOAT16) or c.dtype != a.dtype:
            return "not a float MatMul, or the Add mixes types"
        if c.shape is None or len(c.shape) > 2:
            return "the Add's other input has unknown or higher rank"
        mn = (da[0], db[1])
        for dc, dy in zip(reversed(engine.dims(c) or c.shape), reversed(mn)):
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

    def run(self, graph, ctx):
        with engine_scope():  # a Gemm replaces MatMul+Add with the same result: known dims stay valid
            return super().run(graph, ctx)
