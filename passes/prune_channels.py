"""prune-channels: remove whole output channels of Conv (group 1) and Gemm layers, and shrink
everything those channels reach, so the model gets smaller and faster.

From a layer's output, its channels are followed through ops that keep channels apart:
activations, pooling, BatchNormalization (its parameters shrink too), per-channel or scalar
Mul/Add/Sub/Div by constants (sliced), depthwise convs (their channels and group shrink, and the
walk goes on), and Flatten of a 1x1 map. They must end in layers that sum over them: Conv or
ConvTranspose input channels, Gemm/MatMul input features, which lose the same channels. A layer
whose channels reach anything else (a residual Add, a Concat, a Reshape, a graph output) is
left alone and the report says why: channels meeting there would have to be pruned alike.

The channels removed are those with the lowest L1 norm of their weights, or of |gamma| when a
BatchNormalization follows the layer (criterion=auto). allocation=layer removes `ratio` of
each layer's channels; allocation=global removes `ratio` of all candidate channels, ranked by
the criterion relative to its layer's mean. At least `min_channels` stay in every layer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from graphopt.passes.prune_weights import METHODS, drop_if_unused

from graphopt.analysis.cost import model_cost
from graphopt.analysis.shapes import infer_shapes
from graphopt.errors import PipelineError
from graphopt.ir import Graph, Model, Node, Tensor, Value
from graphopt.ir.layouts import weight_axes
from graphopt.pipeline.base import Pass, PassContext, PassResult, require_at_least, require_fraction
from graphopt.quant import budget as lossy
from graphopt.quant.layer_options import LossyLayerOptions, excluded

log = logging.getLogger("graphopt")

PASSTHROUGH = {"Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus",
               "Softsign", "Clip", "Identity", "Dropout", "MaxPool", "AveragePool", "GlobalAveragePool",
               "GlobalMaxPool", "Mish", "Gelu", "Erf", "Abs", "Neg"}
AFFINE = {"Mul", "Add", "Sub", "Div"}


@dataclass
class PruneChannelsOptions(LossyLayerOptions):
    method: str = field(default="channel", metadata={"help": "channel (the default) removes channels; magnitude and "
                                                             "2:4 are prune-weights' (in the prune alias this pass "
                                                             "then does nothing)"})
    ratio: float = field(default=0.3, metadata={"help": "share of output channels removed (0 to 1)"})
    allocation: str = field(default="layer", metadata={"help": "layer: `ratio` of every layer; global: `ratio` "
                                                               "of all channels, ranked across layers"})
    criterion: str = field(default="auto", metadata={"help": "auto (BatchNorm |gamma| when one follows, else L1), "
                                                             "l1 or bn"})
    min_channels: int = field(default=4, metadata={"help": "channels every layer keeps at least"})

    def __post_init__(self):
        if self.method not in METHODS:
            raise PipelineError(f"option 'method' must be one of {', '.join(METHODS)}, got {self.method!r}")
        require_fraction(self, "ratio", zero=True)
        require_at_least(self, "min_channels", 1)
        if self.allocation not in ("layer", "global"):
            raise PipelineError(f"option 'allocation' must be layer or global, got {self.allocation!r}")
        if self.criterion not in ("auto", "l1", "bn"):
            raise PipelineError(f"option 'criterion' must be auto, l1 or bn, got {self.criterion!r}")

    def check_given(self, given: set) -> None:
        """An option only channel pruning uses, given with another method, is an error: it would
        be silently ignored (prune{ratio=0.3} would prune 50% of the weights by magnitude)."""
        if self.method == "channel":
            return
        for name in ("ratio", "criterion", "min_channels"):
            if name in given:
                raise PipelineError(f"option {name!r} applies only to method=channel, not method={self.method} "
                                    f"(e.g. prune{{method=channel,{name}=...}})")


@dataclass
class Chain:
    """Everything one layer's output channels reach, as (node, input index, axis) to slice."""

    producer: Node
    channels: int
    slices: list = field(default_factory=list)  # (node, input index, axis): a constant input to slice
    groups: list = field(default_factory=list)  # depthwise convs whose group shrinks
    values: list = field(default_factory=list)  # values whose channel axis (1) shrinks
    bn: Optional[Node] = None  # a BatchNormalization right after the producer


@dataclass
class ChannelUnit:
    node_id: int  # the producer's IR id (valid on clones of the model; names may be empty)
    label: str  # the producer's Node.label, for reports
    keep: list  # channel indices kept


class PruneChannels(Pass):
    name = "prune-channels"
    summary = "remove whole output channels of Conv/Gemm and shrink everything they reach"
    Options = PruneChannelsOptions
    lossless = False

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        o = self.options
        if o.method != "channel" or o.ratio == 0:
            return PassResult(False)
        infer_shapes(ctx.model)
        before = model_cost(ctx.model)
        report: dict = {"skipped": [], "layers": []}
        ctx.reports[self.name] = report
        chains = []
        for node in graph.toposort():
            if node.op_type not in ("Conv", "Gemm") or not node.is_standard:
                continue
            chain, reason = analyze(graph, node)
            if chain is None and reason is None:
                continue
            reason = reason or excluded(node, self.options.exclude_ops, self.options.exclude_nodes, ctx.in_scope)
            if reason is None and chain.channels <= o.min_channels:
                reason = f"{chain.channels} channels: no more than min_channels={o.min_channels}"
            if reason is not None:
                report["skipped"].append({"node": node.label, "op": node.op_type, "reason": reason})
                continue
            chains.append(chain)
        units = self._select(graph, chains)
        if not units:
            return PassResult(False, {"layers": 0})
        units, accuracy, kept = lossy.budget_for_run(ctx, units, apply, o.max_drop, "prune-channels (whole)")
        report["kept_whole"] = kept
        report["accuracy"] = accuracy.to_dict() if accuracy else None
        if not units:
            return PassResult(False, {"layers": 0})
        apply(ctx.model, units)
        after = model_cost(ctx.model)
        sizes = {c.producer.id: c.channels for c in chains}
        report["layers"] = [{"node": u.label, "channels_before": sizes[u.node_id], "channels": len(u.keep)}
                            for u in units]
        report["before"], report["after"] = before.to_dict(), after.to_dict()
        cut = 100.0 * (1 - after.macs / before.macs) if before.macs else 0.0
        log.info("prune-channels: %d layers, params %d -> %d, FLOPs %d -> %d (-%.1f%%)", len(units), before.params,
                 after.params, before.flops, after.flops, cut)
        return PassResult(True, {"layers": len(units), "flops_cut_percent": round(cut, 2),
                                 "params_before": before.params, "params_after": after.params})


    def _select(self, graph: Graph, chains: list[Chain]) -> list[ChannelUnit]:
        o = self.options
        scores = {c.producer.id: _importance(graph, c, o.criterion) for c in chains}  # by node id
        if o.allocation == "global":
            ranked = sorted((s / max(scores[c.producer.id].mean(), 1e-30), i, c.producer.id)
                            for c in chains for i, s in enumerate(scores[c.producer.id]))
            total = int(o.ratio * len(ranked))
            removed: dict[int, set] = {c.producer.id: set() for c in chains}
            sizes = {c.producer.id: c.channels for c in chains}
            for _, i, nid in ranked:
                if total == 0:
                    break
                if sizes[nid] - len(removed[nid]) > o.min_channels:
                    removed[nid].add(i)
                    total -= 1
        else:
            removed = {}
            for c in chains:
                n = min(int(o.ratio * c.channels), c.channels - o.min_channels)
                removed[c.producer.id] = set(np.argsort(scores[c.producer.id], kind="stable")[:n].tolist())
        return [ChannelUnit(c.producer.id, c.producer.label,
                            [i for i in range(c.channels) if i not in removed[c.producer.id]])
                for c in chains if removed[c.producer.id]]



def analyze(g: Graph, producer: Node) -> tuple[Optional[Chain], Optional[str]]:
    """(the chain of `producer`'s output channels, why they cannot be pruned or None); (None,
    None) for what is no candidate at all (grouped convs follow their input's channels)."""
    ins = producer.inputs
    w = g.const_value(ins[1]) if len(ins) > 1 else None
    if w is None or w.dtype.kind != "f" or producer.attr("group", 1) != 1:
        return None, None
    if producer.op_type == "Conv":
        chain = Chain(producer, w.shape[0])
        chain.slices.append((producer, 1, 0))
        bias_axis = 0
    else:
        if producer.attr("transA", 0) or w.ndim != 2:
            return None, "its input is transposed (transA) or its weight is not 2-D"
        axis = weight_axes(producer, 2)[0]
        chain = Chain(producer, w.shape[axis])
        chain.slices.append((producer, 1, axis))
        bias_axis = -1
    if len(ins) > 2 and ins[2] is not None:
        b = g.const_value(ins[2])
        if b is None:
            return None, "its bias is not constant"
        if b.size > 1:
            if b.shape[bias_axis] != chain.channels:
                return None, "its bias does not run along its output channels"
            chain.slices.append((producer, 2, b.ndim - 1 if bias_axis == -1 else 0))
    out = producer.outputs[0]
    uses = g.uses(out)
    if len(uses) == 1 and uses[0][0].op_type == "BatchNormalization":
        chain.bn = uses[0][0]
    return chain, _follow(g, out, chain)


def _follow(g: Graph, start: Value, chain: Chain) -> Optional[str]:
    """Walk the channels from `start` to the layers that sum over them; why not, if they escape."""
    work, seen = [start], set()
    while work:
        v = work.pop()
        if v.id in seen:
            continue
        seen.add(v.id)
        if v.is_graph_output:
            return "its channels reach a graph output"
        if v.shape is None or len(v.shape) < 2 or v.shape[1] != chain.channels:
            return f"the shape of {v.name!r} is unknown or does not carry the channels on axis 1"
        chain.values.append(v)
        for user, index in g.uses(v):
            op, where = user.op_type, f"{user.op_type} {user.name!r}" if user.name else user.label
            if index != 0 and op not in AFFINE:
                return f"its channels reach input {index} of {where}"
            extra = [o for o in user.outputs[1:] if o is not None]
            if extra and op != "Dropout" or any(g.has_uses(o) or o.is_graph_output for o in extra):
                return f"its channels reach {where}, which has a second output"
            if op in PASSTHROUGH:
                if op == "PRelu" and not _per_channel_const(g, user, 1, chain, v):
                    return f"its channels reach {where} with a non per-channel slope"
                work.extend([user.outputs[0], *extra])  # an unused Dropout mask has the same layout
            elif op == "BatchNormalization":
                if user.attr("training_mode", 0):
                    return f"{where} is in training mode"
                for i in range(1, 5):
                    if g.const_value(user.inputs[i]) is None:
                        return f"{where} has parameters that are not constant"
                    chain.slices.append((user, i, 0))
                work.append(user.outputs[0])
            elif op in AFFINE:
                other = 1 - index
                if not _per_channel_const(g, user, other, chain, v):
                    return f"its channels meet another tensor at {where}"
                work.append(user.outputs[0])
            elif op == "Conv":
                wc = g.const_value(user.inputs[1]) if len(user.inputs) > 1 else None
                group = user.attr("group", 1)
                if wc is None:
                    return f"{where} has a weight that is not constant"
                if group == 1:
                    chain.slices.append((user, 1, 1))
                elif group == chain.channels and wc.shape[1] == 1 and wc.shape[0] == chain.channels:
                    chain.slices.append((user, 1, 0))  # depthwise: its channels go too, and on
                    if len(user.inputs) > 2 and user.inputs[2] is not None:
                        if g.const_value(user.inputs[2]) is None:
                            return f"{where} has a bias that is not constant"
                        chain.slices.append((user, 2, 0))
                    chain.groups.append(user)
                    work.append(user.outputs[0])
                else:
                    return f"its channels reach the grouped {where}"
            elif op == "ConvTranspose" and user.attr("group", 1) == 1 and g.const_value(user.inputs[1]) is not None:
                chain.slices.append((user, 1, 0))
            elif op in ("Gemm", "MatMul") and len(v.shape) == 2 and not user.attr("transA", 0):
                wb = g.const_value(user.inputs[1])
                if wb is None or wb.ndim != 2:
                    return f"{where} has a weight that is not a constant matrix"
                chain.slices.append((user, 1, weight_axes(user, 2)[1]))
            elif op == "Flatten" and user.attr("axis", 1) == 1 and all(d == 1 for d in v.shape[2:]):
                work.append(user.outputs[0])  # [N, C, 1, 1] -> [N, C]: channel i stays feature i
            else:
                return f"its channels reach {where}"
    return None


def _per_channel_const(g: Graph, node: Node, index: int, chain: Chain, v: Value) -> bool:
    """Whether input `index` of `node` is a constant that is a scalar or varies along the
    channel axis only; a per-channel one is sliced with the channels."""
    c = g.const_value(node.inputs[index]) if index < len(node.inputs) and node.inputs[index] is not None else None
    if c is None:
        return False
    if c.size == 1:
        return True
    rank = len(v.shape)
    shape = (1,) * (rank - c.ndim) + tuple(c.shape)
    if len(shape) != rank or shape[1] != chain.channels or any(d != 1 for i, d in enumerate(shape) if i != 1):
        return False
    chain.slices.append((node, index, c.ndim - (rank - 1)))
    return True


def _importance(g: Graph, chain: Chain, criterion: str) -> np.ndarray:
    """Per output channel: larger means more important."""
    if criterion in ("auto", "bn") and chain.bn is not None:
        gamma = g.const_value(chain.bn.inputs[1])
        var = g.const_value(chain.bn.inputs[4])
        if gamma is not None and var is not None:  # the channel's scale after normalization
            return np.abs(gamma.astype(np.float64)) / np.sqrt(var.astype(np.float64) + chain.bn.attr("epsilon", 1e-5))
    node, index, axis = chain.slices[0]
    w = np.abs(g.const_value(node.inputs[index]).astype(np.float64))
    return w.sum(axis=tuple(i for i in range(w.ndim) if i != axis))


def apply(model: Model, units: list[ChannelUnit]) -> None:
    """Remove the channels each unit does not keep, in every node its chain reaches."""
    g = model.graph
    for u in units:
        chain, reason = analyze(g, g.node_by_id(u.node_id))
        if chain is None or reason is not None:
            raise RuntimeError(f"prune-channels: {u.label} can no longer be pruned: {reason}")
        keep = np.asarray(u.keep, np.int64)
        for node, index, axis in chain.slices:
            old = node.inputs[index]
            sliced = np.ascontiguousarray(np.take(g.const_value(old), keep, axis=axis))
            g.set_input(node, index, g.add_initializer(f"{old.name}_pruned", Tensor.from_numpy(sliced)))
            drop_if_unused(g, old)
        for node in chain.groups:
            g.set_attr(node, "group", len(keep))
        for v in chain.values:
            v.shape = (v.shape[0], len(keep), *v.shape[2:])
    model.shapes_inferred_at = None
