"""qdq-lint: Q/DQ placements TensorRT's explicit quantization rejects or runs slowly (docs/ARCHITECTURE.md, TensorRT facts).

Errors: a zero point that is not INT8 or not zero, a non-positive or non-finite scale, a
per-channel scale without an explicit axis or of the wrong length, per-channel scales on an
activation, Q/DQ on a bias, Q/DQ on both inputs of a residual Add. Warnings: a Q with no DQ
after it, a DQ of a computed tensor with no Q before it, a pair whose scales differ.

`unfused_qdq` says which Q/DQ TensorRT cannot fuse into a layer (the unpaired ones above, a DQ
read by an op TensorRT runs in float, per-channel scales on an activation): trt-check reports
them as speed warnings.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from graphopt.ir import Graph, Model, Node
from graphopt.ir.dtypes import DataType
from graphopt.ir.layouts import LAYER_OPS, weight_axes
from graphopt.lint.findings import Finding
from graphopt.quant.placement import COMMUTING_OPS, COMPUTE_OPS, POOL_OPS, RESIDUAL_OPS

INT8 = DataType.INT8
BIAS_INPUT = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}


def qdq_lint(model: Model) -> list[Finding]:
    findings: list[Finding] = []
    for g in model.graph.walk():
        _lint_graph(g, findings)
    return findings


def has_qdq(model: Model) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for g in model.graph.walk() for n in g.nodes)


def _lint_graph(g: Graph, out: list[Finding]) -> None:
    for node in g.toposort():
        if not node.is_standard:
            continue
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            _lint_qdq(g, node, out)
        if node.op_type in BIAS_INPUT:
            ins = node.inputs
            i = BIAS_INPUT[node.op_type]
            if i < len(ins) and ins[i] is not None and _producer_op(g, ins[i]) == "DequantizeLinear":
                out.append(Finding("error", node.name, node.op_type, "its bias comes through DequantizeLinear; "
                                   "TensorRT fails to parse a quantized bias (keep the bias in float)"))
        if node.op_type in ("Add", "Sum") and len(node.inputs) == 2:
            if all(_is_activation_dq(g, v) for v in node.inputs):
                out.append(Finding("error", node.name, node.op_type, "Q/DQ on both inputs of a residual Add; TensorRT "
                                   "fuses the Add into the conv only when the conv's side is not quantized"))


def _producer_op(g: Graph, v) -> Optional[str]:
    p = g.producer(v) if v is not None else None
    return p.op_type if p is not None else None


def _is_activation_dq(g: Graph, v) -> bool:
    p = g.producer(v) if v is not None else None
    return p is not None and p.op_type == "DequantizeLinear" and _producer_op(g, p.inputs[0]) == "QuantizeLinear"


def _lint_qdq(g: Graph, node: Node, out: list[Finding]) -> None:
    def report(severity: str, message: str) -> None:
        out.append(Finding(severity, node.name, node.op_type, message))

    ins = node.inputs
    x = ins[0]
    scale = g.const_value(ins[1]) if len(ins) > 1 else None
    zp_v = ins[2] if len(ins) > 2 else None
    zp = g.const_value(zp_v)
    if scale is None:
        report("error", "its scale is not a constant")
    else:
        if not np.all(np.isfinite(scale)) or not np.all(scale > 0):
            report("error", "its scale is not strictly positive and finite")
        if scale.size > 1:
            axis = node.attrs.get("axis")
            if axis is None:
                report("error", "per-channel scale without an explicit axis (ONNX's default axis is 1)")
            elif x is not None and x.shape is not None:
                ax = axis.value + len(x.shape) if axis.value < 0 else axis.value
                if not 0 <= ax < len(x.shape):
                    report("error", f"axis {axis.value} is out of range for a rank-{len(x.shape)} tensor")
                elif isinstance(x.shape[ax], int) and x.shape[ax] != scale.size:
                    report("error", f"{scale.size} scales along axis {axis.value}, which has {x.shape[ax]} entries")
                else:
                    _lint_weight_axis(g, node, ax, report)
            if _per_channel_activation(g, node):
                report("error", PER_CHANNEL_ACTIVATION)
    if zp_v is None:
        if node.op_type == "QuantizeLinear":
            report("error", "no zero point: QuantizeLinear then outputs UINT8; TensorRT needs an INT8 zero point of 0")
        elif x is not None and x.dtype is not None and x.dtype != INT8:
            report("error", "it dequantizes a tensor that is not INT8")
    elif zp is None:
        report("error", "its zero point is not a constant")
    else:
        if zp_v.dtype != INT8:
            report("error", "its zero point is not INT8 (TensorRT quantization is signed and symmetric)")
        if np.any(zp != 0):
            report("error", "non-zero zero point (TensorRT quantization is symmetric)")
    for _, message in _unpaired(g, node):
        report("warning", message)
    if node.op_type == "QuantizeLinear":
        for u, _ in g.uses(node.outputs[0]):
            other = g.const_value(u.inputs[1]) if u.op_type == "DequantizeLinear" and len(u.inputs) > 1 else None
            if scale is not None and other is not None and (other.shape != scale.shape or np.any(other != scale)):
                report("warning", f"the DequantizeLinear {u.name!r} after it has a different scale")


# What TensorRT does with Q/DQ (docs/ARCHITECTURE.md, TensorRT facts): it fuses a DequantizeLinear
# into the Conv/ConvTranspose/Gemm/MatMul reading it (weights and activations) and the
# QuantizeLinear after such a layer into it; average pools and residual Adds run in INT8 between
# Q/DQ; per-tensor Q/DQ moves through the ops that commute with it (a Concat's inputs share its
# scale). Anything else reading a DequantizeLinear runs in float, the pair as two extra layers.
FUSING_OPS = COMPUTE_OPS
INT8_OPS = POOL_OPS + RESIDUAL_OPS
THROUGH_OPS = COMMUTING_OPS + ("Concat",)
PER_CHANNEL_ACTIVATION = "per-channel scales on an activation; TensorRT takes them only for constant weights"


def unfused_qdq(g: Graph) -> list[tuple[str, Node, str]]:
    """(kind, node, message) for each Q/DQ of `g` TensorRT cannot fuse into a layer: it runs as a
    layer of its own and the op after it in float. Kinds: `q-without-dq` (a QuantizeLinear read
    by anything but a DequantizeLinear, or by nothing), `dq-without-q` (a DequantizeLinear of a
    computed tensor no QuantizeLinear produced), `unfused-dq` (a DequantizeLinear read by an op
    TensorRT cannot run in INT8, through ops Q/DQ moves across), `dq-unused` (read by nothing),
    `per-channel-activation`. trt-check reports them as speed warnings."""
    out = []
    for node in g.toposort():
        if not node.is_standard or node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        out += [(kind, node, message) for kind, message in _unpaired(g, node)]
        if _per_channel_activation(g, node):
            out.append(("per-channel-activation", node, PER_CHANNEL_ACTIVATION))
        if node.op_type == "DequantizeLinear":
            out += [(kind, node, message) for kind, message in _unfused_readers(g, node)]
    return out


def _unpaired(g: Graph, node: Node) -> list[tuple[str, str]]:
    """A QuantizeLinear that no DequantizeLinear (alone) reads; a DequantizeLinear of a computed
    tensor that no QuantizeLinear produced."""
    x = node.inputs[0] if node.inputs else None
    if node.op_type == "QuantizeLinear":
        uses = g.uses(node.outputs[0]) if node.outputs[0] is not None else []
        if not uses or any(u.op_type != "DequantizeLinear" for u, _ in uses):
            return [("q-without-dq", "QuantizeLinear not followed by DequantizeLinear")]
    elif x is not None and g.const_value(x) is None and _producer_op(g, x) != "QuantizeLinear":
        return [("dq-without-q", "DequantizeLinear of a computed tensor with no QuantizeLinear before it")]
    return []


def _per_channel_activation(g: Graph, node: Node) -> bool:
    ins = node.inputs
    scale = g.const_value(ins[1]) if len(ins) > 1 else None
    return scale is not None and scale.size > 1 and g.const_value(_source_of(g, node)) is None


def _unfused_readers(g: Graph, dq: Node) -> list[tuple[str, str]]:
    """Why TensorRT cannot fuse `dq` into what reads it (through the ops Q/DQ moves across)."""
    out = dq.outputs[0]
    if out is None or not g.has_uses(out):
        return [("dq-unused", "DequantizeLinear whose output nothing reads")]
    weight = g.const_value(dq.inputs[0]) is not None
    bad: list[str] = []
    seen: set[int] = set()
    stack = [out]
    while stack:
        v = stack.pop()
        if v.is_graph_output:
            bad.append(f"the graph output {v.name!r}")
        for user, index in g.uses(v):
            if user.id in seen:
                continue
            seen.add(user.id)
            op = user.op_type if user.is_standard else f"{user.domain}.{user.op_type}"
            if op in FUSING_OPS or (op in INT8_OPS and not weight) or op == "QuantizeLinear":
                continue
            if op in THROUGH_OPS and user.outputs and user.outputs[0] is not None:
                stack.append(user.outputs[0])
                continue
            bad.append(f"{op} {user.label!r}")
    if not bad:
        return []
    what = "weights" if weight else "activations"
    return [("unfused-dq", f"its {what} are read by {', '.join(bad[:3])}{' and more' if len(bad) > 3 else ''}, "
                           "which TensorRT does not run in INT8: the Q/DQ stays as separate layers and the reader "
                           "runs in float (quantize only inputs of Conv/ConvTranspose/Gemm/MatMul, average pools "
                           "and residual Adds)")]


def _lint_weight_axis(g: Graph, dq: Node, axis: int, report) -> None:
    """Per-channel weight scales must run along the output channels of the layer they feed."""
    if dq.op_type != "DequantizeLinear":
        return
    for user, index in g.uses(dq.outputs[0]):
        if index != 1 or user.op_type not in LAYER_OPS:
            continue
        want = weight_axes(user, len(dq.outputs[0].shape or ()))[0]
        if axis != want:
            report("error", f"per-channel scales along axis {axis} of the weight of {user.op_type} {user.name!r}; "
                            f"its output channels are axis {want}")


def _source_of(g: Graph, node: Node):
    """The float tensor a Q/DQ pair quantizes: Q's input, or for a DQ, its Q's input or its own."""
    x = node.inputs[0]
    if node.op_type == "DequantizeLinear":
        p = g.producer(x) if x is not None else None
        if p is not None and p.op_type == "QuantizeLinear":
            return p.inputs[0]
    return x
