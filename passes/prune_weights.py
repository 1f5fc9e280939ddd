"""prune-weights: zero weights of Conv/ConvTranspose/Gemm/MatMul layers.

- method=magnitude: in each layer the smallest magnitudes go first. allocation=layer prunes every
  layer to `sparsity`; allocation=global (the default) prunes `sparsity` of all eligible weights
  together, with LAMP scores (Lee et al., layer-adaptive magnitude pruning) deciding how many
  come from each layer: layers whose small weights carry little of the layer's energy give more.
- method=2:4: TensorRT's structured sparsity (docs/ARCHITECTURE.md, TensorRT facts): in every group of 4 consecutive input
  channels the 2 largest magnitudes stay; layers whose input-channel axis is not a multiple of 4
  are skipped, and the report says so.
- method=channel is prune-channels' (this pass then does nothing).

With `max_drop` and held-out data (--calib), layers whose pruning would cost more than the
budget are left dense, the most sensitive first. Biases are never pruned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from graphopt.errors import PipelineError
from graphopt.ir import Graph, Model, Tensor
from graphopt.lint import sparsity
from graphopt.pipeline.base import Pass, PassContext, PassResult, require_fraction
from graphopt.quant import budget as lossy
from graphopt.quant.layer_options import LossyLayerOptions, excluded

log = logging.getLogger("graphopt")

METHODS = ("magnitude", "2:4", "channel")


@dataclass
class PruneWeightsOptions(LossyLayerOptions):
    method: str = field(default="magnitude", metadata={"help": "magnitude, 2:4 or channel (channel: prune-channels)"})
    sparsity: float = field(default=0.5, metadata={"help": "share of weights zeroed by magnitude pruning (0 to 1)"})
    allocation: str = field(default="global", metadata={"help": "global: `sparsity` of all weights, spread over the "
                                                                 "layers by LAMP scores; layer: each layer to `sparsity`"})

    def __post_init__(self):
        if self.method not in METHODS:
            raise PipelineError(f"option 'method' must be one of {', '.join(METHODS)}, got {self.method!r}")
        require_fraction(self, "sparsity", zero=True)
        if self.allocation not in ("layer", "global"):
            raise PipelineError(f"option 'allocation' must be layer or global, got {self.allocation!r}")

    def check_given(self, given: set) -> None:
        """An option the chosen method does not use is an error, never silently ignored."""
        if "sparsity" in given and self.method != "magnitude":
            raise PipelineError(f"option 'sparsity' applies only to method=magnitude, not method={self.method}"
                                + (" (channel pruning takes ratio)" if self.method == "channel" else ""))
        if "allocation" in given and self.method == "2:4":
            raise PipelineError("option 'allocation' applies only to method=magnitude or method=channel, not method=2:4")


@dataclass
class PrunedLayer:
    node_id: int  # the node's IR id (valid on clones of the model; names may be empty)
    label: str  # Node.label, for reports
    op: str
    weight: str  # the weight value the layer reads
    data: np.ndarray  # the pruned weight
    nodes: list = field(default_factory=list)  # ids of every layer reading that weight


class PruneWeights(Pass):
    name = "prune-weights"
    summary = "zero weights by magnitude (per layer or global) or in TensorRT's 2:4 pattern"
    Options = PruneWeightsOptions
    lossless = False

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        o = self.options
        if o.method == "channel":
            if "prune-channels" in ctx.reports:  # the prune alias: channels went in prune-channels
                return PassResult(False)
            return PassResult(False, {}, ["prune-weights did nothing: method=channel is prune-channels' method "
                                          "(run prune-channels, or the prune alias with method=channel)"])
        if o.method == "magnitude" and o.sparsity == 0:
            return PassResult(False)
        report: dict = {"method": o.method, "layers": [], "skipped": []}
        ctx.reports[self.name] = report
        candidates, seen = [], {}
        for node in graph.toposort():
            w, data = sparsity.weight_of(graph, node)
            if w is None:
                continue
            if w.name in seen:  # a weight two layers share is pruned once, for both
                seen[w.name].append(node.id)
                continue
            reason = excluded(node, self.options.exclude_ops, self.options.exclude_nodes, ctx.in_scope)
            if reason is None and _quantized(graph, node):
                reason = "its weight is quantized already (prune before int8)"
            elif reason is None and data.dtype.kind != "f":
                reason = f"its weight is {data.dtype}, not a float type"
            axis = sparsity.input_channel_axis(node, data)
            if reason is None and o.method == "2:4" and data.shape[axis] % 4:
                reason = f"input-channel axis {axis} has {data.shape[axis]} entries, not a multiple of 4"
            if reason is not None:
                report["skipped"].append({"node": node.label, "op": node.op_type, "reason": reason})
                continue
            candidates.append((node, w, data, axis))
            seen[w.name] = [node.id]
        layers = self._prune(candidates) if candidates else []
        for L in layers:
            L.nodes = seen[L.weight]
        if not layers:
            return PassResult(False, {"layers": 0})
        layers, accuracy, kept = lossy.budget_for_run(ctx, layers, apply, o.max_drop, "prune-weights (dense)")
        report["kept_dense"] = kept
        report["accuracy"] = accuracy.to_dict() if accuracy else None
        if not layers:
            return PassResult(False, {"layers": 0})
        apply(ctx.model, layers)
        pruned = {L.node_id: L.data for L in layers}
        report["layers"] = [_layer_entry(n, d, pruned.get(n.id, d)) for n, _, d, _ in candidates]
        total = sum(L.data.size for L in layers)
        zeros = sum(int(L.data.size - np.count_nonzero(L.data)) for L in layers)
        return PassResult(True, {"layers": len(layers), "sparsity": round(100.0 * zeros / max(total, 1), 2)})


    def _prune(self, candidates) -> list[PrunedLayer]:
        o = self.options
        if o.method == "2:4":
            return [PrunedLayer(n.id, n.label, n.op_type, w.name,
                                np.where(sparsity.two_four_mask(d, axis), d, 0).astype(d.dtype))
                    for n, w, d, axis in candidates]
        if o.allocation == "global":
            # LAMP scores (layer-adaptive magnitude pruning): a weight's square over the sum of the
            # squares of the weights in its layer at least as large. Within a layer the order is
            # the magnitude order; across layers the scores say how much each layer can lose.
            scores = [_lamp(d) for _, _, d, _ in candidates]
            every = np.concatenate([s.ravel() for s in scores])
            k = int(o.sparsity * every.size)
            drop = np.zeros(every.size, bool)
            if k:
                drop[np.argpartition(every, k - 1)[:k]] = True
            out, at = [], 0
            for (n, w, d, _), s in zip(candidates, scores):
                gone = drop[at:at + d.size].reshape(d.shape)
                at += d.size
                out.append(PrunedLayer(n.id, n.label, n.op_type, w.name, np.where(gone, 0, d).astype(d.dtype)))
            return out
        out = []
        for n, w, d, _ in candidates:  # exactly floor(sparsity * size) smallest magnitudes per layer
            k = int(o.sparsity * d.size)
            flat = d.ravel().copy()
            if k:
                flat[np.argpartition(np.abs(flat), k - 1)[:k]] = 0
            out.append(PrunedLayer(n.id, n.label, n.op_type, w.name, flat.reshape(d.shape)))
        return out



def _lamp(w: np.ndarray) -> np.ndarray:
    sq = (w.astype(np.float64) ** 2).ravel()
    order = np.argsort(sq, kind="stable")
    ascending = sq[order]
    tail = np.cumsum(ascending[::-1])[::-1]  # sum of the squares from this weight up
    scores = np.empty_like(sq)
    scores[order] = ascending / np.where(tail > 0, tail, 1.0)
    return scores.reshape(w.shape)


def _quantized(graph: Graph, node) -> bool:
    """Whether a layer's weight comes through DequantizeLinear (quantized weights are not pruned)."""
    p = graph.producer(node.inputs[1])
    return p is not None and p.op_type == "DequantizeLinear"


def apply(model: Model, layers: list[PrunedLayer]) -> None:
    g = model.graph
    for L in layers:
        old = g.value(L.weight)
        new = g.add_initializer(f"{L.weight}_pruned", Tensor.from_numpy(L.data))
        for nid in L.nodes or [L.node_id]:
            g.set_input(g.node_by_id(nid), 1, new)
        drop_if_unused(g, old)


def drop_if_unused(g: Graph, v) -> None:
    """Remove a constant a pruning pass replaced, unless something else still reads it."""
    if v is not None and v.const is not None and not g.has_uses(v) and not v.is_graph_output and not v.is_graph_input:
        g.remove_value(v)


def _layer_entry(node, before: np.ndarray, after: np.ndarray) -> dict:
    return {"node": node.label, "op": node.op_type, "params": int(after.size),
            "sparsity_before": round(100.0 * (1 - np.count_nonzero(before) / before.size), 2),
            "sparsity": round(100.0 * (1 - np.count_nonzero(after) / after.size), 2)}
