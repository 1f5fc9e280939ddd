"""Where quantize-int8 puts QuantizeLinear/DequantizeLinear (docs/ARCHITECTURE.md, TensorRT facts), as a plan of layers.

A layer is one unit that is quantized or left in FP32 as a whole: a Conv, ConvTranspose, Gemm
or MatMul (its activation inputs per-tensor, its constant weight per-channel), the skip input
of a residual Add after a quantized conv, or the input of an average pool. Concat needs no
layer of its own: when its output is quantized, its inputs get Q/DQ too, and all of them share
one scale (a tie group, resolved when the plan is applied).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from graphopt.ir import Graph, Node, Value
from graphopt.ir.dtypes import DataType
from graphopt.ir.layouts import out_channels, weight_axes
from graphopt.quant.layer_options import excluded, matching_glob

FLOAT = DataType.FLOAT
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
CONV_OPS = ("Conv", "ConvTranspose")
POOL_OPS = ("AveragePool", "GlobalAveragePool")  # do not commute with quantization: Q/DQ on the input
RESIDUAL_OPS = ("Add", "Sum")
# Ops a per-tensor quantization commutes with: a Concat's shared scale reaches through them.
COMMUTING_OPS = ("MaxPool", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose")
SKIP_RULES = ("layernorm", "gelu", "softmax", "gemv", "tiny-conv")


def default_skip(method: str) -> tuple[str, ...]:
    """The exclusions int8 applies by default with calibration `method`. With auto, GELU inputs
    are quantized: a range chosen by its effect on the layer fits a GELU output's one-signed,
    long-tailed distribution (the OCR recognizer: 99.5% of lines as FP32 with its GELU convs in
    INT8); the accuracy floor still leaves any that hurt in FP32."""
    return tuple(s for s in SKIP_RULES if not (s == "gelu" and method == "auto"))


@dataclass
class Layer:
    node_id: int  # the node's IR id: valid on clones of the model, unlike its (optional) name
    label: str  # the node's label for reports (Node.label)
    op: str
    kind: str  # conv, gemm, matmul, bmm, residual, pool
    activations: list[tuple[int, str]] = field(default_factory=list)  # (input index, value name)
    weight: Optional[tuple[int, str, Optional[int]]] = None  # (input index, value name, axis; None = per-tensor)
    requires: Optional[int] = None  # a residual Add's conv (node id): without it quantized, its Q/DQ gains nothing


@dataclass
class Skipped:
    node_id: int
    label: str
    op: str
    reason: str

    def to_dict(self) -> dict:
        return {"node": self.label, "op": self.op, "reason": self.reason}


@dataclass
class PlacementRules:
    skip: tuple[str, ...] = SKIP_RULES
    min_channels: int = 4
    residual: bool = True
    bmm: bool = False
    per_channel: bool = True
    exclude_ops: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    force_nodes: tuple[str, ...] = ()  # quantized even where a default exclusion (skip) says no


def plan(graph: Graph, rules: PlacementRules, in_scope) -> tuple[list[Layer], list[Skipped]]:
    """The layers to quantize, in execution order, and the candidates left in FP32 with why."""
    layers: list[Layer] = []
    skipped: list[Skipped] = []
    quantized_convs: dict[int, int] = {}  # output value id -> node id of quantized conv layers
    for node in graph.toposort():
        if not node.is_standard:
            continue
        if node.op_type in COMPUTE_OPS:
            layer, reason = _compute_layer(graph, node, rules)
        elif node.op_type in RESIDUAL_OPS and rules.residual:
            layer, reason = _residual_layer(graph, node, quantized_convs, rules)
        elif node.op_type in POOL_OPS:
            layer, reason = _pool_layer(graph, node)
        else:
            continue
        if layer is None and reason is None:
            continue  # not a candidate at all (e.g. an Add of a constant)
        if layer is not None:
            # explicit exclusions always hold; a default one (skip=...) yields to force_nodes
            reason = excluded(node, rules.exclude_ops, rules.exclude_nodes, in_scope) or reason
            if reason and reason.startswith("skip=") and matching_glob(node, rules.force_nodes):
                reason = None
        if reason is None:
            layers.append(layer)
            if node.op_type in CONV_OPS:
                quantized_convs[node.outputs[0].id] = node.id
        else:
            skipped.append(Skipped(node.id, node.label, node.op_type, reason))
    return layers, skipped


def _skip(rules: PlacementRules, rule: str, why: str) -> Optional[str]:
    """The reason a default exclusion gives, or None when that exclusion is turned off."""
    return f"skip={rule}: {why}" if rule in rules.skip else None


def _float_activation(g: Graph, v: Optional[Value]) -> bool:
    return v is not None and v.dtype == FLOAT and g.const_value(v) is None


def _compute_layer(g: Graph, node: Node, rules: PlacementRules) -> tuple[Optional[Layer], Optional[str]]:
    """(layer, None) to quantize; (layer, "skip=...") for a default exclusion; (None, why) if it
    cannot be quantized at all."""
    ins = node.inputs
    x = ins[0] if ins else None
    w = ins[1] if len(ins) > 1 else None
    if not _float_activation(g, x):
        return None, "its first input is not a float32 activation"
    wdata = g.const_value(w)
    if wdata is None and w is not None and w.const is not None:
        return None, "its weight is an overridable graph input (IR v3): run with --initializers-as-constants"
    layer = Layer(node.id, node.label, node.op_type, "", [(0, x.name)])
    reason = None
    if node.op_type in CONV_OPS:
        if wdata is None or wdata.dtype != np.float32 or wdata.ndim < 3:
            return None, "its weight is not a constant float32 tensor"
        group = node.attr("group", 1)
        kernel = int(np.prod(wdata.shape[2:]))
        axis = weight_axes(node, wdata.ndim)[0]
        cout = out_channels(node.op_type, wdata, group)
        per_group_in = wdata.shape[1] if node.op_type == "Conv" else wdata.shape[0] // group
        reduce = per_group_in * kernel
        layer.kind = "conv"
        if min(cout, reduce) < rules.min_channels:
            reason = _skip(rules, "tiny-conv", f"{cout} output channels, {reduce} products per output "
                                               f"(min_channels={rules.min_channels})")
        if node.op_type == "ConvTranspose" and group > 1:
            axis = None  # axis 1 holds Cout/group entries, not one per output channel: one scale for all
    elif wdata is None:  # both operands are activations: attention-style products
        if not _float_activation(g, w):
            return None, "its second input is neither a float32 activation nor a constant"
        if not rules.bmm:
            return None, "both operands are activations (bmm=true quantizes them)"
        layer.kind = "bmm"
        layer.activations.append((1, w.name))
        return layer, _input_exclusion(g, x, rules) or _input_exclusion(g, w, rules)
    elif wdata.dtype != np.float32 or wdata.ndim < 2 or (node.op_type == "Gemm" and wdata.ndim != 2):
        return None, "its weight is not a float32 matrix"
    else:  # Gemm, MatMul: per-channel along the output axis of a 2-D weight, per-tensor otherwise
        axis = weight_axes(node, wdata.ndim)[0]
        n_out = wdata.shape[axis]
        layer.kind = node.op_type.lower()
        if wdata.ndim != 2:
            axis = None
    if layer.kind in ("gemm", "matmul") and (n_out == 1 or (x.shape is not None and len(x.shape) == 1)):
        reason = _skip(rules, "gemv", "it is a matrix-vector product")
    layer.weight = (1, w.name, axis if rules.per_channel else None)
    return layer, reason or _input_exclusion(g, x, rules)


def _input_exclusion(g: Graph, v: Value, rules: PlacementRules) -> Optional[str]:
    """Activations whose range suits symmetric INT8 badly: softmax probabilities and GELU
    outputs are (nearly) one-signed, so half of the INT8 range would go unused."""
    p = g.producer(v)
    if p is not None and p.op_type == "Softmax":
        return _skip(rules, "softmax", "its input is a Softmax output")
    if is_gelu_output(g, v):
        return _skip(rules, "gelu", "its input is a GELU output")
    return None


def is_gelu_output(g: Graph, v: Value, depth: int = 3) -> bool:
    """Whether `v` is the output of Gelu, or of its Erf/Tanh spellings: x * 0.5 * (1 + erf(...))."""
    p = g.producer(v)
    if p is None:
        return False
    if p.op_type in ("Gelu", "FastGelu", "BiasGelu"):
        return True
    if p.op_type != "Mul":
        return False
    frontier, seen = [p], 0
    while frontier and seen < depth:
        seen += 1
        nxt = []
        for n in frontier:
            for i in n.inputs:
                q = g.producer(i) if i is not None else None
                if q is None:
                    continue
                if q.op_type in ("Erf", "Tanh"):
                    return True
                if q.op_type in ("Mul", "Add"):
                    nxt.append(q)
        frontier = nxt
    return False


def _residual_layer(g: Graph, node: Node, quantized_convs: dict[int, int], rules: PlacementRules) -> tuple[Optional[Layer], Optional[str]]:
    ins = node.inputs
    if len(ins) != 2 or not all(_float_activation(g, v) for v in ins):
        return None, None
    if ins[0].shape is not None and ins[1].shape is not None and ins[0].shape != ins[1].shape:
        return None, None
    from_conv = [v.id in quantized_convs for v in ins]
    if not any(from_conv):
        return None, None
    skip = 1 if from_conv[0] else 0  # the input the conv does not produce (the second if both do)
    layer = Layer(node.id, node.label, node.op_type, "residual", [(skip, ins[skip].name)],
                  requires=quantized_convs[ins[1 - skip].id])
    feeds_norm = any(u.op_type in ("LayerNormalization", "ReduceMean") for u, _ in g.uses(node.outputs[0]))
    return layer, _skip(rules, "layernorm", "its output feeds a LayerNorm chain") if feeds_norm else None


def _pool_layer(g: Graph, node: Node) -> tuple[Optional[Layer], Optional[str]]:
    x = node.inputs[0]
    if not _float_activation(g, x):
        return None, None
    return Layer(node.id, node.label, node.op_type, "pool", [(0, x.name)]), None


def concat_ties(g: Graph, values: set[str]) -> list[tuple[str, list[tuple[Node, int, str]]]]:
    """For each quantized activation that comes from a Concat (directly or through ops that
    commute with quantization): (the value, every float input of that Concat as (concat, index,
    name)). A Concat input that is itself a Concat's output ties that Concat's inputs too."""
    out = []
    work, seen = sorted(values), set()
    while work:
        name = work.pop(0)
        concat = _concat_behind(g, name)
        if concat is None or concat.id in seen:
            continue
        seen.add(concat.id)
        inputs = [(concat, i, x.name) for i, x in enumerate(concat.inputs)
                  if x is not None and x.dtype == FLOAT]
        if len(inputs) == len(concat.inputs):
            out.append((name, inputs))
            work += [x for _, _, x in inputs]
    return out


def _concat_behind(g: Graph, name: str) -> Optional[Node]:
    v = g.value(name)
    p = g.producer(v) if v is not None else None
    while p is not None and p.op_type in COMMUTING_OPS and p.inputs and p.inputs[0] is not None:
        p = g.producer(p.inputs[0])
    return p if p is not None and p.op_type == "Concat" else None
