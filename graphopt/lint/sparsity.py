"""Weight sparsity of a model's layers, and TensorRT's 2:4 structured sparsity (docs/ARCHITECTURE.md, TensorRT facts): in
every group of 4 consecutive input channels at least 2 weights are zero, only where that axis is
a multiple of 4. Weights stored as INT8 behind a DequantizeLinear are read there (symmetric
quantization keeps zeros zero, so the pattern survives int8).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from graphopt.ir import Graph, Model, Node, Value
from graphopt.ir.layouts import LAYER_OPS, weight_axes


def weight_of(g: Graph, node: Node) -> tuple[Optional[Value], Optional[np.ndarray]]:
    """(the constant weight value a layer reads, its data) or (None, None). Looks through a
    DequantizeLinear of a constant (the data is then the quantized integers)."""
    ins = node.inputs
    if node.op_type not in LAYER_OPS or len(ins) < 2 or ins[1] is None:
        return None, None
    w = ins[1]
    data = g.const_value(w)
    if data is None:
        p = g.producer(w)
        if p is not None and p.op_type == "DequantizeLinear" and p.inputs and p.inputs[0] is not None:
            data = g.const_value(p.inputs[0])
    if data is None or data.dtype.kind not in "fiu" or data.ndim < 2:
        return None, None
    return w, data


def input_channel_axis(node: Node, w: np.ndarray) -> int:
    """The axis of a layer's weight that runs over its input channels (what 2:4 groups)."""
    return weight_axes(node, w.ndim)[1]


def two_four_mask(w: np.ndarray, axis: int) -> np.ndarray:
    """True where a weight survives 2:4 pruning: the 2 largest magnitudes of every group of 4
    consecutive entries along `axis` (which must be a multiple of 4)."""
    moved = np.moveaxis(np.abs(w), axis, -1)
    groups = moved.reshape(moved.shape[:-1] + (moved.shape[-1] // 4, 4))
    order = np.argsort(groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, bool)
    np.put_along_axis(keep, order[..., 2:], True, axis=-1)
    return np.moveaxis(keep.reshape(moved.shape), -1, axis)


def holds_two_four(w: np.ndarray, axis: int) -> bool:
    moved = np.moveaxis(w, axis, -1)
    groups = moved.reshape(moved.shape[:-1] + (moved.shape[-1] // 4, 4))
    return bool(np.all(np.count_nonzero(groups, axis=-1) <= 2))


@dataclass
class LayerSparsity:
    node: str
    op: str
    shape: list
    params: int
    sparsity: float  # share of zero weights, percent
    axis: int  # input-channel axis
    eligible: bool  # that axis is a multiple of 4
    two_four: Optional[bool]  # the 2:4 pattern holds (None when not eligible)

    def to_dict(self) -> dict:
        return asdict(self)


def layer_sparsity(model: Model) -> list[LayerSparsity]:
    out = []
    for g in model.graph.walk():
        for node in g.toposort():
            _, w = weight_of(g, node)
            if w is None:
                continue
            axis = input_channel_axis(node, w)
            eligible = w.shape[axis] % 4 == 0
            out.append(LayerSparsity(node.label, node.op_type, list(w.shape), int(w.size),
                                     100.0 * (1 - np.count_nonzero(w) / w.size), axis, eligible,
                                     holds_two_four(w, axis) if eligible else None))
    return out
