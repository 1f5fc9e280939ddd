"""cse: common-subexpression elimination.

Two nodes are the same computation only if op, domain, inputs (the same values, in order),
output count and every attribute are exactly equal: floats are compared by their bits, tensors
by dtype, shape and bytes. Nodes with subgraphs and random ops are never merged. Identical
small constants (initializers) are merged first, so readers of equal constants can merge too.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from graphopt.analysis.constants import NON_DETERMINISTIC
from graphopt.ir import Graph, Node, Tensor
from graphopt.pipeline.base import Pass, PassContext, PassResult


@dataclass
class CseOptions:
    max_constant_bytes: int = field(default=16 << 20, metadata={"help": "largest constant compared for merging"})


class CommonSubexpressionElimination(Pass):
    name = "cse"
    summary = "merge identical nodes and identical constants (attributes and data compared exactly)"
    Options = CseOptions

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        stats = {"nodes_merged": 0, "constants_merged": 0}
        for g in list(graph.walk()):
            stats["constants_merged"] += self._merge_constants(g)
            stats["nodes_merged"] += self._merge_nodes(g, ctx)
        return PassResult(any(stats.values()), stats)

    def _merge_constants(self, g: Graph) -> int:
        # Group by type, shape and a sample of the bytes first: only real candidates get hashed.
        groups: dict[tuple, list] = {}
        for v in g.initializers:
            if v.is_graph_input or v.is_graph_output or v.const.nbytes > self.options.max_constant_bytes:
                continue
            raw = v.const.raw_bytes()
            groups.setdefault((v.const.dtype, v.const.shape, bytes(raw[:64]), bytes(raw[-64:])), []).append(v)
        merged = 0
        for candidates in groups.values():
            seen: dict[tuple, object] = {}
            for v in candidates if len(candidates) > 1 else ():
                first = seen.setdefault(_tensor_key(v.const), v)
                if first is not v:
                    g.replace_all_uses(v, first)
                    g.remove_value(v)
                    merged += 1
        return merged

    def _merge_nodes(self, g: Graph, ctx: PassContext) -> int:
        # Nodes are grouped by op, inputs and attribute names first; attribute values (a tree
        # ensemble's may hold 100k numbers) are keyed only once a group has a second node.
        groups: dict[tuple, list[list]] = {}  # cheap key -> [[attribute key or None, node], ...]
        merged = 0
        for node in g.toposort():
            cheap = _cheap_key(node) if ctx.in_scope(node) else None
            if cheap is None:
                continue
            group = groups.setdefault(cheap, [])
            if not group:
                group.append([None, node])
                continue
            key = _attrs_key(node)
            for entry in group:
                if entry[0] is None:
                    entry[0] = _attrs_key(entry[1])
            first = next((n for k, n in group if k == key), None)
            if first is None:
                group.append([key, node])
                continue
            outs, keep = node.outputs, first.outputs
            if any(v is not None and v.is_graph_output for v in outs):
                # the model's interface names stay where they are: the later node is kept and the
                # earlier one goes, unless both give graph outputs (an output cast twice, say)
                if any(v is not None and v.is_graph_output for v in keep) or \
                        any(o is None and k is not None for o, k in zip(outs, keep)):
                    continue
                for entry in group:
                    if entry[1] is first:
                        entry[1] = node
                node, first, outs, keep = first, node, keep, outs
            for old, new in zip(outs, keep):
                if old is not None and new is not None:
                    g.replace_all_uses(old, new)
            if all(o is None or k is not None for o, k in zip(outs, keep)):
                g.remove_node(node)
                merged += 1
        return merged


def _cheap_key(node: Node):
    """What two nodes must share before their attribute values are compared; None: never merged."""
    if node.op_type in NON_DETERMINISTIC or any(True for _ in node.subgraphs()):
        return None
    if any(a.ref_attr_name for a in node.attrs.values()):
        return None
    inputs = tuple(v.id if v is not None else None for v in node.inputs)
    return (node.op_type, node.domain, node.overload, inputs, node.n_outputs, tuple(sorted(node.attrs)))


def _attrs_key(node: Node):
    return tuple((name, node.attrs[name].type, _attr_key(node.attrs[name].value)) for name in sorted(node.attrs))


def _attr_key(value):
    if isinstance(value, float):
        return ("f", struct.pack("<d", value))
    if isinstance(value, Tensor):
        return _tensor_key(value)
    if isinstance(value, list):  # whole lists at once: a value_floats Constant may hold 100k numbers
        if all(type(x) is int for x in value):
            return ("ints", tuple(value))
        if all(type(x) is float for x in value):
            return ("floats", struct.pack(f"<{len(value)}d", *value))
        if all(type(x) in (str, bytes) for x in value):
            return ("strings", tuple(value))
        return tuple(_attr_key(x) for x in value)
    if isinstance(value, (int, bytes, str)) or value is None:
        return value
    return ("id", id(value))  # anything else is never equal to another node's


def _tensor_key(t: Tensor):
    digest = hashlib.sha256(t.raw_bytes()).hexdigest()
    return ("t", t.dtype, t.shape, digest)
