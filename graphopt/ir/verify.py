"""IR invariants. The pass manager calls verify() after every pass in tests and under --debug."""

from __future__ import annotations

from graphopt.errors import IRError
from graphopt.ir.graph import Capture, Graph


def verify(graph: Graph) -> None:
    """Raise IRError naming the first broken invariant of `graph` and its subgraphs."""
    names: dict[str, str] = {}
    for g in graph.walk():
        _verify_one(g, names)


def _verify_one(g: Graph, names: dict[str, str]) -> None:
    where = f"graph {g.name!r}"
    nxg = g._g
    for vid, v in g._values.items():
        if v.graph is not g:
            raise IRError(f"{where}: value {vid} points to another graph")
        preds = nxg._pred[vid]
        if len(preds) > 1 or sum(len(k) for k in preds.values()) > 1:
            raise IRError(f"{where}: value {v.name!r} has more than one producer")
        if preds and (v.const is not None or v.is_capture):
            raise IRError(f"{where}: value {v.name!r} is an initializer or capture but has a producer")
        if preds and v.is_graph_input:
            raise IRError(f"{where}: graph input {v.name!r} has a producer")
        if not v.is_capture:
            if g._by_name.get(v._name) is not v:
                raise IRError(f"{where}: name index out of date for {v._name!r}")
            if v._name in names:
                raise IRError(f"{where}: name {v._name!r} is used twice")
            names[v._name] = g.name
            if v._name not in g.scope.used:
                raise IRError(f"{where}: name {v._name!r} is not claimed in the scope")
        else:
            g.capture_source(v)  # raises if dangling
        defined = bool(preds) or v.const is not None or v.is_capture or v.is_graph_input
        if not defined and (nxg._succ[vid] or v.is_graph_output):
            raise IRError(f"{where}: value {v.name!r} is used but never defined")
    for nid, n in g._ops.items():
        if n.graph is not g:
            raise IRError(f"{where}: node {nid} points to another graph")
        seen = set()
        for u, k in g._in_keys(nid):
            if u not in g._values:
                raise IRError(f"{where}: node {n.name!r} ({n.op_type}) reads a non-value")
            if isinstance(k, Capture):
                _verify_capture_key(g, n, k)
                continue
            if not isinstance(k, int) or not 0 <= k < n.n_inputs or k in seen:
                raise IRError(f"{where}: node {n.name!r} ({n.op_type}) has bad input index {k!r}")
            seen.add(k)
        seen = set()
        for v, keys in nxg._succ[nid].items():
            for k in keys:
                if not isinstance(k, int) or not 0 <= k < n.n_outputs or k in seen:
                    raise IRError(f"{where}: node {n.name!r} ({n.op_type}) has bad output index {k!r}")
                seen.add(k)
        for attr, idx, sub in n.subgraphs():
            if sub.parent is not g or sub.owner is not n or sub.owner_slot != (attr, idx):
                raise IRError(f"{where}: subgraph {attr}[{idx}] of {n.name!r} has wrong parent links")
    for v in g.inputs + g.outputs:
        if g._values.get(v.id) is not v:
            raise IRError(f"{where}: graph input/output {v.name!r} is not a value of this graph")
    g.toposort()  # raises on a cycle


def _verify_capture_key(g: Graph, node, key: Capture) -> None:
    subs = {(a, i): s for a, i, s in node.subgraphs()}
    sub = subs.get((key.attr, key.index))
    if sub is None or key.local_id not in sub._values or not sub._values[key.local_id].is_capture:
        raise IRError(f"graph {g.name!r}: node {node.name!r} has a capture edge to no subgraph value")
