"""The graph IR: one networkx MultiDiGraph of op nodes and value nodes.

Edges op→value carry the output index as their key; edges value→op carry the input index. A node
with a subgraph (If/Loop/Scan) that reads an outer value has a *capture* edge from that value,
keyed ``Capture(attr, index, local_id)``: the outer graph therefore sees every use, and the
subgraph's local capture value resolves its name through that edge, so renaming or replacing the
outer value is seen inside the subgraph without extra bookkeeping.

The networkx graph is the single source of truth for connectivity; Node and Value objects carry
the per-node data. Passes use the methods here and never touch networkx or protobuf.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, NamedTuple, Optional, Sequence

import networkx as nx
from onnx import AttributeProto

from graphopt.errors import IRError
from graphopt.ir.tensor import Tensor

_GRAPH, _GRAPHS = AttributeProto.GRAPH, AttributeProto.GRAPHS
# The names of the default ONNX operator domain.
STANDARD_DOMAINS = ("", "ai.onnx")


class Capture(NamedTuple):
    """Edge key of an outer value read by the subgraph ``attr[index]`` of a node."""

    attr: str
    index: int  # position in a GRAPHS attribute; 0 for a GRAPH attribute
    local_id: int  # id of the capture value inside that subgraph


@dataclass
class Attr:
    """A node attribute: ONNX type code, Python value, and what ONNX may attach to it."""

    type: int  # onnx.AttributeProto.AttributeType
    value: Any  # int, float, bytes, Tensor, Graph, list of those, or a raw proto for rare kinds
    ref_attr_name: str = ""  # set inside function bodies: the value comes from the caller
    doc_string: str = ""


class NameScope:
    """Value names and node names used anywhere in one model: a subgraph may not shadow an
    outer value name, and onnxruntime refuses two nodes with the same (non-empty) name."""

    def __init__(self, used: Iterable[str] = (), node_names: Iterable[str] = ()):
        self.used = set(used)
        self.node_names = set(node_names)
        self._counter = itertools.count()
        self.mutations = 0  # bumped by every structural change to any graph of the model
        # bumped by the changes that can teach shape inference something: new nodes and values,
        # attributes, and a reader moved to a value of another type (or, replacing an equal value,
        # one that knows more); not by removals, renames or moves between values of the same type
        # (analysis/shapes.py skips inference then)
        self.typing_changes = 0

    def claim(self, hint: str) -> str:
        return self._claim(self.used, hint or "v")

    def claim_node(self, hint: str) -> str:
        """A unique node name; an empty name stays empty (ONNX allows any number of those)."""
        return self._claim(self.node_names, hint) if hint else ""

    def _claim(self, names: set, hint: str) -> str:
        if hint not in names:
            names.add(hint)
            return hint
        while True:
            name = f"{hint}__{next(self._counter)}"
            if name not in names:
                names.add(name)
                return name

    def release(self, name: str) -> None:
        self.used.discard(name)

    def release_node(self, name: str) -> None:
        self.node_names.discard(name)

    def copy(self) -> "NameScope":
        return NameScope(self.used, self.node_names)


class Value:
    """A tensor (or other typed) value: a graph input, an initializer, or a node output."""

    __slots__ = ("id", "graph", "_name", "dtype", "shape", "const", "type_proto", "doc_string",
                 "metadata", "is_capture")

    def __init__(self, graph: "Graph", vid: int, name: str):
        self.id = vid
        self.graph = graph
        self._name = name
        self.dtype: Optional[int] = None  # onnx.TensorProto elem type, None if unknown
        self.shape: Optional[tuple] = None  # dims: int, str (symbolic) or None; None = unknown rank
        self.const: Optional[Tensor] = None  # initializer data
        self.type_proto = None  # non-tensor types (sequence, map, optional, sparse) kept verbatim
        self.doc_string = ""
        self.metadata: dict[str, str] = {}
        self.is_capture = False

    @property
    def name(self) -> str:
        if self.is_capture:
            return self.graph.capture_source(self).name
        return self._name

    @property
    def producer(self) -> Optional["Node"]:
        return self.graph.producer(self)

    @property
    def uses(self) -> list[tuple["Node", Any]]:
        return self.graph.uses(self)

    @property
    def is_graph_input(self) -> bool:
        return self in self.graph.inputs  # Value has identity equality: a C-speed scan

    @property
    def is_graph_output(self) -> bool:
        return self in self.graph.outputs

    def __repr__(self) -> str:
        return f"Value({self.name!r})"


class Node:
    """An operator application. Inputs/outputs are derived from the graph's edges."""

    __slots__ = ("id", "graph", "op_type", "domain", "overload", "name", "attrs", "n_inputs",
                 "n_outputs", "doc_string", "metadata")

    def __init__(self, graph: "Graph", nid: int, op_type: str, domain: str, name: str):
        self.id = nid
        self.graph = graph
        self.op_type = op_type
        self.domain = domain
        self.overload = ""
        self.name = name
        self.attrs: dict[str, Attr] = {}
        self.n_inputs = 0
        self.n_outputs = 0
        self.doc_string = ""
        self.metadata: dict[str, str] = {}

    @property
    def inputs(self) -> list[Optional[Value]]:
        """Inputs in order; None where an optional input is omitted."""
        return self.graph.node_inputs(self)

    @property
    def outputs(self) -> list[Optional[Value]]:
        return self.graph.node_outputs(self)

    @property
    def captures(self) -> list[Value]:
        """Outer values read by this node's subgraphs."""
        return [self.graph._values[u] for u, k in self.graph._in_keys(self.id) if isinstance(k, Capture)]

    @property
    def is_standard(self) -> bool:
        """Whether the op is from the default ONNX domain (not a custom or ai.onnx.ml op)."""
        return self.domain in STANDARD_DOMAINS

    @property
    def label(self) -> str:
        """A readable name for reports, unique in the model: the node's name if it has one, else
        its op type and first output (`Conv -> conv_out`), as exporters often leave names empty.
        Identify nodes by `id`, never by this or by `name`."""
        if self.name:
            return self.name
        out = next((v for v in self.outputs if v is not None), None)
        label = f"{self.op_type} -> {out.name}" if out is not None else f"{self.op_type} #{self.id}"
        # value names are unique in the model; a node *named* like that label is not ruled out
        return label if label not in self.graph.scope.node_names else f"{label} #{self.id}"

    def attr(self, name: str, default: Any = None) -> Any:
        a = self.attrs.get(name)
        return default if a is None else a.value

    def subgraphs(self) -> Iterator[tuple[str, int, "Graph"]]:
        for aname, a in self.attrs.items():
            if a.type == _GRAPH:
                yield aname, 0, a.value
            elif a.type == _GRAPHS:
                for i, g in enumerate(a.value):
                    yield aname, i, g

    def __repr__(self) -> str:
        return f"Node({self.op_type}, {self.name!r})"


class Graph:
    """A graph (the main graph, a subgraph or a function body)."""

    def __init__(self, name: str = "", *, scope: Optional[NameScope] = None,
                 parent: Optional["Graph"] = None):
        self.name = name
        self.doc_string = ""
        self.metadata: dict[str, str] = {}
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.parent = parent
        self.owner: Optional[Node] = None  # the node whose attribute holds this subgraph
        self.owner_slot: Optional[tuple[str, int]] = None  # (attribute name, index)
        self.scope = scope if scope is not None else (parent.scope if parent else NameScope())
        self.extra: dict[str, Any] = {}  # rare GraphProto fields kept verbatim for emission
        self._g = nx.MultiDiGraph()
        self._ops: dict[int, Node] = {}
        self._values: dict[int, Value] = {}
        self._by_name: dict[str, Value] = {}
        self._ids = itertools.count()

    # ---------------------------------------------------------------- lookup
    @property
    def nodes(self) -> list[Node]:
        """Op nodes in creation order (use toposort() for execution order)."""
        return list(self._ops.values())

    @property
    def values(self) -> list[Value]:
        return list(self._values.values())

    def __len__(self) -> int:
        return len(self._ops)

    def __contains__(self, node: Node) -> bool:
        """Whether `node` is (still) in this graph."""
        return self._ops.get(node.id) is node

    def value(self, name: str) -> Optional[Value]:
        return self._by_name.get(name)

    def node_by_id(self, nid: int) -> Node:
        """The op node with IR id `nid`. Ids are never reused and clone() keeps them, so an id
        taken from a model finds the same node on its clones; names cannot (they may be empty)."""
        node = self._ops.get(nid)
        if node is None:
            raise IRError(f"graph {self.name!r} has no node with id {nid}")
        return node

    @property
    def initializers(self) -> list[Value]:
        return [v for v in self._values.values() if v.const is not None]

    def _in_keys(self, nid: int) -> Iterator[tuple[int, Any]]:
        for u, keys in self._g._pred[nid].items():
            for k in keys:
                yield u, k

    def node_inputs(self, node: Node) -> list[Optional[Value]]:
        slots: list[Optional[Value]] = [None] * node.n_inputs
        for u, k in self._in_keys(node.id):
            if not isinstance(k, Capture):
                slots[k] = self._values[u]
        return slots

    def node_outputs(self, node: Node) -> list[Optional[Value]]:
        slots: list[Optional[Value]] = [None] * node.n_outputs
        for v, keys in self._g._succ[node.id].items():
            for k in keys:
                slots[k] = self._values[v]
        return slots

    def producer(self, value: Value) -> Optional[Node]:
        for u in self._g._pred[value.id]:
            return self._ops[u]
        return None

    def uses(self, value: Value) -> list[tuple[Node, Any]]:
        """(node, input index) for every use; the index is a Capture for subgraph reads."""
        return [(self._ops[n], k) for n, keys in self._g._succ[value.id].items() for k in keys]

    def has_uses(self, value: Value) -> bool:
        return bool(self._g._succ[value.id]) or value.is_graph_output

    def const_value(self, value: Optional[Value]):
        """The value's data as a read-only numpy array if it is a constant: an initializer that
        is not an overridable graph input, a Constant node's output, or a capture of either."""
        if value is None:
            return None
        if value.is_capture:
            src = self.capture_source(value)
            return src.graph.const_value(src)
        if value.const is not None:
            return None if value.is_graph_input else value.const.numpy()
        node = self.producer(value)
        if node is not None and node.op_type == "Constant" and node.is_standard:
            return constant_node_value(node)
        return None

    def add_constant(self, array, name: str = "const") -> Value:
        """A new initializer holding `array` (a numpy array or scalar)."""
        import numpy as np

        return self.add_initializer(name, Tensor.from_numpy(np.asarray(array)))

    # ---------------------------------------------------------------- building
    def _new_id(self) -> int:
        return next(self._ids)

    @property
    def mutations(self) -> int:
        """How many structural changes the model this graph belongs to has seen."""
        return self.scope.mutations

    @property
    def typing_changes(self) -> int:
        """How many of those could change what shape inference finds (NameScope.typing_changes)."""
        return self.scope.typing_changes

    def add_value(self, name: Optional[str] = None, dtype: Optional[int] = None,
                  shape: Optional[Sequence] = None) -> Value:
        """A new value; `name` is a hint made unique across the model."""
        self.scope.mutations += 1
        self.scope.typing_changes += 1
        v = Value(self, self._new_id(), self.scope.claim(name or "v"))
        v.dtype = dtype
        v.shape = tuple(shape) if shape is not None else None
        self._values[v.id] = v
        self._by_name[v._name] = v
        self._g.add_node(v.id)
        return v

    def add_input(self, name: str, dtype: Optional[int] = None, shape: Optional[Sequence] = None) -> Value:
        v = self.add_value(name, dtype, shape)
        self.inputs.append(v)
        return v

    def add_initializer(self, name: str, tensor: Tensor) -> Value:
        v = self.add_value(name, tensor.dtype, tensor.shape)
        v.const = tensor
        return v

    def add_node(self, op_type: str, inputs: Sequence[Optional[Value]] = (),
                 outputs: int | Sequence[Value | str | None] = 1, attrs: Optional[dict] = None,
                 *, domain: str = "", name: Optional[str] = None) -> Node:
        """Create a node. `outputs` is a count or a list of existing producer-less values or
        name hints (None leaves an optional output absent)."""
        self.scope.mutations += 1
        self.scope.typing_changes += 1
        node = Node(self, self._new_id(), op_type, domain, "")
        node.name = self.scope.claim_node(name or "")
        self._ops[node.id] = node
        self._g.add_node(node.id)
        node.n_inputs = len(inputs)
        for i, v in enumerate(inputs):
            if v is not None:
                self._check_owned(v)
                self._g.add_edge(v.id, node.id, key=i)
        if isinstance(outputs, int):
            outputs = [f"{name or op_type}_out{i}" if outputs > 1 else (name or op_type)
                       for i in range(outputs)]
        node.n_outputs = len(outputs)
        for i, o in enumerate(outputs):
            if o is None:
                continue
            if isinstance(o, str):
                o = self.add_value(o)
            else:
                self._check_owned(o)
                if self._g._pred[o.id]:
                    raise IRError(f"value {o.name!r} already has a producer")
            self._g.add_edge(node.id, o.id, key=i)
        if attrs:
            for k, a in attrs.items():
                node.attrs[k] = a if isinstance(a, Attr) else make_attr(a)
        return node

    def set_input(self, node: Node, index: int, value: Optional[Value]) -> None:
        self.scope.mutations += 1
        same = False  # the old input had the new one's type: inference learns nothing new
        for u, k in list(self._in_keys(node.id)):
            if k == index:
                same = value is not None and _same_type(self._values[u], value)
                self._g.remove_edge(u, node.id, key=k)
        if not same:
            self.scope.typing_changes += 1
        if index >= node.n_inputs:
            node.n_inputs = index + 1
        if value is not None:
            self._check_owned(value)
            self._g.add_edge(value.id, node.id, key=index)

    def set_attr(self, node: Node, name: str, value: Any) -> None:
        """Set (or with None, remove) an attribute; counted as a change like any other."""
        self.scope.mutations += 1
        self.scope.typing_changes += 1
        if value is None:
            node.attrs.pop(name, None)
        else:
            node.attrs[name] = value if isinstance(value, Attr) else make_attr(value)

    def _check_owned(self, v: Value) -> None:
        if self._values.get(v.id) is not v:
            raise IRError(f"value {v.name!r} does not belong to graph {self.name!r}")

    # ---------------------------------------------------------------- subgraph captures
    def capture(self, outer: Value) -> Value:
        """The local value standing for `outer` (a value of an enclosing graph)."""
        if self.parent is None or self.owner is None:
            raise IRError("only a subgraph can capture an outer value")
        for v in self.captures():
            if self.capture_source(v) is outer:
                return v
        if outer.graph is not self.parent:
            outer = self.parent.capture(outer)  # nested: the parent captures it first
        self.scope.mutations += 1
        self.scope.typing_changes += 1
        local = Value(self, self._new_id(), "")
        local.is_capture = True
        local.dtype, local.shape, local.type_proto = outer.dtype, outer.shape, outer.type_proto
        self._values[local.id] = local
        self._g.add_node(local.id)
        attr, idx = self.owner_slot
        self.parent._g.add_edge(outer.id, self.owner.id, key=Capture(attr, idx, local.id))
        return local

    def captures(self) -> list[Value]:
        return [v for v in self._values.values() if v.is_capture]

    def capture_source(self, local: Value) -> Value:
        """The outer value a capture value stands for (resolved through the owner's edge)."""
        attr, idx = self.owner_slot
        want = Capture(attr, idx, local.id)
        for u, k in self.parent._in_keys(self.owner.id):
            if k == want:
                return self.parent._values[u]
        raise IRError(f"capture {local.id} of subgraph {self.name!r} has no source")

    def lookup_or_capture(self, name: str) -> Optional[Value]:
        """Resolve a name as ONNX scoping does: local first, then enclosing graphs."""
        v = self._by_name.get(name)
        if v is not None:
            return v
        for c in self.captures():
            if c.name == name:
                return c
        if self.parent is None:
            return None
        outer = self.parent.lookup_or_capture(name)
        return None if outer is None else self.capture(outer)

    def attach_subgraph(self, node: Node, attr: str, index: int, sub: "Graph") -> None:
        sub.parent, sub.owner, sub.owner_slot, sub.scope = self, node, (attr, index), self.scope

    def inline_subgraph(self, node: Node, attr: str, index: int = 0) -> list[Value]:
        """Copy the nodes and constants of subgraph `attr[index]` of `node` (a node of this
        graph, e.g. the taken branch of an If) into this graph, ahead of removing `node`; returns
        the values standing for the subgraph's outputs, in order.

        The subgraph must have no inputs. Its reads of outer values become reads of those values;
        its values and nodes keep their names (the subgraph gives them up); subgraphs of the
        copied nodes move with them, their captures rewired to the copies. `node` itself is not
        touched: the caller replaces its outputs and removes it (then `release_names` on the
        branches it drops)."""
        sub = next((s for a, i, s in node.subgraphs() if (a, i) == (attr, index)), None)
        if sub is None or node.graph is not self:
            raise IRError(f"{node.op_type} {node.name!r} has no subgraph {attr}[{index}] in graph {self.name!r}")
        if sub.inputs:
            raise IRError(f"subgraph {attr}[{index}] of {node.name!r} has inputs: it cannot be inlined")
        self.scope.mutations += 1
        self.scope.typing_changes += 1
        mapping: dict[int, Value] = {}

        def moved(v: Value) -> Value:
            """A value of this graph carrying `v`'s name (given up by the subgraph) and type. A
            computed value's shape is left to inference: exporters declare branch outputs with
            shapes that hold for one branch only (or none)."""
            sub.scope.release(v._name)
            new = Value(self, self._new_id(), self.scope.claim(v._name))
            new.dtype, new.const, new.type_proto = v.dtype, v.const, v.type_proto
            new.shape = v.shape if v.const is not None else None
            new.doc_string, new.metadata = v.doc_string, dict(v.metadata)
            self._values[new.id] = new
            self._by_name[new._name] = new
            self._g.add_node(new.id)
            return new

        for v in sub._values.values():
            if v.is_capture:
                mapping[v.id] = sub.capture_source(v)
            elif v.const is not None:
                mapping[v.id] = moved(v)
        for old in sub.toposort():
            new = Node(self, self._new_id(), old.op_type, old.domain, "")
            sub.scope.release_node(old.name)
            new.name = self.scope.claim_node(old.name)
            new.overload, new.doc_string, new.metadata = old.overload, old.doc_string, dict(old.metadata)
            new.n_inputs, new.n_outputs = old.n_inputs, old.n_outputs
            new.attrs = dict(old.attrs)
            self._ops[new.id] = new
            self._g.add_node(new.id)
            for u, k in sub._in_keys(old.id):
                self._g.add_edge(mapping[u].id, new.id, key=k)  # inputs and captures (Capture keys)
            for i, v in enumerate(old.outputs):
                if v is not None:
                    mapping[v.id] = out = moved(v)
                    self._g.add_edge(new.id, out.id, key=i)
            for a, i, s in old.subgraphs():
                self.attach_subgraph(new, a, i, s)
        return [mapping[v.id] for v in sub.outputs]

    def release_names(self) -> None:
        """Give up the names of this graph's values and nodes and of its subgraphs' (a subgraph
        that is being dropped with its owner)."""
        for g in self.walk():
            for v in g._values.values():
                if not v.is_capture:
                    g.scope.release(v._name)
            for n in g._ops.values():
                g.scope.release_node(n.name)

    # ---------------------------------------------------------------- mutation
    def rename(self, value: Value, new_name: str) -> str:
        """Give `value` a name (made unique); returns the name it got."""
        self.scope.mutations += 1
        if value.is_capture:
            raise IRError("rename the outer value, not its capture")
        if new_name == value._name:
            return new_name
        del self._by_name[value._name]
        self.scope.release(value._name)
        value._name = self.scope.claim(new_name)
        self._by_name[value._name] = value
        return value._name

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Every use of `old` (node inputs, subgraph captures, graph outputs) now reads `new`.

        Graph output names are part of the model's interface and are kept: `new` takes the
        output's name when it is free to, otherwise an Identity carries it.
        """
        if old is new:
            return
        self._check_owned(new)
        self.scope.mutations += 1
        if _tells_more(new, old):  # readers of `old` had its type: inference learns only what `new` adds
            self.scope.typing_changes += 1
        if new.dtype is None and new.type_proto is None:  # same value by contract: same type
            new.dtype, new.shape, new.type_proto = old.dtype, old.shape, old.type_proto
        for _, user, key in list(self._g.out_edges(old.id, keys=True)):
            self._g.remove_edge(old.id, user, key=key)
            self._g.add_edge(new.id, user, key=key)
        if not old.is_graph_output:
            return
        out_name = old._name
        self.rename(old, old._name + "_replaced")
        if self.can_take_output_name(new):
            target = new
            self.rename(target, out_name)
            # the output keeps its declared type where the value it now is knows less
            if target.dtype is None and target.type_proto is None:
                target.dtype, target.type_proto = old.dtype, old.type_proto
            if target.shape is None and target.type_proto is None:
                target.shape = old.shape
        else:
            ident = self.add_node("Identity", [new], [out_name])
            target = ident.outputs[0]
            target.dtype, target.shape, target.type_proto = old.dtype, old.shape, old.type_proto
        self.outputs = [target if v is old else v for v in self.outputs]

    def bypass(self, node: Node, value: Value, output: int = 0) -> bool:
        """Remove `node`, whose output `output` equals `value`, rewiring its readers to `value`.
        Declines (returns False) when the node's other outputs are used, or when that output is
        a graph output that `value` cannot carry the name of (an Identity would be needed)."""
        if self.why_not_bypass(node, value, output) is not None:
            return False
        out = node.outputs[output]
        if out is not None:
            self.replace_all_uses(out, value)
        self.remove_node(node)
        return True

    def why_not_bypass(self, node: Node, value: Value, output: int = 0) -> Optional[str]:
        """Why `bypass(node, value, output)` would decline, or None."""
        outs = node.outputs
        for i, v in enumerate(outs):
            if v is not None and i != output and self.has_uses(v):
                return f"its output {v.name!r} is read"
        out = outs[output]
        if out is not None and out.is_graph_output and (value.is_graph_output or not self.can_take_output_name(value)):
            return (f"its output {out.name!r} is a graph output and {value.name!r} cannot take its name "
                    "(an Identity would be needed)")
        return None

    def insert_after_output(self, old: Value, op_type: str, attrs: Optional[dict] = None) -> Node:
        """Put a one-input node between graph output `old` and the outside: the new node's output
        becomes the graph output and takes its name; `old` (renamed) keeps its other uses."""
        if not old.is_graph_output:
            raise IRError(f"{old.name!r} is not a graph output")
        name = old._name
        self.rename(old, name + "_inner")
        node = self.add_node(op_type, [old], [name], attrs)
        out = node.outputs[0]
        out.dtype, out.shape = old.dtype, old.shape  # the caller retypes it if the op changes the type
        self.outputs = [out if v is old else v for v in self.outputs]
        return node

    def can_take_output_name(self, v: Value) -> bool:
        """Whether `v` can be renamed to a graph output's name (a plain node output)."""
        return not (v.is_capture or v.is_graph_input or v.is_graph_output or v.const is not None
                    or self.producer(v) is None)

    def remove_node(self, node: Node) -> None:
        """Remove a node and its output values; the outputs must be unused."""
        self.scope.mutations += 1
        for v in node.outputs:
            if v is not None and self.has_uses(v):
                raise IRError(f"cannot remove {node.op_type} node {node.name!r}: output {v.name!r} is still used")
        for v in node.outputs:
            if v is not None:
                self._drop_value(v)
        self._g.remove_node(node.id)
        del self._ops[node.id]
        self.scope.release_node(node.name)

    def remove_value(self, value: Value) -> None:
        """Remove an unused value (an initializer or a graph input)."""
        if self._g._succ[value.id] or value.is_graph_output:
            raise IRError(f"cannot remove value {value.name!r}: it is still used")
        if self._g._pred[value.id]:
            raise IRError(f"cannot remove value {value.name!r}: remove its producer instead")
        self.inputs = [v for v in self.inputs if v is not value]
        self._drop_value(value)

    def _drop_value(self, v: Value) -> None:
        self.scope.mutations += 1
        if v.is_capture:  # the owner stops reading the outer value
            attr, idx = self.owner_slot
            key = Capture(attr, idx, v.id)
            src = self.capture_source(v)
            self.parent._g.remove_edge(src.id, self.owner.id, key=key)
        self._g.remove_node(v.id)
        del self._values[v.id]
        if not v.is_capture:
            del self._by_name[v._name]
            self.scope.release(v._name)

    # ---------------------------------------------------------------- traversal
    def toposort(self) -> list[Node]:
        """Execution order: creation order wherever that is valid, each node after its
        producers. Deterministic, and the identity on an already-sorted input model. Cached
        until the model changes (every structural change bumps the mutation counter)."""
        key = (id(self.scope), self.scope.mutations)
        cached = self.__dict__.get("_topo")
        if cached is not None and cached[0] == key:
            return list(cached[1])
        order = self._toposort()
        self._topo = (key, order)
        return list(order)

    def _toposort(self) -> list[Node]:
        g, ops = self._g, self._ops
        state: dict[int, int] = {}  # 1 = on stack, 2 = done
        order: list[Node] = []
        for root in ops:
            if root in state:
                continue
            stack = [(root, False)]
            while stack:
                nid, expanded = stack.pop()
                if expanded:
                    state[nid] = 2
                    order.append(ops[nid])
                    continue
                if state.get(nid) == 2:
                    continue
                if state.get(nid) == 1:
                    raise IRError(f"graph {self.name!r} has a cycle through node {ops[nid].name!r}")
                state[nid] = 1
                stack.append((nid, True))
                deps = []
                for vid in g._pred[nid]:
                    for pid in g._pred[vid]:
                        if state.get(pid) != 2:
                            deps.append(pid)
                for pid in sorted(deps, reverse=True):
                    if state.get(pid) == 1:
                        raise IRError(f"graph {self.name!r} has a cycle through node {ops[pid].name!r}")
                    stack.append((pid, False))
        return order

    def walk(self) -> Iterator["Graph"]:
        """This graph and every subgraph inside it, outermost first."""
        yield self
        for node in list(self._ops.values()):
            if node.attrs:  # most nodes have none: skip the generator
                for _, _, sub in node.subgraphs():
                    yield from sub.walk()

    def count_nodes(self) -> int:
        """Nodes including those inside subgraphs."""
        return sum(len(g) for g in self.walk())

    # ---------------------------------------------------------------- copies and checks
    def clone(self, *, parent: Optional["Graph"] = None, scope: Optional[NameScope] = None) -> "Graph":
        """A structural copy with the same ids and names; constant data is shared (immutable)."""
        if scope is None:
            scope = self.scope.copy() if parent is None else parent.scope
        new = Graph(self.name, scope=scope, parent=parent)
        new.doc_string, new.metadata, new.extra = self.doc_string, dict(self.metadata), dict(self.extra)
        new._g = _copy_structure(self._g)
        ids = next(self._ids)
        self._ids = itertools.count(ids)  # copying the counter consumed one id; keep ids dense
        new._ids = itertools.count(ids)
        # Objects are built without __init__ (every slot is set here): snapshots before passes
        # clone the model often. Attr objects are never changed in place (set_attr replaces them),
        # so they are shared, except the subgraphs a GRAPH attribute holds.
        values, by_name, ops = new._values, new._by_name, new._ops
        for vid, v in self._values.items():
            c = Value.__new__(Value)
            c.id, c.graph, c._name, c.dtype, c.shape, c.const = vid, new, v._name, v.dtype, v.shape, v.const
            c.type_proto, c.doc_string, c.is_capture = v.type_proto, v.doc_string, v.is_capture
            c.metadata = dict(v.metadata) if v.metadata else {}
            values[vid] = c
            if not v.is_capture:
                by_name[c._name] = c
        for nid, n in self._ops.items():
            c = Node.__new__(Node)
            c.id, c.graph, c.op_type, c.domain, c.name, c.overload = nid, new, n.op_type, n.domain, n.name, n.overload
            c.n_inputs, c.n_outputs, c.doc_string = n.n_inputs, n.n_outputs, n.doc_string
            c.metadata = dict(n.metadata) if n.metadata else {}
            c.attrs = dict(n.attrs)
            ops[nid] = c
            for k, a in n.attrs.items():
                if a.type in (_GRAPH, _GRAPHS):
                    c.attrs[k] = Attr(a.type, _clone_attr_value(a.value, new, c, k), a.ref_attr_name, a.doc_string)
        new.inputs = [new._values[v.id] for v in self.inputs]
        new.outputs = [new._values[v.id] for v in self.outputs]
        return new

    def verify(self) -> None:
        from graphopt.ir.verify import verify

        verify(self)


def format_shape(shape) -> str:
    """A shape as messages write it: [N, 3, ?, 224] (None, an unknown dim, as ?)."""
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _same_type(a: Value, b: Value) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.type_proto is None and b.type_proto is None


def _tells_more(new: Value, old: Value) -> bool:
    """Whether `new`, standing in for the equal value `old`, has type knowledge `old` lacked:
    a dtype, a rank or a dim. Shape inference never erases what a value knows, so readers that
    move to a value that knows less or the same keep their inferred types."""
    if new.type_proto is not None or old.type_proto is not None:
        return True
    if new.dtype is not None and new.dtype != old.dtype:
        return True
    if new.shape is None:
        return False
    if old.shape is None or len(new.shape) != len(old.shape):
        return True
    return any(a is not None and a != b for a, b in zip(new.shape, old.shape))


def _copy_structure(g: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """A copy of the connectivity. The IR keeps no networkx node or edge attributes, so the
    adjacency dicts are rebuilt directly: about twice as fast as networkx's generic copy, which
    matters because the pass manager snapshots the model before passes (docs/ARCHITECTURE.md)."""
    new = nx.MultiDiGraph()
    new._node = {n: {} for n in g._node}
    succ = {u: {v: {k: {} for k in keys} for v, keys in nbrs.items()} for u, nbrs in g._succ.items()}
    pred: dict = {v: {} for v in g._pred}
    for u, nbrs in succ.items():
        for v, keys in nbrs.items():
            pred[v][u] = keys  # networkx shares one key dict between both directions
    new._adj = new._succ = succ
    new._pred = pred
    return new


def _clone_attr_value(value, new_graph: Graph, node: Node, attr: str):
    if isinstance(value, Graph):
        sub = value.clone(parent=new_graph)
        sub.owner, sub.owner_slot = node, value.owner_slot
        return sub
    if isinstance(value, list) and value and isinstance(value[0], Graph):
        out = []
        for g in value:
            sub = g.clone(parent=new_graph)
            sub.owner, sub.owner_slot = node, g.owner_slot
            out.append(sub)
        return out
    return value


def constant_node_value(node: Node):
    """The tensor a Constant node produces, as numpy (None for sparse values)."""
    import numpy as np

    for key, a in node.attrs.items():
        if a.ref_attr_name:
            return None
        if key == "value":
            return a.value.numpy()
        if key == "value_float":
            return np.array(a.value, np.float32)
        if key == "value_floats":
            return np.array(a.value, np.float32)
        if key == "value_int":
            return np.array(a.value, np.int64)
        if key == "value_ints":
            return np.array(a.value, np.int64)
        if key == "value_string":
            return np.array(a.value, object)
        if key == "value_strings":
            return np.array(a.value, object)
        if key == "sparse_value":
            return _dense(a.value.sparse_tensor if hasattr(a.value, "sparse_tensor") else a.value)
    return None


def _dense(sparse):
    """A SparseTensorProto as a dense numpy array (values scattered into zeros)."""
    import numpy as np
    from onnx import numpy_helper

    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dims = tuple(int(d) for d in sparse.dims)
    dense = np.zeros(int(np.prod(dims, dtype=np.int64)), values.dtype)
    flat = indices if indices.ndim == 1 else np.ravel_multi_index(tuple(indices.T), dims)
    dense[flat] = values.ravel()
    dense = dense.reshape(dims)
    dense.flags.writeable = False
    return dense


def make_attr(value: Any) -> Attr:
    """An Attr from a plain Python value (the common case when a pass creates a node)."""
    from onnx import AttributeProto as A

    if isinstance(value, bool) or isinstance(value, int):
        return Attr(A.INT, int(value))
    if isinstance(value, float):
        return Attr(A.FLOAT, value)
    if isinstance(value, str):
        return Attr(A.STRING, value.encode())
    if isinstance(value, bytes):
        return Attr(A.STRING, value)
    if isinstance(value, Tensor):
        return Attr(A.TENSOR, value)
    if isinstance(value, Graph):
        return Attr(A.GRAPH, value)
    if isinstance(value, (list, tuple)):
        vals = list(value)
        if all(isinstance(x, (int, bool)) for x in vals):
            return Attr(A.INTS, [int(x) for x in vals])
        if all(isinstance(x, (int, float)) for x in vals):
            return Attr(A.FLOATS, [float(x) for x in vals])
        if all(isinstance(x, (str, bytes)) for x in vals):
            return Attr(A.STRINGS, [x.encode() if isinstance(x, str) else x for x in vals])
    raise IRError(f"cannot make an attribute from {type(value).__name__}")
