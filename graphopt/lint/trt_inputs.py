"""Which node inputs TensorRT's ONNX parser needs as build-time constants (docs/ARCHITECTURE.md, TensorRT facts)."""

from __future__ import annotations

from graphopt.ir import Node

# op type -> input positions that must be constant at engine build time
BUILD_TIME_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Resize": (1, 2, 3),
    "Upsample": (1,), "Pad": (1, 2, 3), "TopK": (1,), "OneHot": (1,), "Dropout": (2,),
    "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,),
    "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,),
    "ReduceSumSquare": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "ConstantOfShape": (0,),
}


def build_time_inputs(node: Node) -> tuple[int, ...]:
    if not node.is_standard:
        return ()
    return BUILD_TIME_INPUTS.get(node.op_type, ())
