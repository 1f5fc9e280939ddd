"""Equalization: rewrites of the weights that make a model easier to quantize, without training
(issue 15). Three kinds, each planned here as a list of constant edits:

- cross-layer equalization (Nagel et al. 2019, data-free quantization): in a chain
  layer1 -> (nothing, Relu, LeakyRelu or PRelu) -> layer2, output channel i of layer1 (weight and
  bias) is divided by s_i and input channel i of layer2 multiplied by s_i, s_i = sqrt(r1_i / r2_i)
  from the two weights' per-channel ranges, so both end with the range sqrt(r1_i r2_i). Exact:
  those activations commute with a positive per-channel factor (ReLU6/Clip, HardSwish and
  Sigmoid do not, and are never crossed). Data-free.
- SmoothQuant-style migration (Xiao et al. 2023) after a LayerNorm (the operator, or its
  decomposed ReduceMean ... Mul(gamma) [Add(beta)] form) whose output only MatMul/Gemm layers
  with constant weights read: per input channel j, s_j = max|X_j|^alpha / max|W_j|^(1 - alpha);
  the LayerNorm's scale and bias are divided by s, row j of every consumer's weight multiplied
  by s_j. Exact; needs the activation statistics of calibration data.
- bias correction of the expected weight-quantization error: bias -= (W_q - W) E[x], with E[x]
  the per-input-channel mean of the layer's input over calibration data. Lossy on purpose. For a
  Conv, E[x] of a channel times the sum of the weight error over the kernel's taps holds for
  outputs whose taps all read the input; at a padded border the taps that read padding see 0,
  not E[x], and that formula overshoots by those taps' share. So for a Conv the expected error
  is measured instead (bias_statistics: a copy of the conv with W_q - W as its weight, averaged
  over samples and positions), which includes the borders; the formula remains the fallback.

An edit is (node id, input index, new array); ids survive Model.clone(), so a plan made on a
copy applies to the model itself. The passes equalize-cross-layer, smooth-quant and
correct-bias apply them; quantize-int8's `equalize` option measures them (`choose`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

import numpy as np

from graphopt.ir import Graph, Model
from graphopt.ir.layouts import weight_axes

EXACT_ACTIVATIONS = ("Relu", "LeakyRelu", "PRelu")  # f(s x) = s f(x) for s > 0, per channel
# elementwise activations that do not commute with a per-channel factor: named in the report
INEXACT_ACTIVATIONS = ("Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Elu", "Selu", "Gelu", "Softplus",
                       "Mish", "Relu6", "ThresholdedRelu", "Celu")
SCALE_LIMIT = 1e4  # factors are kept within [1/limit, limit]
KINDS = ("cle", "smoothquant", "bias")
STATS_SAMPLES = 64
CORRECTED = "bias_corrected"  # in the name of a corrected bias: it is never corrected twice


def calibration_required(what: str) -> str:
    return (f"{what} needs calibration data: give --calib DATA.npz (or a folder of .npz; API: calibration=...), "
            "or --calib random to use synthesized inputs, whose statistics rarely fit real data")


# ------------------------------------------------------------------------------ edits
@dataclass
class Edit:
    node_id: int
    index: int  # the node's input replaced by a new constant (may be a new optional input)
    array: np.ndarray
    hint: str
    layer: Optional[int] = None  # bias correction: the layer (node id) whose INT8 weight error it corrects


def apply_edits(graph: Graph, edits: Sequence[Edit]) -> None:
    """Give each edited input its new constant; a constant nothing reads any more goes."""
    for e in edits:
        node = graph.node_by_id(e.node_id)
        ins = node.inputs
        old = ins[e.index] if e.index < len(ins) else None
        graph.set_input(node, e.index, graph.add_constant(e.array, e.hint))
        if old is not None and old.const is not None and not graph.has_uses(old) and not old.is_graph_input:
            graph.remove_value(old)


class Workspace:
    """The constants a plan reads and edits: edited ones as edited so far, by (node id, input)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.arrays: dict[tuple[int, int], np.ndarray] = {}
        self.hints: dict[tuple[int, int], str] = {}

    def get(self, node, index: int) -> Optional[np.ndarray]:
        key = (node.id, index)
        if key in self.arrays:
            return self.arrays[key]
        ins = node.inputs
        if index >= len(ins) or ins[index] is None:
            return None
        data = self.graph.const_value(ins[index])
        return None if data is None else np.asarray(data)

    def set(self, node, index: int, array: np.ndarray, what: str) -> None:
        self.arrays[(node.id, index)] = array
        ins = node.inputs
        base = ins[index].name if index < len(ins) and ins[index] is not None else (node.name or node.op_type)
        self.hints[(node.id, index)] = f"{base}_{what}"

    def edits(self, layer_of: Optional[dict] = None) -> list[Edit]:
        return [Edit(nid, idx, a, self.hints[(nid, idx)], (layer_of or {}).get((nid, idx)))
                for (nid, idx), a in self.arrays.items()]


def _float_const(data) -> bool:
    return data is not None and data.dtype == np.float32


def _single_reader(g: Graph, v) -> Optional[tuple]:
    """(node, input index) of a value's only reader, or None (several, none, a graph output)."""
    if v is None or v.is_graph_output:
        return None
    uses = g.uses(v)
    if len(uses) != 1 or not isinstance(uses[0][1], int):
        return None
    return uses[0]


def _vector(c: np.ndarray, channels: int, rank: Optional[int], axis: int) -> Optional[np.ndarray]:
    """A constant broadcast against a rank-`rank` tensor as one value per channel along `axis`
    (negative: from the end), or None when it varies along another axis."""
    if c is None or c.dtype != np.float32:
        return None
    if rank is None:
        rank = max(c.ndim, 1) if axis < 0 else None
        if rank is None:
            return None
    if c.ndim > rank:
        return None
    axis = axis % rank
    shape = (1,) * (rank - c.ndim) + tuple(c.shape)
    if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1), (channels,)).astype(np.float64)


# ------------------------------------------------------------------------------ cross-layer
@dataclass
class Pair:
    first: int  # node ids
    second: int
    labels: tuple[str, str]
    activation: Optional[str]  # the op between, if any
    between: list[str]  # the values between the two layers (their data changes)
    bias_add: Optional[int] = None  # a MatMul's bias Add (node id) between the layers


def _layer_weight(g: Graph, node) -> Optional[np.ndarray]:
    if not node.is_standard or node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.inputs) < 2:
        return None
    w = g.const_value(node.inputs[1])
    if not _float_const(w):
        return None
    if node.op_type == "Conv" and w.ndim < 3:
        return None
    if node.op_type in ("Gemm", "MatMul") and w.ndim != 2:
        return None
    return np.asarray(w)


def _out_channels(node, w: np.ndarray) -> int:
    return w.shape[weight_axes(node, w.ndim)[0]]


def _in_channels(node, w: np.ndarray) -> int:
    if node.op_type == "Conv":
        return w.shape[1] * node.attr("group", 1)
    return w.shape[weight_axes(node, w.ndim)[1]]


def cle_pairs(g: Graph, in_scope: Callable) -> tuple[list[Pair], list[dict]]:
    """The chains cross-layer equalization may scale, and near misses with why not."""
    pairs, skipped = [], []
    for n1 in g.toposort():
        w1 = _layer_weight(g, n1)
        if w1 is None or not in_scope(n1):
            continue
        cout = _out_channels(n1, w1)
        if n1.op_type in ("Conv", "Gemm") and len(n1.inputs) > 2 and n1.inputs[2] is not None:
            b = g.const_value(n1.inputs[2])
            rank = 2 if n1.op_type == "Gemm" else 1
            if b is None or _vector(np.asarray(b), cout, rank, -1) is None:
                continue  # a bias that is not one constant per output channel
        between, v, bias_add, act = [], n1.outputs[0], None, None
        step = _single_reader(g, v)
        if step and n1.op_type == "MatMul" and step[0].op_type == "Add" and step[0].is_standard:
            add = step[0]
            other = add.inputs[1 - step[1]]
            c = g.const_value(other)
            out = add.outputs[0]
            if c is None or _vector(np.asarray(c), cout, len(out.shape) if out.shape else None, -1) is None:
                continue
            between.append(v.name)
            bias_add, v = add, out
            step = _single_reader(g, v)
        if step and step[0].is_standard and step[1] == 0 and (step[0].op_type in EXACT_ACTIVATIONS
                                                             or step[0].op_type in INEXACT_ACTIVATIONS):
            a = step[0]
            nxt = _single_reader(g, a.outputs[0])
            if a.op_type in INEXACT_ACTIVATIONS:
                if nxt and _layer_weight(g, nxt[0]) is not None:
                    skipped.append({"first": n1.label, "second": nxt[0].label, "activation": a.op_type,
                                    "reason": f"{a.op_type} does not commute with a per-channel scale"})
                continue
            if a.op_type == "PRelu":
                slope = g.const_value(a.inputs[1]) if len(a.inputs) > 1 else None
                rank = len(v.shape) if v.shape else w1.ndim if n1.op_type == "Conv" else 2 if n1.op_type == "Gemm" else None
                axis = 1 if n1.op_type == "Conv" else -1
                if slope is None or _vector(np.asarray(slope), cout, rank, axis) is None:
                    continue
            between.append(v.name)
            act, v = a, a.outputs[0]
            step = nxt
        if not step or step[1] != 0:
            continue
        n2 = step[0]
        w2 = _layer_weight(g, n2)
        if w2 is None or not in_scope(n2):
            continue
        conv1, conv2 = n1.op_type == "Conv", n2.op_type == "Conv"
        if conv1 != conv2 or (n2.op_type == "Gemm" and n2.attr("transA", 0)):
            continue
        if _in_channels(n2, w2) != cout:
            continue
        between.append(v.name)
        pairs.append(Pair(n1.id, n2.id, (n1.label, n2.label), act.op_type if act else None, between,
                          bias_add.id if bias_add else None))
    return pairs, skipped


def _out_ranges(node, w: np.ndarray) -> np.ndarray:
    axis = weight_axes(node, w.ndim)[0]
    return np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis)).astype(np.float64)


def _in_ranges(node, w: np.ndarray) -> np.ndarray:
    if node.op_type == "Conv":
        group = node.attr("group", 1)
        cout, cpg = w.shape[0], w.shape[1]
        a = np.abs(w).reshape(group, cout // group, cpg, -1).max(axis=(1, 3))
        return a.reshape(-1).astype(np.float64)
    axis = weight_axes(node, w.ndim)[1]
    return np.abs(w).max(axis=1 - axis).astype(np.float64)


def scale_out(node, w: np.ndarray, f: np.ndarray) -> np.ndarray:
    """`w` with output channel i multiplied by f_i (float64 factor, one rounding)."""
    axis = weight_axes(node, w.ndim)[0]
    shape = [1] * w.ndim
    shape[axis] = -1
    return (w.astype(np.float64) * f.reshape(shape)).astype(w.dtype)


def scale_in(node, w: np.ndarray, f: np.ndarray) -> np.ndarray:
    """`w` with input channel c multiplied by f_c (grouped convs: channel c is column c % (Cin/g)
    of its group's rows)."""
    if node.op_type == "Conv":
        group = node.attr("group", 1)
        cout, cpg = w.shape[0], w.shape[1]
        per_row = np.repeat(f.reshape(group, cpg), cout // group, axis=0)  # [Cout, Cin/g]
        return (w.astype(np.float64) * per_row.reshape(per_row.shape + (1,) * (w.ndim - 2))).astype(w.dtype)
    axis = weight_axes(node, w.ndim)[1]
    shape = [1] * w.ndim
    shape[axis] = -1
    return (w.astype(np.float64) * f.reshape(shape)).astype(w.dtype)


def _clamp(s: np.ndarray) -> np.ndarray:
    s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
    return np.clip(s, 1.0 / SCALE_LIMIT, SCALE_LIMIT)


def cle_plan(g: Graph, pairs: list[Pair], iterations: int = 20, tolerance: float = 0.01
             ) -> tuple[list[Edit], list[dict]]:
    """Equalize the pairs, sweeping over them until no factor differs from 1 by more than
    `tolerance` (a layer in two pairs is rescaled by both) or `iterations` sweeps. Returns the
    edits and, per pair that changed, its factors' range and the values whose data changed; no
    edits when every pair is equalized already."""
    ws = Workspace(g)
    total = {i: None for i in range(len(pairs))}
    for _ in range(max(1, iterations)):
        worst = 0.0
        for i, p in enumerate(pairs):
            n1, n2 = g.node_by_id(p.first), g.node_by_id(p.second)
            w1, w2 = ws.get(n1, 1), ws.get(n2, 1)
            r1, r2 = _out_ranges(n1, w1), _in_ranges(n2, w2)
            s = _clamp(np.sqrt(np.where((r1 > 0) & (r2 > 0), r1 / np.where(r2 > 0, r2, 1.0), 1.0)))
            dev = float(np.max(np.abs(s - 1.0))) if s.size else 0.0
            if dev <= tolerance:
                continue
            worst = max(worst, dev)
            total[i] = s if total[i] is None else total[i] * s
            ws.set(n1, 1, scale_out(n1, w1, 1.0 / s), "equalized")
            if n1.op_type in ("Conv", "Gemm") and len(n1.inputs) > 2 and n1.inputs[2] is not None:
                b = ws.get(n1, 2)
                vec = _vector(b, s.size, 2 if n1.op_type == "Gemm" else 1, -1)
                ws.set(n1, 2, (vec / s).astype(b.dtype), "equalized")
            if p.bias_add is not None:
                add = g.node_by_id(p.bias_add)
                idx = next(k for k, v in enumerate(add.inputs) if g.const_value(v) is not None or (add.id, k) in ws.arrays)
                c = ws.get(add, idx)
                ws.set(add, idx, (_vector(c, s.size, None, -1) / s).astype(c.dtype), "equalized")
            ws.set(n2, 1, scale_in(n2, w2, s), "equalized")
        if worst <= tolerance:
            break
    changed = [{"first": p.labels[0], "second": p.labels[1], "activation": p.activation,
                "channels": int(total[i].size), "min_scale": float(total[i].min()), "max_scale": float(total[i].max()),
                "tensors": list(p.between)}
               for i, p in enumerate(pairs) if total[i] is not None]
    return ws.edits(), changed


# ------------------------------------------------------------------------------ SmoothQuant
@dataclass
class SmoothSite:
    norm: int  # node id of the LayerNormalization, or of the Mul(gamma) of the decomposed form
    label: str
    tensor: str  # the normalized activation the consumers read
    gamma: tuple[int, int]  # (node id, input index) of the scale
    beta: Optional[tuple[int, int]]  # of the bias, if any
    consumers: list[int] = field(default_factory=list)  # node ids of the MatMul/Gemm layers
    between: list[str] = field(default_factory=list)  # values whose data changes


def _reaches_reduce_mean(g: Graph, v, depth: int = 4) -> bool:
    frontier = [v]
    for _ in range(depth):
        nxt = []
        for x in frontier:
            p = g.producer(x) if x is not None else None
            if p is None:
                continue
            if p.op_type == "ReduceMean":
                return True
            nxt += [i for i in p.inputs if i is not None and g.const_value(i) is None]
        frontier = nxt
    return False


def smooth_sites(g: Graph, in_scope: Callable) -> tuple[list[SmoothSite], list[dict]]:
    """LayerNorms (either form) whose output only MatMul/Gemm layers with constant weights read."""
    sites, skipped = [], []
    for node in g.toposort():
        if not node.is_standard or not in_scope(node):
            continue
        site = None
        if node.op_type == "LayerNormalization":
            x, y = node.inputs[0], node.outputs[0]
            rank = len(x.shape) if x.shape else None
            axis = node.attr("axis", -1)
            gamma = g.const_value(node.inputs[1]) if len(node.inputs) > 1 else None
            beta = g.const_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
            if (rank is None or axis % rank != rank - 1 or not _float_const(gamma) or gamma.ndim != 1
                    or (len(node.inputs) > 2 and node.inputs[2] is not None and not _float_const(beta))
                    or any(o is not None and g.has_uses(o) for o in node.outputs[1:])):
                continue
            site = SmoothSite(node.id, node.label, y.name, (node.id, 1),
                              (node.id, 2) if beta is not None else None)
        elif node.op_type == "Mul":
            k = next((i for i, v in enumerate(node.inputs) if g.const_value(v) is not None), None)
            if k is None or len(node.inputs) != 2:
                continue
            u = node.inputs[1 - k]
            out = node.outputs[0]
            gamma = g.const_value(node.inputs[k])
            width = out.shape[-1] if out.shape and isinstance(out.shape[-1], int) else (
                gamma.size if gamma.ndim and gamma.size > 1 else None)
            rank = len(out.shape) if out.shape else None
            if (width is None or _vector(np.asarray(gamma), width, rank, -1) is None
                    or g.producer(u) is None or g.producer(u).op_type not in ("Div", "Mul")
                    or not _reaches_reduce_mean(g, u)):
                continue
            site = SmoothSite(node.id, node.label, out.name, (node.id, k), None)
            step = _single_reader(g, out)
            if step and step[0].op_type == "Add" and step[0].is_standard:
                add = step[0]
                kb = 1 - step[1]
                beta = g.const_value(add.inputs[kb])
                if beta is not None and _vector(np.asarray(beta), width, rank, -1) is not None:
                    site.between.append(out.name)
                    site.tensor, site.beta = add.outputs[0].name, (add.id, kb)
        if site is None:
            continue
        v = g.value(site.tensor)
        width = v.shape[-1] if v.shape and isinstance(v.shape[-1], int) else len(g.const_value(
            g.node_by_id(site.gamma[0]).inputs[site.gamma[1]]).reshape(-1))
        reason = None
        if v.is_graph_output:
            reason = "its output is a graph output"
        for u, idx in g.uses(v):
            w = _layer_weight(g, u)
            if u.op_type not in ("MatMul", "Gemm") or idx != 0 or w is None:
                reason = reason or f"{u.op_type} {u.label} reads it (only MatMul/Gemm with a constant weight may)"
            elif (u.op_type == "Gemm" and u.attr("transA", 0)) or _in_channels(u, w) != width:
                reason = reason or f"{u.label}'s weight does not run over its channels"
            elif not in_scope(u):
                reason = reason or f"{u.label} is outside the pass's scope"
            else:
                site.consumers.append(u.id)
        if reason is None and not site.consumers:
            reason = "nothing reads it"
        if reason:
            skipped.append({"node": site.label, "reason": reason})
            continue
        site.between.append(site.tensor)
        sites.append(site)
    return sites, skipped


def smooth_plan(g: Graph, sites: list[SmoothSite], absmax: dict[str, np.ndarray], alpha: float = 0.5,
                tolerance: float = 0.01) -> tuple[list[Edit], list[dict]]:
    """s_j = max|X_j|^alpha / max|W_j|^(1-alpha) per site; sites whose factors are all within
    `tolerance` of 1 are left alone."""
    ws = Workspace(g)
    done = []
    for site in sites:
        xmax = absmax.get(site.tensor)
        if xmax is None:
            continue
        xmax = np.asarray(xmax, np.float64)
        wmax = np.zeros_like(xmax)
        for nid in site.consumers:
            u = g.node_by_id(nid)
            wmax = np.maximum(wmax, _in_ranges(u, ws.get(u, 1)))
        ok = (xmax > 0) & (wmax > 0)
        s = np.where(ok, np.power(np.where(ok, xmax, 1.0), alpha) / np.power(np.where(ok, wmax, 1.0), 1.0 - alpha), 1.0)
        s = _clamp(s)
        if float(np.max(np.abs(s - 1.0))) <= tolerance:
            continue
        gnode = g.node_by_id(site.gamma[0])
        gamma = ws.get(gnode, site.gamma[1])
        ws.set(gnode, site.gamma[1], (_vector(gamma, s.size, max(gamma.ndim, 1), -1) / s)
               .reshape(gamma.shape if gamma.size == s.size else (-1,)).astype(gamma.dtype), "smoothed")
        if site.beta is not None:
            bnode = g.node_by_id(site.beta[0])
            beta = ws.get(bnode, site.beta[1])
            ws.set(bnode, site.beta[1], (_vector(beta, s.size, max(beta.ndim, 1), -1) / s)
                   .reshape(beta.shape if beta.size == s.size else (-1,)).astype(beta.dtype), "smoothed")
        for nid in site.consumers:
            u = g.node_by_id(nid)
            ws.set(u, 1, scale_in(u, ws.get(u, 1), s), "smoothed")
        done.append({"node": site.label, "consumers": len(site.consumers), "channels": int(s.size),
                     "min_scale": float(s.min()), "max_scale": float(s.max())})
    return ws.edits(), done


# ------------------------------------------------------------------------------ bias correction
@dataclass
class BiasSite:
    layer: int  # node id
    label: str
    tensor: str  # the layer's input
    axis: Optional[int]  # the weight's quantization axis (None: per tensor)
    bias: tuple[int, int]  # (node id, input index) of the bias (the layer's own, or its Add's)
    channel_axis: int  # of the input: 1 for Conv, -1 for Gemm/MatMul


def bias_sites(g: Graph, layers: list) -> tuple[list[BiasSite], list[dict]]:
    """The quantized layers (quant.placement.Layer) whose bias can take the correction: Conv
    (a missing bias is added), Gemm with a per-channel or missing C, MatMul followed by an Add
    of one constant per channel."""
    sites, skipped = [], []
    for L in layers:
        if L.kind not in ("conv", "gemm", "matmul") or L.weight is None:
            continue
        node = g.node_by_id(L.node_id)
        w = g.const_value(node.inputs[1])
        if w is None or node.op_type not in ("Conv", "Gemm", "MatMul") or (node.op_type != "Conv" and w.ndim != 2):
            continue
        cout = _out_channels(node, w) if node.op_type != "Conv" else w.shape[0]
        bias_input = None
        if node.op_type in ("Conv", "Gemm"):
            bias_input = node.inputs[2] if len(node.inputs) > 2 else None
        else:
            step = _single_reader(g, node.outputs[0])
            if step and step[0].op_type == "Add":
                bias_input = step[0].inputs[1 - step[1]]
        if bias_input is not None and CORRECTED in bias_input.name:
            skipped.append({"node": node.label, "reason": "its bias was corrected already"})
            continue
        if node.op_type in ("Conv", "Gemm"):
            if node.op_type == "Gemm" and (node.attr("transA", 0) or node.attr("beta", 1.0) == 0):
                skipped.append({"node": node.label, "reason": "transposed A or beta=0"})
                continue
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                b = g.const_value(node.inputs[2])
                if b is None or _vector(np.asarray(b), cout, 2 if node.op_type == "Gemm" else 1, -1) is None:
                    skipped.append({"node": node.label, "reason": "its bias is not one constant per output channel"})
                    continue
            site = BiasSite(node.id, node.label, node.inputs[0].name, L.weight[2], (node.id, 2),
                            1 if node.op_type == "Conv" else -1)
        else:
            step = _single_reader(g, node.outputs[0])
            add = step[0] if step and step[0].op_type == "Add" and step[0].is_standard else None
            c = g.const_value(add.inputs[1 - step[1]]) if add is not None else None
            out = add.outputs[0] if add is not None else None
            if c is None or _vector(np.asarray(c), cout, len(out.shape) if out.shape else None, -1) is None:
                skipped.append({"node": node.label, "reason": "no bias: its output is not followed by an Add of "
                                                              "one constant per channel"})
                continue
            site = BiasSite(node.id, node.label, node.inputs[0].name, L.weight[2], (add.id, 1 - step[1]), -1)
        sites.append(site)
    return sites, skipped


def bias_plan(g: Graph, sites: list[BiasSite], means: dict[str, np.ndarray],
              dequantized: Callable[[np.ndarray, Optional[int]], np.ndarray],
              measured: Optional[dict[int, np.ndarray]] = None) -> tuple[list[Edit], list[dict]]:
    """bias -= (W_q - W) E[x] per site; every edit is tied to its layer (Edit.layer). `measured`:
    per Conv layer id, its expected output error measured on the data (conv_weight_errors: exact
    at padded borders), used instead of the per-channel means times the kernel sums."""
    ws = Workspace(g)
    layer_of, done = {}, []
    for site in sites:
        node = g.node_by_id(site.layer)
        w = np.asarray(g.const_value(node.inputs[1]))
        mean = means.get(site.tensor)
        if measured is not None and site.layer in measured:
            delta = np.asarray(measured[site.layer], np.float64)
            if delta.size != w.shape[0]:
                continue
        elif mean is None:
            continue
        elif node.op_type == "Conv":
            dw = dequantized(w, site.axis).astype(np.float64) - w.astype(np.float64)
            mean = np.asarray(mean, np.float64)
            group = node.attr("group", 1)
            cout, cpg = w.shape[0], w.shape[1]
            if mean.size != cpg * group:
                continue
            taps = dw.reshape(cout, cpg, -1).sum(axis=2)  # [Cout, Cin/g]: the error summed over the kernel
            per_row = np.repeat(mean.reshape(group, cpg), cout // group, axis=0)
            delta = (taps * per_row).sum(axis=1)
        else:
            dw = dequantized(w, site.axis).astype(np.float64) - w.astype(np.float64)
            mean = np.asarray(mean, np.float64)
            k_axis = weight_axes(node, w.ndim)[1]
            dk = dw if k_axis == 0 else dw.T  # [K, N]
            if mean.size != dk.shape[0]:
                continue
            delta = mean @ dk
            if node.op_type == "Gemm":
                delta = delta * node.attr("alpha", 1.0) / node.attr("beta", 1.0)
        bnode = g.node_by_id(site.bias[0])
        b = ws.get(bnode, site.bias[1])
        if b is None:
            b_vec, dtype, shape = np.zeros(delta.size), w.dtype, (delta.size,)
        else:
            rank = 2 if node.op_type == "Gemm" and bnode.id == node.id else (
                1 if bnode.id == node.id else (len(bnode.outputs[0].shape) if bnode.outputs[0].shape else None))
            b_vec, dtype = _vector(b, delta.size, rank, -1), b.dtype
            shape = b.shape if b.size == delta.size else (delta.size,)
        new = (b_vec - delta).reshape(shape).astype(dtype)
        ws.set(bnode, site.bias[1], new, CORRECTED)
        layer_of[(bnode.id, site.bias[1])] = site.layer
        done.append({"node": site.label, "max_shift": float(np.max(np.abs(delta))) if delta.size else 0.0,
                     "bias_max": float(np.max(np.abs(b_vec))) if b_vec.size else 0.0})
    return ws.edits(layer_of), done


def for_layers(edits: Sequence[Edit], active_ids: set[int]) -> list[Edit]:
    """The edits that hold with these layers quantized: bias corrections only for INT8 layers."""
    return [e for e in edits if e.layer is None or e.layer in active_ids]


# ------------------------------------------------------------------------------ statistics
def _stream(m: Model, names: Sequence[str], samples, batch_size: int, limit: int, take: Callable) -> None:
    """Run `m` (a copy: `names` become outputs) over the first `limit` samples, handing each
    batch's {name: array} to `take`."""
    from graphopt.onnx_io import emit as backend
    from graphopt.runtime.session import Session

    inputs = {v.name for v in m.graph.inputs}
    outputs = {v.name for v in m.graph.outputs}
    for name in names:
        if name not in inputs and name not in outputs:
            m.graph.outputs.append(m.graph.value(name))
    fetch = [t for t in names if t not in inputs]
    done = 0
    with Session(backend.ort_view(m), optimized=True) as sess:
        for feed, n, _ in samples.batches(batch_size):
            out = sess.run(feed, fetch) if fetch else {}
            take({name: np.asarray(out[name] if name in out else feed[name]) for name in names})
            done += n
            if done >= limit:
                break


def channel_stats(model: Model, requests: dict[str, int], samples, batch_size: int,
                  limit: int = STATS_SAMPLES) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per channel of each requested tensor (name -> channel axis): (max |x|, mean x) over the
    first `limit` samples. One streaming run; only the sums are kept."""
    if not requests:
        return {}
    amax: dict[str, np.ndarray] = {}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    def take(arrays: dict) -> None:
        for name, axis in requests.items():
            x = arrays[name]
            if x.ndim == 0:
                continue
            ax = axis % x.ndim
            moved = np.moveaxis(x, ax, -1).reshape(-1, x.shape[ax]).astype(np.float64)
            finite = np.where(np.isfinite(moved), moved, 0.0)
            a, s = np.abs(finite).max(axis=0), finite.sum(axis=0)
            if name not in sums:
                amax[name], sums[name], counts[name] = a, s, moved.shape[0]
            elif sums[name].shape == s.shape:
                amax[name] = np.maximum(amax[name], a)
                sums[name] += s
                counts[name] += moved.shape[0]

    _stream(model.clone(), list(requests), samples, batch_size, limit, take)
    return {k: (amax[k], sums[k] / max(counts[k], 1)) for k in sums}


def bias_statistics(model: Model, sites: list, dequantized: Callable, samples, batch_size: int,
                    limit: int = STATS_SAMPLES) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    """What bias correction needs, in one streaming run over the first `limit` samples:
    (per Gemm/MatMul site's input: the mean of each channel; per Conv site's layer id: the mean
    over the data and the output positions of Conv(x, W_q - W) per output channel, the expected
    output error its INT8 weight causes, exact at padded borders too: a copy of the layer with
    the weight error as its weight runs beside it, then GlobalAveragePool)."""
    from graphopt.ir.dtypes import DataType

    m = model.clone()
    g = m.graph
    pools: dict[str, int] = {}
    means: dict[str, list] = {}
    for site in sites:
        node = g.node_by_id(site.layer)
        if node.op_type != "Conv":
            means[site.tensor] = [site.channel_axis, None, 0]
            continue
        w = np.asarray(g.const_value(node.inputs[1]))
        dw = (dequantized(w, site.axis).astype(np.float64) - w.astype(np.float64)).astype(np.float32)
        err = g.add_node("Conv", [node.inputs[0], g.add_constant(dw, "weight_error")], 1, dict(node.attrs),
                         name="weight_error")
        pool = g.add_node("GlobalAveragePool", [err.outputs[0]], 1, name="weight_error_mean")
        for v in (err.outputs[0], pool.outputs[0]):
            v.dtype = DataType.FLOAT
        pools[pool.outputs[0].name] = site.layer
    if not pools and not means:
        return {}, {}
    sums: dict[int, np.ndarray] = {}
    count = [0]

    def take(arrays: dict) -> None:
        for name, layer in pools.items():
            x = arrays[name].astype(np.float64)
            s = x.reshape(x.shape[0], x.shape[1]).sum(axis=0)
            sums[layer] = sums[layer] + s if layer in sums else s
        for name, acc in means.items():
            x = arrays[name]
            ax = acc[0] % x.ndim
            moved = np.moveaxis(x, ax, -1).reshape(-1, x.shape[ax]).astype(np.float64)
            total = np.where(np.isfinite(moved), moved, 0.0).sum(axis=0)
            acc[1] = total if acc[1] is None else acc[1] + total
            acc[2] += moved.shape[0]
        count[0] += next(iter(arrays.values())).shape[0] if pools else 0

    _stream(m, list(pools) + list(means), samples, batch_size, limit, take)
    return ({k: acc[1] / max(acc[2], 1) for k, acc in means.items() if acc[1] is not None},
            {k: v / max(count[0], 1) for k, v in sums.items()})


# ------------------------------------------------------------------------------ choosing (int8)
@dataclass
class Candidate:
    """One equalization as quantize-int8 tries it."""

    name: str  # cle, smoothquant, bias
    applies: bool
    detail: dict = field(default_factory=dict)
    edits: list = field(default_factory=list)
    changed: list = field(default_factory=list)  # activations whose ranges must be calibrated again
    metric: Optional[float] = None
    kept: bool = False
    seconds: float = 0.0
    note: str = ""

    def to_dict(self) -> dict:
        d = {"name": self.name, "applies": self.applies, **self.detail}
        if self.applies:
            d.update({"norm_cosine": self.metric, "kept": self.kept, "seconds": round(self.seconds, 3)})
        if self.note:
            d["note"] = self.note
        return d


def error_of(report) -> float:
    """What the choice minimizes: 1 - the channel-normalized cosine (the accuracy floor's metric),
    or 1 - cosine when no output could be normalized."""
    if any(o.norm_cosine is not None for o in report.outputs):
        return 1.0 - report.norm_cosine
    return 1.0 - report.cosine


class HeldOut:
    """The FP32 model's outputs on the held-out samples, and a candidate measured against them."""

    def __init__(self, reference: Model, held, batch_size: int):
        from graphopt.onnx_io import emit as backend
        from graphopt.runtime.session import Session

        self.held, self.batch_size = held, batch_size
        self.reference, self.counts, self.labels = [], [], []
        with Session(backend.ort_view(reference), optimized=True) as sess:
            for feed, n, labels in held.batches(batch_size):
                self.reference.append(sess.run(feed))
                self.counts.append(n)
                self.labels.append(labels)

    def measure(self, model: Model):
        from graphopt.onnx_io import emit as backend
        from graphopt.runtime.metrics import compare
        from graphopt.runtime.session import Session

        outs = []
        with Session(backend.ort_view(model), optimized=True) as sess:
            for feed, _, _ in self.held.batches(self.batch_size):
                outs.append(sess.run(feed))
        return compare(self.reference, outs, self.counts, self.labels)


MARGIN = 0.01  # quantize-int8 keeps a candidate when it lowers the held-out error by more than this share
SECONDS = 600.0  # quantize-int8 tries no further candidate once equalization has taken this long


def refresh(g: Graph, layers: list) -> list:
    """Layers (quant.placement.Layer) with their weight's value name as the graph has it now
    (edits give a weight a new constant)."""
    out = []
    for L in layers:
        if L.weight is None:
            out.append(L)
            continue
        idx, _, axis = L.weight
        node = g.node_by_id(L.node_id)
        out.append(replace(L, weight=(idx, node.inputs[idx].name, axis)))
    return out
