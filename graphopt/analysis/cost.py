"""Parameters and multiply-accumulates of a model's layers, from static shapes (symbolic dims
count as 1: a batch of one). FLOPs are 2 x MACs. What pruning reports before and after."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphopt.analysis.shapes import infer_shapes
from graphopt.ir import Model
from graphopt.ir.dtypes import is_float


@dataclass
class Cost:
    params: int  # elements of every float initializer in use
    macs: int  # of Conv, ConvTranspose, Gemm and MatMul

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self) -> dict:
        return {"params": self.params, "macs": self.macs, "flops": self.flops}


def _elements(shape) -> int:
    return int(np.prod([d if isinstance(d, int) else 1 for d in shape], dtype=np.int64)) if shape else 1


def model_cost(model: Model) -> Cost:
    infer_shapes(model)
    params = macs = 0
    for g in model.graph.walk():
        for v in g.initializers:
            # float, float16, bfloat16 weights something reads (not yet swept-up leftovers)
            if v.const is not None and is_float(v.const.dtype) and (g.has_uses(v) or v.is_graph_output):
                params += v.const.size
        for node in g.nodes:
            ins, outs = node.inputs, node.outputs
            if len(ins) < 2 or ins[1] is None or not outs or outs[0] is None or outs[0].shape is None:
                continue
            w = ins[1].shape
            if w is None:
                continue
            out = _elements(outs[0].shape)
            if node.op_type == "Conv" and len(w) >= 3:
                macs += out * _elements(w[1:])  # each output: Cin/group x kernel products
            elif node.op_type == "ConvTranspose" and len(w) >= 3 and ins[0].shape is not None:
                macs += _elements(ins[0].shape) * _elements(w[1:])  # each input spreads over Cout/group x kernel
            elif node.op_type in ("Gemm", "MatMul") and len(w) >= 1:
                k = w[1] if node.op_type == "Gemm" and node.attr("transB", 0) else (w[-2] if len(w) >= 2 else w[0])
                macs += out * (k if isinstance(k, int) else 1)
    return Cost(int(params), int(macs))
