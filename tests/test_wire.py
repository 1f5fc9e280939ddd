"""The protobuf wire helpers behind zero-copy weights (graphopt/wire.py)."""

import os

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
