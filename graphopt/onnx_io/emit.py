"""Back end: IR -> ModelProto -> checked file.

Emission is deterministic: nodes in the IR's stable topological order, initializers in value id
order, attributes in their stored order, and deterministic protobuf serialization.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import onnx
from onnx import AttributeProto as A
from onnx import numpy_helper

from graphopt.errors import InvalidModelError, WriteError
from graphopt.ir import Attr, Function, Graph, Model, Tensor, Value
from graphopt.onnx_io import wire

AUTO_EXTERNAL_BYTES = 1_800_000_000


EXTERNAL_MIN_BYTES = 1024


ALIGNMENT = 64


STREAM_MIN_BYTES = 1024


CHECK_STUB_MIN_BYTES = 64 * 1024


@dataclass
class OrtModel:
    """What onnxruntime loads: a file, or serialized bytes whose external data (the weights,
    referenced where they already lie) is resolved against `folder`."""

    path: Optional[str] = None
    data: Optional[bytes] = None
    folder: Optional[str] = None

    @property
    def label(self) -> str:
        return os.path.basename(self.path) if self.path else "model"


class ExternalDataWriter:
    """Appends tensor bytes to one fresh data file and returns where each landed."""

    def __init__(self, path: str, location: str):
        self.path, self.location = path, location
        self._f = open(path, "xb")  # a fresh file: never append to an old one
        self.offset = 0

    def write(self, tensor: Tensor) -> tuple[int, int]:
        pad = (-self.offset) % ALIGNMENT
        if pad:
            self._f.write(b"\0" * pad)
            self.offset += pad
        start = self.offset
        self.offset += _write_streamed(self._f, tensor)
        return start, self.offset - start

    def close(self) -> None:
        self._f.close()


WRITE_SLICE_BYTES = 64 << 20


def _write_streamed(f, tensor: Tensor) -> int:
    """Write a tensor's bytes in slices; a memory-mapped source gives its pages back after
    each slice, so writing a weight never needs the whole weight resident."""
    raw = _tensor_bytes(tensor)
    n = raw.nbytes
    for start in range(0, n, WRITE_SLICE_BYTES):
        f.write(raw[start:start + WRITE_SLICE_BYTES])
        if tensor.is_external:
            tensor.release_pages(start, WRITE_SLICE_BYTES)
    return n


def _tensor_bytes(tensor: Tensor) -> memoryview:
    if tensor.is_external or (tensor.source_proto is not None and tensor.source_proto.HasField("raw_data")):
        return tensor.raw_bytes()
    arr = np.ascontiguousarray(tensor.numpy())
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if arr.dtype == object or tensor.dtype == onnx.TensorProto.STRING:
        raise ValueError("string tensors cannot be stored as external data")
    if tensor.source_proto is None and arr.dtype.itemsize * arr.size == tensor.nbytes:
        return memoryview(arr.reshape(-1).view(np.uint8))  # any fixed-size dtype, bfloat16 too
    return tensor.raw_bytes()


class _Emitter:
    """Builds protos. With `defer_initializers`, the main graph's initializers are left out and
    collected in `deferred` (name, tensor), for streaming after the serialized model. With
    `stub_constants`, large float tensors held in attributes (a Paddle export's weights are
    Constant nodes) become stubs too: shape inference needs their dtype and dims, and reads the
    values of integer shape tensors only. Without `subgraph_shapes`, values inside subgraphs are
    declared with their element types only, and without `value_shapes` the main graph's
    intermediate values too (see light_proto)."""

    def __init__(self, writer: Optional[ExternalDataWriter], defer_initializers: bool = False,
                 stub_constants: bool = False, subgraph_shapes: bool = True, value_shapes: bool = True):
        self.writer = writer
        self.defer_initializers = defer_initializers
        self.stub_constants = stub_constants
        self.subgraph_shapes = subgraph_shapes
        self.value_shapes = value_shapes
        self.deferred: list[tuple[str, Tensor]] = []

    def model(self, m: Model) -> onnx.ModelProto:
        p = onnx.ModelProto()
        p.ir_version = m.ir_version
        if m.ir_version < 4 and any(not v.is_graph_input for g in m.graph.walk() for v in g.initializers):
            p.ir_version = 4  # IR 3 lists every initializer as an input; IR 4 lifted that rule
        for domain, version in m.opset_imports.items():
            p.opset_import.add(domain=domain, version=version)
        for name, value in _nonempty(producer_name=m.producer_name, producer_version=m.producer_version,
                                      domain=m.domain, model_version=m.model_version,
                                      doc_string=m.doc_string).items():
            setattr(p, name, value)
        for k, v in m.metadata.items():
            p.metadata_props.add(key=k, value=v)
        self.graph(m.graph, top=True, into=p.graph)
        for f in m.functions:
            p.functions.append(self.function(f))
        for name, items in m.extra.items():
            getattr(p, name).extend(items)
        return p

    def graph(self, g: Graph, top: bool = False, into: Optional[onnx.GraphProto] = None) -> onnx.GraphProto:
        # messages are filled where they will live: appending a built one copies it
        gp = onnx.GraphProto() if into is None else into
        if into is not None:
            gp.SetInParent()  # present even when empty, as a copied-in graph would be
        for k, v in _nonempty(name=g.name, doc_string=g.doc_string).items():
            setattr(gp, k, v)
        for k, v in g.metadata.items():
            gp.metadata_props.add(key=k, value=v)
        order = g.toposort()
        for node in order:
            self.node(node, gp.node.add())
        special = set()
        for v in g.inputs:
            _value_info(v, gp.input.add())
            special.add(v.id)
        for v in g.initializers:
            if top and self.defer_initializers:
                self.deferred.append((v.name, v.const))
            else:
                gp.initializer.append(self.tensor(v.const, v.name))
            special.add(v.id)
        for v in g.outputs:
            special.add(v.id)
        shapes = top or self.subgraph_shapes
        for node in order:
            for v in node.outputs:
                if v is not None and v.id not in special and (v.dtype is not None or v.type_proto is not None):
                    _value_info(v, gp.value_info.add(), with_shape=shapes and (self.value_shapes or not top))
        for v in g.outputs:
            _value_info(v, gp.output.add(), with_shape=shapes)
        for name, items in g.extra.items():
            getattr(gp, name).extend(items)
        return gp

    def node(self, n, into: Optional[onnx.NodeProto] = None) -> onnx.NodeProto:
        # the hot loop of every emission: fields set one by one, only when they have a value
        np_ = onnx.NodeProto() if into is None else into
        if n.op_type:
            np_.op_type = n.op_type
        if n.domain:
            np_.domain = n.domain
        if n.name:
            np_.name = n.name
        if n.doc_string:
            np_.doc_string = n.doc_string
        if n.overload:
            np_.overload = n.overload
        np_.input.extend([v.name if v is not None else "" for v in n.inputs])
        np_.output.extend([v.name if v is not None else "" for v in n.outputs])
        for name, a in n.attrs.items():
            self.attr(name, a, np_.attribute.add())
        for k, v in n.metadata.items():
            np_.metadata_props.add(key=k, value=v)
        return np_

    def attr(self, name: str, a: Attr, into: Optional[onnx.AttributeProto] = None) -> onnx.AttributeProto:
        t, v = a.type, a.value
        ap = onnx.AttributeProto() if into is None else into
        if isinstance(v, onnx.AttributeProto):  # kept verbatim (sparse tensors, type protos)
            ap.CopyFrom(v)
            return ap
        if name:
            ap.name = name
        if t:
            ap.type = t
        if a.doc_string:
            ap.doc_string = a.doc_string
        if a.ref_attr_name:
            ap.ref_attr_name = a.ref_attr_name
            return ap
        if t == A.FLOAT:
            ap.f = v
        elif t == A.INT:
            ap.i = v
        elif t == A.STRING:
            ap.s = v
        elif t == A.TENSOR:
            if self.stub_constants and v.nbytes >= CHECK_STUB_MIN_BYTES and v.dtype in _FLOAT_TENSORS:
                _stub(ap.t, v.dtype, v.shape, v.nbytes)
            else:
                ap.t.CopyFrom(self.tensor(v, None))
        elif t == A.GRAPH:
            self.graph(v, into=ap.g)
        elif t == A.FLOATS:
            ap.floats.extend(v)
        elif t == A.INTS:
            ap.ints.extend(v)
        elif t == A.STRINGS:
            ap.strings.extend(v)
        elif t == A.TENSORS:
            ap.tensors.extend(self.tensor(x, None) for x in v)
        elif t == A.GRAPHS:
            ap.graphs.extend(self.graph(x) for x in v)
        return ap

    def function(self, f: Function) -> onnx.FunctionProto:
        fp = onnx.FunctionProto(**_nonempty(name=f.name, domain=f.domain, doc_string=f.doc_string))
        if f.overload:
            fp.overload = f.overload
        fp.input.extend(v.name for v in f.body.inputs)
        fp.output.extend(v.name for v in f.body.outputs)
        fp.attribute.extend(f.attributes)
        for name, a in f.attribute_defaults.items():
            fp.attribute_proto.append(self.attr(name, a))
        for domain, version in f.opset_imports.items():
            fp.opset_import.add(domain=domain, version=version)
        for node in f.body.toposort():
            self.node(node, fp.node.add())
            for v in node.outputs:
                if v is not None and v.dtype is not None and not v.is_graph_output:
                    _value_info(v, fp.value_info.add())
        for k, v in f.metadata.items():
            fp.metadata_props.add(key=k, value=v)
        return fp

    def tensor(self, t: Tensor, name: Optional[str]) -> onnx.TensorProto:
        src = t.source_proto
        if self.writer is not None and t.nbytes >= EXTERNAL_MIN_BYTES and t.dtype != onnx.TensorProto.STRING:
            tp = onnx.TensorProto(data_type=t.dtype, dims=t.shape, **_nonempty(doc_string=t.doc_string))
            offset, length = self.writer.write(t)
            tp.data_location = onnx.TensorProto.EXTERNAL
            for k, v in (("location", self.writer.location), ("offset", str(offset)), ("length", str(length))):
                tp.external_data.add(key=k, value=v)
        elif src is not None:
            tp = onnx.TensorProto()
            tp.CopyFrom(src)
        elif t.is_external:
            tp = onnx.TensorProto(data_type=t.dtype, dims=t.shape, **_nonempty(doc_string=t.doc_string))
            tp.raw_data = bytes(t.raw_bytes())
        else:
            tp = numpy_helper.from_array(np.asarray(t.numpy()))
            tp.data_type = t.dtype
            if t.doc_string:
                tp.doc_string = t.doc_string
        if name:
            tp.name = name
        elif tp.HasField("name"):
            tp.ClearField("name")
        return tp


def _value_info(v: Value, into: Optional[onnx.ValueInfoProto] = None, with_shape: bool = True) -> onnx.ValueInfoProto:
    vi = onnx.ValueInfoProto() if into is None else into
    if v.name:
        vi.name = v.name
    if v.doc_string:
        vi.doc_string = v.doc_string
    if v.type_proto is not None:
        vi.type.CopyFrom(v.type_proto)
    elif v.dtype is not None or v.shape is not None:
        tt = vi.type.tensor_type
        tt.elem_type = v.dtype or 0
        if v.shape is not None and with_shape:
            shape = tt.shape
            shape.SetInParent()
            for d in v.shape:
                dim = shape.dim.add()
                if isinstance(d, int):
                    dim.dim_value = d
                elif d:
                    dim.dim_param = d
    for k, val in v.metadata.items():
        vi.metadata_props.add(key=k, value=val)
    return vi


def _nonempty(**fields) -> dict:
    """Proto2 keeps presence: only set what has a value, so round trips add no empty fields."""
    return {k: v for k, v in fields.items() if v}


def constant_bytes(model: Model) -> int:
    return sum(v.const.nbytes for g in model.all_graphs() for v in g.initializers)


def to_proto(model: Model) -> onnx.ModelProto:
    """The model as one ModelProto with all data inline (for models under 2 GiB)."""
    return _Emitter(None).model(model)


@dataclass
class EmittedModel:
    path: str
    data_path: Optional[str]
    nbytes: int
    # For a streamed inline model: the serialized model without its main-graph initializers, and
    # each initializer as (name, inline TensorProto) or (name, dtype, shape, offset, length) of
    # its raw bytes inside the file. Lets onnxruntime load it without parsing the weights.
    main: Optional[bytes] = None
    initializers: list = field(default_factory=list)

    def ort_view(self):
        """What validation hands onnxruntime: the file's weights referenced in place."""

        if self.main is None:
            return OrtModel(path=self.path)
        proto = onnx.ModelProto.FromString(self.main)
        location = os.path.basename(self.path)
        for entry in self.initializers:
            if len(entry) == 2:
                proto.graph.initializer.append(entry[1])
            else:
                name, dtype, shape, offset, length = entry
                _add_external_ref(proto, name, dtype, shape, location, offset, length)
        return OrtModel(data=proto.SerializeToString(), folder=os.path.dirname(self.path), path=self.path)


def _add_external_ref(proto: onnx.ModelProto, name: str, dtype: int, shape, location: str, offset: int, length: int) -> None:
    ref = proto.graph.initializer.add(name=name, data_type=dtype, dims=shape)
    ref.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        ref.external_data.add(key=k, value=v)


def ort_view(model: Model):
    """The model as onnxruntime should load it for validation: weights that live in a mapped file
    inside the model's folder are referenced there, not copied through a protobuf."""

    folder = os.path.dirname(model.source_path) if model.source_path else None
    emitter = _Emitter(None, defer_initializers=True)
    proto = emitter.model(model)
    real_folder = os.path.realpath(folder) if folder else None
    for name, t in emitter.deferred:
        where = t.file_location()
        rel = os.path.relpath(where[0], real_folder) if where and real_folder else None
        if rel is None or rel.startswith(".."):
            proto.graph.initializer.append(emitter.tensor(t, name))
        else:
            _add_external_ref(proto, name, t.dtype, t.shape, rel.replace(os.sep, "/"), where[1], t.nbytes)
    return OrtModel(data=_serialize(proto), folder=folder, path=model.source_path)


def emit(model: Model, folder: str, basename: str, *, external_data: Optional[bool] = None,
         check: bool = True) -> EmittedModel:
    """Emit `model` into `folder` as `basename` (plus `basename`.data when data goes external),
    then run the full ONNX checker with strict shape inference on what was written.

    Inline weights are streamed: the model is serialized without its main-graph initializers,
    which follow as appended `graph{initializer}` chunks written straight from their source
    (see wire.py), so no second copy of the weights is ever built in memory."""
    if external_data is None:
        external_data = constant_bytes(model) > AUTO_EXTERNAL_BYTES
    path = os.path.join(folder, basename)
    if external_data:
        location = basename + ".data"
        writer = ExternalDataWriter(os.path.join(folder, location), location)
        try:
            proto = _Emitter(writer).model(model)
        finally:
            writer.close()
        data = _serialize(proto)
        with open(path, "xb") as f:
            f.write(data)
        if check:
            check_model(path)
        return EmittedModel(path, writer.path, len(data))
    emitter = _Emitter(None, defer_initializers=True)
    proto = emitter.model(model)
    main = _serialize(proto)
    entries = []
    with open(path, "xb") as f:
        f.write(main)
        for name, tensor in emitter.deferred:
            entries.append(_write_initializer_chunk(f, emitter, name, tensor))
        size = f.tell()
    if check:
        _check_light(proto, emitter, folder)
    return EmittedModel(path, None, size, main, entries)


def _serialize(proto: onnx.ModelProto) -> bytes:
    data = proto.SerializeToString(deterministic=True)
    if len(data) > onnx.checker.MAXIMUM_PROTOBUF:
        raise WriteError("the graph is over 2 GiB even without its weights; cannot be written")
    return data


def _write_initializer_chunk(f, emitter: _Emitter, name: str, t: Tensor) -> tuple:
    """Append one initializer; returns (name, proto) for a small one, or (name, dtype, shape,
    offset, length) locating the raw bytes of a streamed one inside the file."""
    if t.nbytes < STREAM_MIN_BYTES or t.dtype == onnx.TensorProto.STRING:
        tp = emitter.tensor(t, name)
        chunk = onnx.ModelProto()
        chunk.graph.initializer.append(tp)
        f.write(chunk.SerializeToString(deterministic=True))
        return name, tp
    head = onnx.TensorProto(dims=t.shape, data_type=t.dtype, name=name).SerializeToString(deterministic=True)
    tail = onnx.TensorProto(**_nonempty(doc_string=t.doc_string)).SerializeToString(deterministic=True)
    f.write(wire.initializer_chunk_parts(head, _tensor_bytes(t).nbytes, tail))
    offset = f.tell()
    length = _write_streamed(f, t)
    f.write(tail)
    return name, t.dtype, t.shape, offset, length


STUB_LOCATION = "stub.data"


def light_proto(model: Model, subgraph_shapes: bool = True, value_shapes: bool = True) -> onnx.ModelProto:
    """The model with its large weights (main-graph initializers, float Constants) replaced by
    external-data stubs (dtype and shape only): what shape inference needs, at a fraction of
    the memory and serialization time. Without `subgraph_shapes`, values inside subgraphs are
    declared with their element types only; without `value_shapes`, the main graph's
    intermediate values (analysis/shapes.py says when)."""
    emitter = _Emitter(None, defer_initializers=True, stub_constants=True, subgraph_shapes=subgraph_shapes,
                       value_shapes=value_shapes)
    proto = emitter.model(model)
    _add_stub_initializers(proto, emitter)
    return proto


def _add_stub_initializers(proto: onnx.ModelProto, emitter: _Emitter) -> None:
    for name, t in emitter.deferred:
        if t.nbytes < CHECK_STUB_MIN_BYTES or t.dtype == onnx.TensorProto.STRING:
            proto.graph.initializer.append(emitter.tensor(t, name))
            continue
        _stub(proto.graph.initializer.add(name=name), t.dtype, t.shape, t.nbytes)


_FLOAT_TENSORS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def _stub(tp: onnx.TensorProto, dtype: int, shape, nbytes: int) -> None:
    """`tp` as a tensor of this dtype and shape whose bytes lie in an (empty) stub file."""
    tp.data_type = dtype
    tp.dims.extend(shape)
    tp.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", STUB_LOCATION), ("offset", "0"), ("length", str(nbytes))):
        tp.external_data.add(key=k, value=v)


def _check_light(proto: onnx.ModelProto, emitter: _Emitter, folder: str) -> None:
    """Check the model with its large weights as stubs in an empty external file: the checker
    and shape inference need their types and shapes, never their bytes."""
    light_dir = tempfile.mkdtemp(dir=folder)
    try:
        open(os.path.join(light_dir, STUB_LOCATION), "wb").close()
        _add_stub_initializers(proto, emitter)
        light = os.path.join(light_dir, "light.onnx")
        with open(light, "wb") as f:
            f.write(_serialize(proto))
        check_model(light)
    finally:
        shutil.rmtree(light_dir, ignore_errors=True)


def check_model(model: bytes | str) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        first = lines[0] if lines else type(e).__name__
        raise InvalidModelError(f"emitted model fails the ONNX checker: {first}", frozenset(lines)) from None
