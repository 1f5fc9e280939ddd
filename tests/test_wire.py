"""The protobuf wire helpers behind zero-copy weights (graphopt/wire.py)."""

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.errors import ModelLoadError
from graphopt.onnx_io import emit as backend
from graphopt.onnx_io import load as frontend
from graphopt.onnx_io import wire
from graphopt.onnx_io.emit import to_proto


def model_with_weights() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    big = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "big")
    small = numpy_helper.from_array(np.arange(4, dtype=np.float32), "small")
    shape = numpy_helper.from_array(np.array([1, 32 * 4], np.int64), "shape")
    big.doc_string = "a weight"
    nodes = [helper.make_node("MatMul", ["x", "big"], ["h"]),
             helper.make_node("Reshape", ["h", "shape"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128])], [big, small, shape])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_varints_round_trip():
    for v in (0, 1, 127, 128, 300, 2**31, 2**63 - 1):
        enc = wire.encode_varint(v)
        assert wire.read_varint(enc, 0, len(enc)) == (v, len(enc))
    with pytest.raises(wire.WireError):
        wire.read_varint(b"\x80\x80", 0, 2)


def test_strip_leaves_large_payloads_in_place():
    proto = model_with_weights()
    buf = proto.SerializeToString()
    stripped, payloads = wire.strip_initializer_data(buf, 1024)
    assert [p.index for p in payloads] == [0]  # only `big` is over the threshold
    p = payloads[0]
    assert buf[p.offset:p.offset + p.length] == proto.graph.initializer[0].raw_data
    parsed = onnx.ModelProto.FromString(stripped)
    assert not parsed.graph.initializer[0].raw_data and parsed.graph.initializer[0].doc_string == "a weight"
    assert parsed.graph.initializer[1] == proto.graph.initializer[1]
    assert len(stripped) < len(buf) - 8000


def test_fields_running_past_the_end_are_errors():
    buf = model_with_weights().SerializeToString()
    with pytest.raises(wire.WireError):
        wire.strip_initializer_data(buf[:-3], 1024)


def test_streamed_file_parses_to_the_same_model(tmp_path):
    proto = model_with_weights()
    src = tmp_path / "m.onnx"
    onnx.save(proto, src)
    model = frontend.load(str(src))
    assert model.graph.value("big").const.is_external  # mapped from the model file
    emitted = backend.emit(model, str(tmp_path), "out.onnx")
    got = onnx.load(emitted.path)
    assert [t.name for t in got.graph.initializer] == ["big", "small", "shape"]
    for a, b in zip(got.graph.initializer, proto.graph.initializer):
        np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
    assert got.graph.initializer[0].doc_string == "a weight"
    # the file re-reads (graph chunks and all) and re-emits byte-identically
    again = backend.emit(frontend.load(emitted.path), str(tmp_path / ".."), "again.onnx")
    assert open(again.path, "rb").read() == open(emitted.path, "rb").read()
    os.unlink(again.path)
    # and it holds the same model as the all-in-memory emission
    assert onnx.load(emitted.path) == to_proto(model)


def test_payload_of_the_wrong_size_is_refused(tmp_path):
    proto = model_with_weights()
    proto.graph.initializer[0].dims[0] = 65  # claims more data than it has
    src = tmp_path / "m.onnx"
    src.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelLoadError, match="has 8192 bytes of data but its shape and type need 8320"):
        frontend.load(str(src))


# ------------------------------------------------------------ what protobuf does with odd files
def _tensor_with_second_raw_data(proto: onnx.ModelProto, index: int, second: bytes) -> bytes:
    """The model's bytes with initializer `index` given a second raw_data field after the first
    (protobuf: the last copy of a scalar field counts)."""
    t = proto.graph.initializer[index]
    tensor = t.SerializeToString()
    twice = tensor + wire.tag(wire.TENSOR_RAW_DATA, wire.LEN) + wire.encode_varint(len(second)) + second
    g = proto.graph
    g2 = onnx.GraphProto()
    g2.CopyFrom(g)
    del g2.initializer[:]
    inits = b"".join(wire.tag(wire.GRAPH_INITIALIZER, wire.LEN) + wire.encode_varint(len(x)) + x
                     for x in [i.SerializeToString() if k != index else twice for k, i in enumerate(g.initializer)])
    graph = g2.SerializeToString() + inits
    m2 = onnx.ModelProto()
    m2.CopyFrom(proto)
    m2.ClearField("graph")
    return m2.SerializeToString() + wire.tag(wire.MODEL_GRAPH, wire.LEN) + wire.encode_varint(len(graph)) + graph


@pytest.mark.parametrize("index", [0, 1], ids=["memory-mapped", "inline"])
def test_raw_data_given_twice_reads_the_last_copy_like_onnx_and_onnxruntime(tmp_path, index):
    import onnxruntime as ort

    proto = model_with_weights()
    first = numpy_helper.to_array(proto.graph.initializer[index])
    last = (first * -2 + 1).astype(np.float32)
    src = tmp_path / "m.onnx"
    src.write_bytes(_tensor_with_second_raw_data(proto, index, last.tobytes()))
    # onnx: parses, passes the checker, reads the last copy
    ref = onnx.load(str(src))
    onnx.checker.check_model(ref)
    np.testing.assert_array_equal(numpy_helper.to_array(ref.graph.initializer[index]), last)
    # graphopt reads the same
    model = frontend.load(str(src))
    name = proto.graph.initializer[index].name
    assert model.graph.value(name).const.is_external == (index == 0)
    np.testing.assert_array_equal(model.graph.value(name).const.numpy(), last)
    # and so does onnxruntime: the file computes what a file holding only the last copy does
    proto.graph.initializer[index].raw_data = last.tobytes()
    only_last = tmp_path / "last.onnx"
    onnx.save(proto, str(only_last))
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    got = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = ort.InferenceSession(str(only_last), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)
    # through the command line: the written weights are the last copy
    out = tmp_path / "out.onnx"
    run = subprocess.run([sys.executable, "-m", "graphopt", str(src), "-p", "none", "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    written = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    np.testing.assert_array_equal(written[name], last)


def test_raw_data_twice_of_which_the_last_has_the_wrong_size_is_refused(tmp_path):
    proto = model_with_weights()
    src = tmp_path / "m.onnx"
    src.write_bytes(_tensor_with_second_raw_data(proto, 0, b"\0" * 2000))
    with pytest.raises(ModelLoadError, match="has 2000 bytes of data but its shape and type need 8192"):
        frontend.load(str(src))


def _group(number: int) -> bytes:
    """An unknown field encoded as a group (wire types 3 and 4), with a varint, a string and a
    nested group inside."""
    inner = wire.tag(7, 0) + wire.encode_varint(300) + wire.tag(8, wire.LEN) + b"\x03abc"
    nested = wire.tag(9, wire.START_GROUP) + wire.tag(1, 5) + b"\0\0\0\0" + wire.tag(9, wire.END_GROUP)
    return wire.tag(number, wire.START_GROUP) + inner + nested + wire.tag(number, wire.END_GROUP)


def _with_group_in_graph(buf: bytes, group: bytes) -> bytes:
    out = b""
    for field, wt, tag_start, start, end in wire.iter_fields(buf, 0, len(buf)):
        if field == wire.MODEL_GRAPH:
            graph = group + buf[start:end] + group
            out += wire.tag(wire.MODEL_GRAPH, wire.LEN) + wire.encode_varint(len(graph)) + graph
        else:
            out += buf[tag_start:end]
    return out


@pytest.mark.parametrize("where", ["top level", "graph", "both"])
def test_unknown_group_fields_are_skipped_and_the_model_round_trips(tmp_path, where):
    proto = model_with_weights()
    buf = proto.SerializeToString()
    if where in ("graph", "both"):
        buf = _with_group_in_graph(buf, _group(1000))
    if where in ("top level", "both"):
        buf = _group(999) + buf + _group(12345)
    src = tmp_path / "m.onnx"
    src.write_bytes(buf)
    ref = onnx.load(str(src))  # protobuf skips them
    model = frontend.load(str(src))
    assert model.graph.value("big").const.is_external
    for t in ref.graph.initializer:
        np.testing.assert_array_equal(model.graph.value(t.name).const.numpy(), numpy_helper.to_array(t))
    out = tmp_path / "out.onnx"
    run = subprocess.run([sys.executable, "-m", "graphopt", str(src), "-p", "none", "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got = onnx.load(str(out))
    assert [n.op_type for n in got.graph.node] == [n.op_type for n in proto.graph.node]
    for a, b in zip(got.graph.initializer, proto.graph.initializer):
        assert a.name == b.name
        np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))


def test_a_group_without_its_end_tag_is_not_a_model(tmp_path):
    buf = model_with_weights().SerializeToString() + wire.tag(999, wire.START_GROUP) + wire.tag(1, 0) + b"\x01"
    src = tmp_path / "m.onnx"
    src.write_bytes(buf)
    with pytest.raises(ModelLoadError, match="group without an end tag"):
        frontend.load(str(src))


def test_external_data_location_wins_over_an_inline_raw_data_as_in_onnx(tmp_path):
    """A tensor marked EXTERNAL that also carries raw_data: onnx.load (and onnxruntime) read the
    external file; so does graphopt, even where the inline copy is large enough to be mapped."""
    proto = model_with_weights()
    t = proto.graph.initializer[0]
    inline = numpy_helper.to_array(t)
    external = (inline + 1).astype(np.float32)
    (tmp_path / "w.bin").write_bytes(external.tobytes())
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="w.bin")
    src = tmp_path / "m.onnx"
    src.write_bytes(proto.SerializeToString())
    np.testing.assert_array_equal(numpy_helper.to_array(onnx.load(str(src)).graph.initializer[0]), external)
    model = frontend.load(str(src))
    np.testing.assert_array_equal(model.graph.value("big").const.numpy(), external)
