"""Front end: an ONNX file or ModelProto becomes a graphopt IR Model.

Nothing is lost: opset imports, functions, metadata, doc strings, value_info and rare fields
are kept for the back end. Constant data is not decoded here: inline tensors stay in their
protos, external tensors are checked and memory-mapped.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto as A

from graphopt.errors import ModelLoadError
from graphopt.ir import Attr, Function, Graph, MappedFile, Model, NameScope, Tensor
from graphopt.ir.graph import Node, Value
from graphopt.onnx_io import wire
from graphopt.onnx_io.external_data import ExternalDataReader

MIN_OPSET = 1  # every opset onnx defines: nothing in the IR depends on the opset
# Inline initializers at least this large stay in the memory-mapped file, never in Python memory.
MAPPED_MIN_BYTES = 1024

# ModelProto / GraphProto fields the IR does not model but must emit unchanged.
_MODEL_EXTRA_FIELDS = ("training_info", "configuration")
_GRAPH_EXTRA_FIELDS = ("quantization_annotation",)

Source = Union[str, os.PathLike, onnx.ModelProto]


def load(source: Source, *, keep_initializer_inputs: bool = False,
         tensors: Optional[dict[str, Tensor]] = None) -> Model:
    """Parse a model. Initializers that an (IR v3 style) model also lists as graph inputs are
    constants and leave the interface, as TensorRT's parser and onnxsim treat them; with
    `keep_initializer_inputs` they stay overridable inputs.
    `tensors` (ModelProto only) supplies the data of main-graph initializers by name: the
    proto then needs only their names, types and shapes (see opset.convert)."""
    if isinstance(source, onnx.ModelProto):
        reader = _Reader(os.getcwd(), keep_initializer_inputs)
        reader.given_tensors = dict(tensors or {})
        return _read(reader, source, None)
    path = os.fspath(source)
    proto, mapped, payloads = read_model_proto(path)
    reader = _Reader(os.path.dirname(os.path.abspath(path)), keep_initializer_inputs)
    reader.mapped_initializers = {p.index: (mapped, p) for p in payloads}
    model = _read(reader, proto, path)
    model.mapped_files = [mapped, *reader.external.files.values()]
    return model


def _read(reader: "_Reader", proto: onnx.ModelProto, path: Optional[str]) -> Model:
    try:
        return reader.model(proto, path)
    except UnicodeDecodeError:  # a proto built in memory with bytes where text belongs
        where = invalid_text(proto, "model") or "a text field"
        raise ModelLoadError(f"{path or 'model'}: {where} is not valid UTF-8") from None


def _utf8_checker():
    """ONNX's ModelProto as a proto3 message: the same wire format, but protobuf checks that
    every string field is UTF-8 while parsing (proto2, which ONNX is, does not: Python then
    hands out `bytes` where names should be `str`). None if this protobuf cannot build it."""
    global _UTF8_CHECKER
    if _UTF8_CHECKER is None:
        try:
            from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

            fp = descriptor_pb2.FileDescriptorProto()
            onnx.ModelProto.DESCRIPTOR.file.CopyToProto(fp)
            fp.syntax = "proto3"

            def clear_defaults(messages):
                for m in messages:
                    for f in m.field:
                        f.ClearField("default_value")
                    clear_defaults(m.nested_type)

            clear_defaults(fp.message_type)
            pool = descriptor_pool.DescriptorPool()
            pool.Add(fp)
            _UTF8_CHECKER = message_factory.GetMessageClass(
                pool.FindMessageTypeByName(f"{fp.package}.ModelProto" if fp.package else "ModelProto"))
        except Exception:  # noqa: BLE001 - an unusual protobuf build: the reader's own checks remain
            _UTF8_CHECKER = False
    return _UTF8_CHECKER or None


_UTF8_CHECKER = None


def text_is_utf8(serialized: bytes) -> bool:
    checker = _utf8_checker()
    if checker is None:
        return True
    try:
        checker.FromString(serialized)
    except DecodeError as e:
        return "utf-8" not in str(e).lower()  # anything else the proto2 parse accepted is not ours to judge
    return True


def invalid_text(msg, where: str) -> Optional[str]:
    """The path (e.g. "model.graph.node[3].name") of the first string field of `msg` that is
    not valid UTF-8, or None. (Protobuf's Python hands such a field out as bytes.)"""
    for fd in msg.DESCRIPTOR.fields:
        repeated = _is_repeated(fd)
        if fd.type == fd.TYPE_STRING:
            try:
                if repeated:
                    for i, item in enumerate(getattr(msg, fd.name)):
                        if not isinstance(item, str):
                            return f"{where}.{fd.name}[{i}]"
                elif msg.HasField(fd.name) and not isinstance(getattr(msg, fd.name), str):
                    return f"{where}.{fd.name}"
            except UnicodeDecodeError:
                return f"{where}.{fd.name}"
        elif fd.type in (fd.TYPE_MESSAGE, fd.TYPE_GROUP):
            if repeated:
                for i, sub in enumerate(getattr(msg, fd.name)):
                    found = invalid_text(sub, f"{where}.{fd.name}[{i}]")
                    if found:
                        return found
            elif msg.HasField(fd.name):
                found = invalid_text(getattr(msg, fd.name), f"{where}.{fd.name}")
                if found:
                    return found
    return None


def _is_repeated(fd) -> bool:
    if hasattr(fd, "is_repeated"):  # protobuf >= 6 (`label` is gone in 7)
        return fd.is_repeated
    return fd.label == fd.LABEL_REPEATED


def read_model_proto(path: str) -> tuple[onnx.ModelProto, MappedFile, list[wire.Payload]]:
    """Parse the model's structure; large inline weights stay in the mapped file (see wire.py).
    One clear error for anything unreadable."""
    if not os.path.exists(path):
        raise ModelLoadError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelLoadError(f"{path}: is a directory, not an ONNX file")
    if os.path.getsize(path) == 0:
        raise ModelLoadError(f"{path}: file is empty")
    mapped = MappedFile(os.path.realpath(path))
    proto = onnx.ModelProto()
    try:
        stripped, payloads = wire.strip_initializer_data(mapped.buffer(), MAPPED_MIN_BYTES)
        proto.ParseFromString(stripped)
    except (DecodeError, RuntimeError, ValueError) as e:
        if "MaxDepth" in str(e) or "recursion" in str(e).lower():
            raise ModelLoadError(f"{path}: its subgraphs are nested deeper than the protobuf parser allows "
                                 f"(about 100 levels of messages)") from None
        raise ModelLoadError(f"{path}: not an ONNX model (protobuf parse failed: {e})") from None
    if not proto.HasField("graph") or proto.ir_version <= 0:
        raise ModelLoadError(f"{path}: not an ONNX model (no graph or IR version in the protobuf)")
    if not text_is_utf8(stripped):
        where = invalid_text(proto, "model") or "a name or other text field"
        raise ModelLoadError(f"{path}: {where} is not valid UTF-8")
    return proto, mapped, payloads


class _Reader:
    def __init__(self, base_dir: str, keep_initializer_inputs: bool):
        self.external = ExternalDataReader(base_dir)
        self.keep_initializer_inputs = keep_initializer_inputs
        # top-level initializer index -> (mapped model file, where its raw_data lies)
        self.mapped_initializers: dict[int, tuple[MappedFile, wire.Payload]] = {}
        self.given_tensors: dict[str, Tensor] = {}
        # per graph being read, innermost last: names its definitions took instead of one that an
        # enclosing or earlier sibling graph already defines (see _define), and the names it has
        # defined so far
        self.renamed: list[dict[str, str]] = []
        self.defined: list[set[str]] = []

    def model(self, proto: onnx.ModelProto, path: Optional[str]) -> Model:
        label = path or "model"
        opsets: dict[str, int] = {}
        for o in proto.opset_import:
            opsets[o.domain] = o.version
        if not opsets:
            raise ModelLoadError(f"{label}: has no opset import")
        default = opsets.get("", opsets.get("ai.onnx"))
        latest = onnx.defs.onnx_opset_version()
        if default is not None and not MIN_OPSET <= default <= latest:
            raise ModelLoadError(
                f"{label}: unsupported opset {default} (graphopt supports {MIN_OPSET} to {latest})")
        graph = self.graph(proto.graph, Graph(proto.graph.name), top=True)
        functions = [self.function(f) for f in proto.functions]
        model = Model(
            graph=graph, opset_imports=opsets, ir_version=proto.ir_version,
            producer_name=proto.producer_name, producer_version=proto.producer_version,
            domain=proto.domain, model_version=proto.model_version, doc_string=proto.doc_string,
            metadata={p.key: p.value for p in proto.metadata_props}, functions=functions,
            source_path=os.path.abspath(path) if path else None,
            source_data_files=sorted(self.external.files),
        )
        for field in _MODEL_EXTRA_FIELDS:
            if field in proto.DESCRIPTOR.fields_by_name and len(getattr(proto, field)):
                model.extra[field] = [_copy(x) for x in getattr(proto, field)]
        return model

    # ---------------------------------------------------------------- graphs
    def graph(self, gp: onnx.GraphProto, g: Graph, *, top: bool = False) -> Graph:
        where = f"graph {gp.name!r}"
        g.doc_string = gp.doc_string
        if "metadata_props" in gp.DESCRIPTOR.fields_by_name:
            g.metadata = {p.key: p.value for p in gp.metadata_props}
        for field in _GRAPH_EXTRA_FIELDS:
            if len(getattr(gp, field)):
                g.extra[field] = [_copy(x) for x in getattr(gp, field)]
        if len(gp.sparse_initializer):
            raise ModelLoadError(f"{where}: sparse initializers are not supported")

        inits = {t.name: t for t in gp.initializer}
        if len(inits) != len(gp.initializer):
            raise ModelLoadError(f"{where}: duplicate initializer name")
        self.renamed.append({})
        self.defined.append(set())
        try:
            return self._graph_body(gp, g, where, inits, top)
        finally:
            self.renamed.pop()
            self.defined.pop()

    def _graph_body(self, gp: onnx.GraphProto, g: Graph, where: str, inits: dict, top: bool) -> Graph:
        input_names = set()
        for vi in gp.input:
            if vi.name in input_names:
                raise ModelLoadError(f"{where}: duplicate graph input {vi.name!r}")
            input_names.add(vi.name)
            if vi.name in inits and top and not self.keep_initializer_inputs:
                continue
            v = self._define(g, vi.name, where, graph_input=True)
            _set_type(v, vi)
        for i, t in enumerate(gp.initializer):
            v = g.value(self._resolve(t.name)) if t.name in input_names else None
            if v is None:
                v = self._define(g, t.name, where)
            if top and t.name in self.given_tensors:
                v.const = self.given_tensors[t.name]
            elif top and i in self.mapped_initializers and t.data_location != onnx.TensorProto.EXTERNAL:
                v.const = self.mapped_tensor(t, i)
            else:
                v.const = self.tensor(t)
            v.dtype, v.shape = v.const.dtype, v.const.shape
        for n in gp.node:
            for o in n.output:
                if o:
                    self._define(g, o, where, producer=n)
        declared: set[str] = set()
        for vi in gp.value_info:
            v = g.value(self._resolve(vi.name))
            if v is None or v.const is not None or v.is_graph_input:
                continue  # a graph input's own declaration wins over a value_info entry
            (_merge_value_info if vi.name in declared else _set_type)(v, vi)
            declared.add(vi.name)
        for n in gp.node:
            self.node(n, g, where)
        for vi in gp.output:
            v = g.lookup_or_capture(self._resolve(vi.name))
            if v is None:
                raise ModelLoadError(f"{where}: output {vi.name!r} is not produced by any node")
            _set_type(v, vi)
            g.outputs.append(v)
        for note in g.extra.get("quantization_annotation", []):  # it names values: the renamed ones too
            note.tensor_name = self._resolve(note.tensor_name)
        return g

    def _resolve(self, name: str) -> str:
        """The IR name of the value `name` means in the graph being read: ONNX scoping, innermost
        definition first."""
        for renamed in reversed(self.renamed):
            if name in renamed:
                return renamed[name]
        return name

    def _define(self, g: Graph, name: str, where: str, producer=None, graph_input: bool = False) -> Value:
        """The value `name` defines in `g`. A subgraph may define a name an enclosing or sibling
        graph defines too (Paddle2ONNX names a Loop body's carried inputs after the outer values
        that start them, tf2onnx nests loops with the same counter names): onnxruntime reads the
        innermost definition, while the IR's names are unique across the model
        (docs/ARCHITECTURE.md), so the inner value takes a fresh name and this graph's readers,
        and its subgraphs', resolve to it."""
        if g.parent is None or name in self.defined[-1]:
            self._declare(g, name, where, producer)  # the same graph twice: refused
        self.defined[-1].add(name)
        # a name in use (an outer value's, or one an earlier rename here took) gets a fresh one
        v = g.add_input(name) if graph_input else g.add_value(name)
        if v.name != name:
            self.renamed[-1][name] = v.name
        return v

    def _declare(self, g: Graph, name: str, where: str, producer=None) -> None:
        if g.value(name) is not None or name in g.scope.used:
            who = f" (output of {producer.op_type} node {producer.name!r})" if producer is not None else ""
            raise ModelLoadError(f"{where}: value name {name!r} is defined twice{who}")

    def node(self, n: onnx.NodeProto, g: Graph, where: str) -> Node:
        inputs = []
        for name in n.input:
            if not name:
                inputs.append(None)
                continue
            v = g.lookup_or_capture(self._resolve(name))
            if v is None:
                raise ModelLoadError(
                    f"{where}: {n.op_type} node {n.name!r} reads {name!r}, which no node, input or "
                    f"initializer defines")
            inputs.append(v)
        outputs = [g.value(self._resolve(o)) if o else None for o in n.output]
        node = g.add_node(n.op_type, inputs, outputs, domain=n.domain, name=n.name)
        node.doc_string = n.doc_string
        if "overload" in n.DESCRIPTOR.fields_by_name:
            node.overload = n.overload
        if "metadata_props" in n.DESCRIPTOR.fields_by_name:
            node.metadata = {p.key: p.value for p in n.metadata_props}
        for a in n.attribute:
            node.attrs[a.name] = self.attr(a, g, node)
        return node

    def attr(self, a: onnx.AttributeProto, g: Graph, node: Node) -> Attr:
        t = a.type or _infer_attr_type(a)
        if a.ref_attr_name:
            value = None
        elif t == A.FLOAT:
            value = a.f
        elif t == A.INT:
            value = a.i
        elif t == A.STRING:
            value = a.s
        elif t == A.TENSOR:
            value = self.tensor(a.t)
        elif t == A.GRAPH:
            value = self.subgraph(a.g, g, node, a.name, 0)
        elif t == A.FLOATS:
            value = list(a.floats)
        elif t == A.INTS:
            value = list(a.ints)
        elif t == A.STRINGS:
            value = list(a.strings)
        elif t == A.TENSORS:
            value = [self.tensor(x) for x in a.tensors]
        elif t == A.GRAPHS:
            value = [self.subgraph(x, g, node, a.name, i) for i, x in enumerate(a.graphs)]
        else:  # sparse tensors and type protos: kept verbatim
            value = _copy(a)
        return Attr(t, value, a.ref_attr_name, a.doc_string)

    def subgraph(self, gp: onnx.GraphProto, parent: Graph, node: Node, attr: str, index: int) -> Graph:
        sub = Graph(gp.name, parent=parent)
        parent.attach_subgraph(node, attr, index, sub)
        return self.graph(gp, sub)

    def function(self, fp: onnx.FunctionProto) -> Function:
        body = Graph(fp.name, scope=NameScope())
        where = f"function {fp.domain}.{fp.name}"
        for name in fp.input:
            body.add_input(name)
        for n in fp.node:
            for o in n.output:
                if o:
                    self._declare(body, o, where, producer=n)
                    body.add_value(o)
        if "value_info" in fp.DESCRIPTOR.fields_by_name:
            for vi in fp.value_info:
                v = body.value(vi.name)
                if v is not None:
                    _set_type(v, vi)
        for n in fp.node:
            self.node(n, body, where)
        for name in fp.output:
            v = body.value(name)
            if v is None:
                raise ModelLoadError(f"{where}: output {name!r} is not produced by any node")
            body.outputs.append(v)
        f = Function(name=fp.name, domain=fp.domain, body=body, attributes=list(fp.attribute),
                     opset_imports={o.domain: o.version for o in fp.opset_import},
                     doc_string=fp.doc_string)
        if "overload" in fp.DESCRIPTOR.fields_by_name:
            f.overload = fp.overload
        if "metadata_props" in fp.DESCRIPTOR.fields_by_name:
            f.metadata = {p.key: p.value for p in fp.metadata_props}
        for a in fp.attribute_proto:
            f.attribute_defaults[a.name] = self.attr(a, body, None)
        return f

    def mapped_tensor(self, t: onnx.TensorProto, index: int) -> Tensor:
        mapped, payload = self.mapped_initializers[index]
        _check_data_type(t)
        if t.data_type == onnx.TensorProto.STRING:
            raise ModelLoadError(f"initializer {t.name!r}: a string tensor cannot hold raw_data")
        tensor = Tensor.from_external(t, mapped, payload.offset)
        if tensor.nbytes != payload.length:
            raise ModelLoadError(f"initializer {t.name!r} has {payload.length} bytes of data but its "
                                 f"shape and type need {tensor.nbytes}")
        return tensor

    def tensor(self, t: onnx.TensorProto) -> Tensor:
        _check_data_type(t)
        if t.data_location == onnx.TensorProto.EXTERNAL:
            return self.external.tensor(t)
        tensor = Tensor.from_proto(t)
        if t.HasField("raw_data"):  # as for mapped payloads: onnxruntime refuses a wrong size too
            if t.data_type == onnx.TensorProto.STRING:
                raise ModelLoadError(f"tensor {t.name!r}: a string tensor cannot hold raw_data")
            if len(t.raw_data) != tensor.nbytes:
                raise ModelLoadError(f"tensor {t.name!r} has {len(t.raw_data)} bytes of data but its shape and "
                                     f"type need {tensor.nbytes}")
        return tensor


# element types this onnx defines (UNDEFINED, 0, is not a type a tensor can have)
_DATA_TYPES = frozenset(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}


def _check_data_type(t: onnx.TensorProto) -> None:
    """A tensor's data type is one ONNX defines and its dims are not negative."""
    if t.data_type not in _DATA_TYPES:
        what = "has no data type" if t.data_type == 0 else f"has data type {t.data_type}, which ONNX does not define"
        raise ModelLoadError(f"tensor {t.name!r} {what}")
    if any(d < 0 for d in t.dims):
        raise ModelLoadError(f"tensor {t.name!r} has a negative dim: {list(t.dims)}")


def _check_type(tp: onnx.TypeProto, name: str, depth: int = 0) -> None:
    """Element types in a declared type (0: unknown, allowed) must be ones ONNX defines."""
    kind = tp.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        elem = getattr(tp, kind).elem_type
        if elem and elem not in _DATA_TYPES:
            raise ModelLoadError(f"value {name!r} declares element type {elem}, which ONNX does not define")
    elif kind in ("sequence_type", "optional_type"):
        if getattr(tp, kind).HasField("elem_type") and depth < 100:
            _check_type(getattr(tp, kind).elem_type, name, depth + 1)
    elif kind == "map_type":
        if tp.map_type.key_type and tp.map_type.key_type not in _DATA_TYPES:
            raise ModelLoadError(f"value {name!r} declares map key type {tp.map_type.key_type}, which ONNX does not define")
        if tp.map_type.HasField("value_type") and depth < 100:
            _check_type(tp.map_type.value_type, name, depth + 1)


def _set_type(v, vi: onnx.ValueInfoProto) -> None:
    v.doc_string = vi.doc_string or v.doc_string
    if "metadata_props" in vi.DESCRIPTOR.fields_by_name and len(vi.metadata_props):
        v.metadata = {p.key: p.value for p in vi.metadata_props}
    if not vi.HasField("type"):
        return
    tp = vi.type
    _check_type(tp, vi.name)
    if tp.WhichOneof("value") == "tensor_type":
        tt = tp.tensor_type
        v.dtype = tt.elem_type or None
        v.shape = declared_dims(tt) if tt.HasField("shape") else None
        v.type_proto = None
    else:
        v.type_proto = _copy(tp)


# dim_param names exporters write for "unknown" (Paddle writes "?" for every dynamic dim): one
# such name on several dims does not make them equal, as a real dim name would
UNNAMED_DIMS = ("", "?")


def declared_dims(tt) -> tuple:
    """Declared dims: ints, symbol names, None for unknown. Exporters write `dim_value: -1` (Paddle),
    an empty name or "?" for an unknown dim: all are unknown. A declared 0 is an empty dim."""
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0
                 else (d.dim_param if d.dim_param not in UNNAMED_DIMS else None) for d in tt.shape.dim)


def _merge_value_info(v, vi: onnx.ValueInfoProto) -> None:
    """A second value_info for the same value (some exporters write duplicates): where the two
    disagree, the type or dim is unknown rather than either guess."""
    old_dtype, old_shape = v.dtype, v.shape
    _set_type(v, vi)
    if old_dtype is not None and v.dtype != old_dtype:
        v.dtype = None
    if old_shape is not None and v.shape is not None:
        if len(old_shape) != len(v.shape):
            v.shape = None
        else:
            v.shape = tuple(a if a == b else None for a, b in zip(old_shape, v.shape))


def _infer_attr_type(a: onnx.AttributeProto) -> int:
    """Attribute type for old models that leave `type` unset."""
    for field, t in (("f", A.FLOAT), ("i", A.INT), ("s", A.STRING), ("t", A.TENSOR), ("g", A.GRAPH)):
        if a.HasField(field):
            return t
    for field, t in (("floats", A.FLOATS), ("ints", A.INTS), ("strings", A.STRINGS),
                     ("tensors", A.TENSORS), ("graphs", A.GRAPHS)):
        if len(getattr(a, field)):
            return t
    return A.UNDEFINED


def _copy(msg):
    c = type(msg)()
    c.CopyFrom(msg)
    return c
