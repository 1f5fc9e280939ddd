"""equalize-cross-layer: cross-layer equalization (Nagel et al. 2019, data-free quantization).

In a chain layer1 -> (nothing, Relu, LeakyRelu or PRelu) -> layer2 (Conv -> Conv, depthwise and
grouped included; Gemm/MatMul -> Gemm/MatMul, with constant weights; a MatMul's bias Add may sit
between), output channel i of layer1's weight and bias is divided by s_i and input channel i of
layer2's weight multiplied by s_i, with s_i = sqrt(r1_i / r2_i) from the per-channel ranges of the
two weights: both channels end with the range sqrt(r1_i r2_i), which per-tensor and per-channel
INT8 weights quantize better. The float outputs are unchanged: those activations commute with a
positive per-channel factor. ReLU6/Clip, HardSwish, HardSigmoid and Sigmoid do not and are never
crossed (the report names such chains). layer1's output and the activation's must have no other
reader. A layer in two chains is rescaled by both; sweeps repeat until every factor is within
`tolerance` of 1. Data-free: no calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphopt.ir import Graph
from graphopt.pipeline.base import Pass, PassContext, PassResult, require_at_least, require_fraction
from graphopt.quant import equalize


@dataclass
class EqualizeCrossLayerOptions:
    iterations: int = field(default=20, metadata={"help": "sweeps over the chains at most (a layer in two chains "
                                                          "is rescaled by both)"})
    tolerance: float = field(default=0.01, metadata={"help": "a chain whose factors are all within this of 1 is "
                                                             "equalized already"})

    def __post_init__(self):
        require_at_least(self, "iterations", 1)
        require_fraction(self, "tolerance")


class EqualizeCrossLayer(Pass):
    name = "equalize-cross-layer"
    summary = "cross-layer equalization: balance the channel ranges of Conv/Gemm/MatMul chains (exact, data-free)"
    Options = EqualizeCrossLayerOptions

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        pairs, skipped = equalize.cle_pairs(graph, ctx.in_scope)
        edits, changed = equalize.cle_plan(graph, pairs, self.options.iterations, self.options.tolerance)
        ctx.reports[self.name] = {"pairs": changed, "equalized_already": len(pairs) - len(changed),
                                  "skipped": skipped}
        if not edits:
            return PassResult(False, {"pairs": 0})
        equalize.apply_edits(graph, edits)
        return PassResult(True, {"pairs": len(changed)})
