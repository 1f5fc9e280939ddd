"""Weight layouts: which axis of a layer's weight runs over its output channels and which over
its input channels, per-channel constants, and scaling a weight's output channels.

    Conv           [Cout, Cin/group, k...]   out 0, in 1
    ConvTranspose  [Cin, Cout/group, k...]   out 1, in 0
    Gemm           B [K, N], or [N, K] when transB=1
    MatMul         B [..., K, N]             out -1, in -2

Every pass and checker that needs these asks here (quantization scales run along the output
axis, 2:4 sparsity along the input axis, channel pruning slices both).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def output_channel_axis(op_type: str, weight_rank: int, trans_b: int = 0) -> int:
    """The axis of a layer's weight (input 1) that has one entry per output channel."""
    if op_type == "Conv":
        return 0
    if op_type == "ConvTranspose":
        return 1
    if op_type == "Gemm":
        return 0 if trans_b else 1
    return weight_rank - 1  # MatMul


def input_channel_axis(op_type: str, weight_rank: int, trans_b: int = 0) -> int:
    """The axis of a layer's weight that runs over its input channels (what a layer sums over)."""
    if op_type == "Conv":
        return 1
    if op_type == "ConvTranspose":
        return 0
    if op_type == "Gemm":
        return 1 if trans_b else 0
    return weight_rank - 2  # MatMul


def weight_axes(node, weight_rank: int) -> tuple[int, int]:
    """(output-channel axis, input-channel axis) of a layer node's weight."""
    trans_b = node.attr("transB", 0) if node.op_type == "Gemm" else 0
    return (output_channel_axis(node.op_type, weight_rank, trans_b),
            input_channel_axis(node.op_type, weight_rank, trans_b))


def per_channel(c: np.ndarray, rank: int, channels: int, axis: int = 1) -> Optional[np.ndarray]:
    """`c` as a vector of length `channels` if, broadcast against a rank-`rank` tensor, it varies
    only along `axis` (or is a scalar); None if it would broadcast any other way."""
    if c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + tuple(c.shape)
    for i, d in enumerate(shape):
        if i != axis and d != 1:
            return None
    if shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1), (channels,)).astype(np.float64)


def scale_output_channels(op_type: str, w: np.ndarray, s: np.ndarray, group: int = 1) -> np.ndarray:
    """Conv/ConvTranspose weight with every output channel multiplied by `s`. The factor is
    computed in float64 and rounded once; the product is taken in the weight's own dtype (one
    more rounding), which keeps large weights from being copied to float64."""
    s = s.astype(w.dtype)
    if op_type == "Conv":  # [Cout, Cin/g, k...]
        return w * s.reshape((-1,) + (1,) * (w.ndim - 1))
    # ConvTranspose: [Cin, Cout/g, k...]; output channel = group index * Cout/g + j
    cin, cout_g = w.shape[0], w.shape[1]
    ws = w.reshape((group, cin // group, cout_g) + w.shape[2:])
    ss = s.reshape((group, 1, cout_g) + (1,) * (w.ndim - 2))
    return (ws * ss).reshape(w.shape)


def scale_layer_outputs(node, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """A layer node's weight with every output channel multiplied by `s` (any layer op)."""
    if node.op_type in ("Conv", "ConvTranspose"):
        return scale_output_channels(node.op_type, w, s, node.attr("group", 1))
    axis = weight_axes(node, w.ndim)[0]
    shape = [1] * w.ndim
    shape[axis] = -1
    return (w.astype(np.float64) * s.reshape(shape)).astype(w.dtype)


def out_channels(op_type: str, w: np.ndarray, group: int = 1) -> int:
    return w.shape[0] if op_type == "Conv" else w.shape[1] * group
