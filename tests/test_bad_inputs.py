"""The bad-input corpus, through the real command line: every case is refused with one line that
names the problem, a non-zero exit code, no traceback, and no output file."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])


def model(nodes, inputs=(X,), outputs=(Y,), inits=(), opsets=(("", 17),)) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", list(inputs), list(outputs), list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], ir_version=8)


def relu():
    return model([helper.make_node("Relu", ["x"], ["y"])])


def with_external(folder, **entries):
    """A MatMul model whose weight lives in w.bin; `entries` overrides its external_data keys."""
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"])], inits=[w])
    path = os.path.join(folder, "model.onnx")
    onnx.save_model(m, path, save_as_external_data=True, location="w.bin", size_threshold=0)
    if entries:
        m = onnx.load(path, load_external_data=False)
        kv = {e.key: e.value for e in m.graph.initializer[0].external_data}
        kv.update(entries)
        del m.graph.initializer[0].external_data[:]
        for k, v in kv.items():
            m.graph.initializer[0].external_data.add(key=k, value=v)
        with open(path, "wb") as f:
            f.write(m.SerializeToString())
    return path


def write(folder, data) -> str:
    path = os.path.join(folder, "model.onnx")
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.SerializeToString())
    return path


def symlinked(folder):
    path = with_external(folder)
    os.rename(os.path.join(folder, "w.bin"), os.path.join(folder, "real.bin"))
    os.symlink(os.path.join(folder, "real.bin"), os.path.join(folder, "w.bin"))
    return path


def hard_linked(folder):
    path = with_external(folder)
    os.link(os.path.join(folder, "w.bin"), os.path.join(folder, "other.bin"))
    return path


def cyclic():
    return model([helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
                  helper.make_node("Identity", ["a"], ["y"])])


def deeply_nested(depth: int = 300) -> bytes:
    """If inside If inside If ..., written on the wire by hand (protobuf will not build it)."""
    def varint(n):
        out = b""
        while True:
            out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
            n >>= 7
            if not n:
                return out

    def field(number, payload):
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["o"])], "leaf", [],
                             [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1, 4])]).SerializeToString()
    graph = leaf
    for level in range(depth):
        branch = field(1, b"then_branch") + field(6, graph) + varint(20 << 3) + varint(5)  # type GRAPH
        node = field(1, b"c") + field(2, b"o") + field(4, b"If") + field(5, branch)
        graph = field(1, node) + field(2, f"g{level}".encode())
    return varint(1 << 3) + varint(8) + field(7, graph) + field(8, varint(2 << 3) + varint(17))


def _varint(n: int) -> bytes:
    out = b""
    while True:
        out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            return out


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def with_bad_text(where: str) -> bytes:
    """A Relu model with bytes that are not UTF-8 in a node name or in the name of value x (its
    input), replaced in place (the same length: every length prefix stays right)."""
    m = relu()
    m.graph.node[0].name = "relu_NAME"
    data = m.SerializeToString()
    if where == "node name":
        return data.replace(b"relu_NAME", b"relu\xff\xfeAME")
    # the value name "x", everywhere it is written: the graph input and the node's input
    x_input = _field(1, b"x")  # ValueInfoProto.name / NodeProto.input
    assert data.count(x_input) == 2
    return data.replace(x_input, _field(1, b"\xff"))


def mlp_with_big_weight(data_type=None) -> onnx.ModelProto:
    """MatMul by a 4x512 weight (8 KiB: it stays in the memory-mapped file)."""
    w = numpy_helper.from_array(np.ones((4, 512), np.float32), "w")
    if data_type is not None:
        w.data_type = data_type
    return model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                 outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512])], inits=[w])


def with_small_weight(data_type) -> onnx.ModelProto:
    b = numpy_helper.from_array(np.ones((1, 4), np.float32), "b")
    b.data_type = data_type
    return model([helper.make_node("Add", ["x", "b"], ["y"])], inits=[b])


def with_small_raw_data(raw: bytes, dims=(1, 4)) -> onnx.ModelProto:
    """Add by an inline (not memory-mapped) initializer whose raw_data and dims disagree."""
    b = numpy_helper.from_array(np.ones((1, 4), np.float32), "b")
    b.raw_data = raw
    del b.dims[:]
    b.dims.extend(dims)
    return model([helper.make_node("Add", ["x", "b"], ["y"])], inits=[b])


def undefined_elem_type() -> onnx.ModelProto:
    m = relu()
    m.graph.input[0].type.tensor_type.elem_type = 1234
    return m


def calib(folder, name, **arrays):
    path = os.path.join(folder, f"{name}.npz")
    np.savez(path, **arrays)
    return path


CASES = {
    "empty file": (lambda d: write(d, b""), [], "file is empty"),
    "truncated protobuf": (lambda d: write(d, relu().SerializeToString()[:-5]), [], "not an ONNX model"),
    "random bytes": (lambda d: write(d, bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))), [],
                     "not an ONNX model"),
    "a protobuf that is not a model": (
        lambda d: write(d, helper.make_tensor("t", TensorProto.FLOAT, [1], [1.0]).SerializeToString()), [],
        "not an ONNX model"),
    "dangling edge": (lambda d: write(d, model([helper.make_node("Add", ["x", "nowhere"], ["y"])])), [],
                      "reads 'nowhere', which no node"),
    "cycle": (lambda d: write(d, cyclic()), [], "has a cycle"),
    "duplicate value names": (lambda d: write(d, model([helper.make_node("Relu", ["x"], ["y"]),
                                                        helper.make_node("Neg", ["x"], ["y"])])), [],
                              "value name 'y' is defined twice"),
    "missing opset import": (lambda d: write(d, model([helper.make_node("Relu", ["x"], ["y"])], opsets=())), [],
                             "has no opset import"),
    "unsupported opset": (lambda d: write(d, model([helper.make_node("Relu", ["x"], ["y"])], opsets=(("", 99),))), [],
                          "unsupported opset 99"),
    "external data: absolute path": (lambda d: with_external(d, location="/etc/passwd"), [], "is an absolute path"),
    "external data: ..": (lambda d: with_external(d, location="../w.bin"), [], "contains '..'"),
    "external data: symlink": (symlinked, [], "is a symlink"),
    "external data: hard link": (hard_linked, [], "hard-linked"),
    "external data: past the end": (lambda d: with_external(d, offset="64"), [], "past the end"),
    "external data: unknown key": (lambda d: with_external(d, evil="1"), [], "unknown external data key 'evil'"),
    "deeply nested subgraphs": (lambda d: write(d, deeply_nested()), [], "nested deeper than the protobuf parser allows"),
    "absurd declared dims": (
        lambda d: write(d, model([helper.make_node("Relu", ["x"], ["y"])],
                                 inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [10**6, 10**6, 1000])],
                                 outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])), [],
        "too large to make inputs for"),
    "invalid UTF-8 in a node name": (lambda d: write(d, with_bad_text("node name")), [],
                                     "model.graph.node[0].name is not valid UTF-8"),
    "invalid UTF-8 in a value name": (lambda d: write(d, with_bad_text("value name")), [],
                                      "model.graph.node[0].input[0] is not valid UTF-8"),
    "initializer of a data type ONNX does not define": (
        lambda d: write(d, with_small_weight(40)), [], "tensor 'b' has data type 40, which ONNX does not define"),
    "initializer without a data type": (lambda d: write(d, with_small_weight(0)), [], "tensor 'b' has no data type"),
    "memory-mapped initializer without a data type": (
        lambda d: write(d, mlp_with_big_weight(0)), [], "tensor 'w' has no data type"),
    "memory-mapped initializer of a data type ONNX does not define": (
        lambda d: write(d, mlp_with_big_weight(9999)), [], "tensor 'w' has data type 9999, which ONNX does not define"),
    "memory-mapped string initializer": (
        lambda d: write(d, mlp_with_big_weight(TensorProto.STRING)), [], "a string tensor cannot hold raw_data"),
    "inline initializer with too few bytes of raw_data": (
        lambda d: write(d, with_small_raw_data(b"\0" * 8)), [], "tensor 'b' has 8 bytes of data but its shape and type need 16"),
    "inline initializer with a negative dim": (
        lambda d: write(d, with_small_raw_data(b"\0" * 16, dims=(-2, -2))), [], "tensor 'b' has a negative dim: [-2, -2]"),
    "value of an element type ONNX does not define": (
        lambda d: write(d, undefined_elem_type()), [], "value 'x' declares element type 1234, which ONNX does not define"),
    "calibration data with a wrong name": (
        lambda d: write(d, relu()), ["-p", "int8", "--calib", "{calib_wrong_name}"], "'image' is not a model input"),
    "calibration data with a wrong shape": (
        lambda d: write(d, relu()), ["-p", "int8", "--calib", "{calib_wrong_shape}"], "has shape [3, 5]"),
    "calibration data with a wrong dtype": (
        lambda d: write(d, relu()), ["-p", "int8", "--calib", "{calib_wrong_dtype}"], "is float64, the model takes float32"),
    "malformed pipeline": (lambda d: write(d, relu()), ["-p", "fuse{"], "-p:1:5: expected '}' or a name, got end of input"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_cleanly(tmp_path, case):
    build, extra, message = CASES[case]
    folder = tmp_path / "in"
    folder.mkdir()
    path = build(str(folder))
    files = {name: calib(str(tmp_path), name, **arrays) for name, arrays in (
        ("calib_wrong_name", {"image": np.zeros((3, 4), np.float32)}),
        ("calib_wrong_shape", {"x": np.zeros((3, 5), np.float32)}),
        ("calib_wrong_dtype", {"x": np.zeros((3, 4), np.float64)}))}
    args = [files.get(a.strip("{}"), a) for a in extra] or ["-p", "fold"]
    out = tmp_path / "out.onnx"
    run = subprocess.run([sys.executable, "-m", "graphopt", path, *args, "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines and lines[0].startswith("graphopt: error: ") and message in lines[0], run.stderr
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr
    if case != "malformed pipeline":  # a DSL error shows the line and a caret under it
        assert len(lines) == 1, run.stderr
    assert not out.exists() and not any(p.name.startswith(".graphopt") for p in tmp_path.iterdir())


def gather_in_a_branch_with_absurd_indices() -> onnx.ModelProto:
    """Gather inside an If, its indices a graph input declaring 2**63-1 elements: onnx's data
    propagation allocated for that many and the process was killed for memory."""
    idx = numpy_helper.from_array(np.arange(300, dtype=np.int64), "idx")
    then_g = helper.make_graph([helper.make_node("Gather", ["idx", "i"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.INT64, [None])])
    else_g = helper.make_graph([helper.make_node("Neg", ["i"], ["t2"])], "else", [],
                               [helper.make_tensor_value_info("t2", TensorProto.INT64, [None])])
    g = helper.make_graph([helper.make_node("If", ["cond"], ["z"], then_branch=then_g, else_branch=else_g)], "cf",
                          [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                           helper.make_tensor_value_info("i", TensorProto.INT64, [2**63 - 1])],
                          [helper.make_tensor_value_info("z", TensorProto.INT64, [None])], [idx])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_absurd_declared_dim_is_refused_without_exhausting_memory(tmp_path):
    import resource

    path = write(str(tmp_path), gather_in_a_branch_with_absurd_indices())
    out = tmp_path / "out.onnx"

    def cap():  # a regression must fail here, not take the machine's memory
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    run = subprocess.run([sys.executable, "-m", "graphopt", path, "-p", "fuse,fold", "-o", str(out)],
                         capture_output=True, text=True, timeout=120, preexec_fn=cap)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1, run.stderr
    assert "declares shape [9223372036854775807]" in lines[0] and "too large to make inputs for" in lines[0]
    assert not out.exists()
