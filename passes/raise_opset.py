"""raise-opset: convert the model to a newer default-domain opset (onnx's version converter),
for passes that need newer operators, e.g. per-channel DequantizeLinear (opset 13) for int8."""

from __future__ import annotations

from dataclasses import dataclass, field

from graphopt.ir import Graph
from graphopt.onnx_io import opset
from graphopt.pipeline.base import Pass, PassContext, PassResult


@dataclass
class RaiseOpsetOptions:
    to: int = field(default=13, metadata={"help": "the opset the model is raised to if it is older"})


class RaiseOpset(Pass):
    name = "raise-opset"
    summary = "convert the model to a newer opset (no change if it is already that new)"
    Options = RaiseOpsetOptions

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        model = ctx.model
        before = model.opset
        if before >= self.options.to:
            return PassResult(False)
        converted = opset.convert(model, self.options.to)
        for k in ("graph", "opset_imports", "functions", "ir_version"):
            setattr(model, k, getattr(converted, k))
        model.shapes_inferred_at = None
        return PassResult(True, {"from": before, "to": model.opset})
