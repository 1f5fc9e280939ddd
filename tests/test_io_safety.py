"""Reading and writing safely: external data checks (docs/ARCHITECTURE.md, Reading and writing safely), atomic writes, refusals."""

import os

import numpy as np
import onnx
import pytest
from helpers import run_ort
from onnx import TensorProto, helper, numpy_helper

from graphopt import driver as api
from graphopt.errors import (
    InvalidModelError,
    ModelLoadError,
    UnsafeModelError,
    WriteError,
)
from graphopt.ir import Tensor
from graphopt.onnx_io import emit as backend
from graphopt.onnx_io import load as frontend
from graphopt.onnx_io.write import OutputTransaction


def mlp(n_in=16, n_out=8) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(n_in * n_out, dtype=np.float32).reshape(n_in, n_out) / 100, "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mlp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def save_external(model: onnx.ModelProto, folder, location="w.bin", **entries) -> str:
    """Save with the weight in `location`; `entries` overrides external_data keys afterwards."""
    path = os.path.join(folder, "m.onnx")
    onnx.save_model(model, path, save_as_external_data=True, location=location, size_threshold=0)
    if entries:
        m = onnx.load(path, load_external_data=False)
        t = m.graph.initializer[0]
        kv = {e.key: e.value for e in t.external_data}
        kv.update(entries)
        del t.external_data[:]
        for k, v in kv.items():
            t.external_data.add(key=k, value=v)
        with open(path, "wb") as f:
            f.write(m.SerializeToString())
    return path


def test_external_data_is_memory_mapped_not_copied(tmp_path):
    path = save_external(mlp(), tmp_path)
    model = frontend.load(path)
    w = model.graph.value("w").const
    assert w.is_external
    arr = w.numpy()
    assert not arr.flags.owndata and not arr.flags.writeable  # a view into the mapped file
    np.testing.assert_array_equal(arr, numpy_helper.to_array(mlp().graph.initializer[0]))
    assert model.source_data_files == [os.path.realpath(tmp_path / "w.bin")]


@pytest.mark.parametrize("location,message", [
    ("/etc/passwd", "is an absolute path"),
    ("../w.bin", "contains '..'"),
    ("sub/../../w.bin", "contains '..'"),
    ("missing.bin", "file not found"),
])
def test_external_data_location_is_checked(tmp_path, location, message):
    path = save_external(mlp(), tmp_path)
    m = onnx.load(path, load_external_data=False)
    m.graph.initializer[0].external_data[0].value = location
    onnx.save_model(m, path)
    with pytest.raises(UnsafeModelError, match=message.replace("(", r"\(").replace(".", r"\.")):
        frontend.load(path)


def test_external_data_symlink_is_refused(tmp_path):
    path = save_external(mlp(), tmp_path)
    os.rename(tmp_path / "w.bin", tmp_path / "real.bin")
    os.symlink(tmp_path / "real.bin", tmp_path / "w.bin")
    with pytest.raises(UnsafeModelError, match="is a symlink"):
        frontend.load(path)


def test_external_data_symlink_escaping_the_folder_is_refused(tmp_path):
    inner = tmp_path / "model"
    inner.mkdir()
    path = save_external(mlp(), inner)
    os.rename(inner / "w.bin", tmp_path / "outside.bin")
    os.symlink(tmp_path / "outside.bin", inner / "w.bin")
    with pytest.raises(UnsafeModelError, match="outside the model's folder"):
        frontend.load(path)


def test_external_data_hard_link_is_refused(tmp_path):
    path = save_external(mlp(), tmp_path)
    os.link(tmp_path / "w.bin", tmp_path / "other.bin")
    with pytest.raises(UnsafeModelError, match="hard-linked"):
        frontend.load(path)


def test_external_data_past_the_end_is_refused(tmp_path):
    path = save_external(mlp(), tmp_path, offset="64")
    with pytest.raises(UnsafeModelError, match="past the end"):
        frontend.load(path)


def test_external_data_wrong_length_and_unknown_key_are_refused(tmp_path):
    path = save_external(mlp(), tmp_path, length="12")
    with pytest.raises(UnsafeModelError, match="does not match its shape"):
        frontend.load(path)
    path = save_external(mlp(), tmp_path, evil="1")
    with pytest.raises(UnsafeModelError, match="unknown external data key 'evil'"):
        frontend.load(path)


def test_external_data_round_trip_writes_a_fresh_file(tmp_path):
    path = save_external(mlp(32, 16), tmp_path)  # 2 KiB: above the inline threshold
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "o.onnx"
    api.optimize(path, "none", output=str(out))
    # small model: weights inline unless asked
    assert not os.path.exists(str(out) + ".data")
    m = onnx.load(out)
    assert m.graph.initializer[0].data_location == TensorProto.DEFAULT
    # on request: a fresh data file named after the output, never the input's location
    out2 = out_dir / "o2.onnx"
    api.optimize(path, "none", output=str(out2), external_data=True)
    m2 = onnx.load(out2, load_external_data=False)
    locs = {e.value for t in m2.graph.initializer for e in t.external_data if e.key == "location"}
    assert locs == {"o2.onnx.data"}
    feeds = {"x": np.ones((1, 32), np.float32)}
    np.testing.assert_array_equal(run_ort(str(out2), feeds)[0], run_ort(mlp(32, 16), feeds)[0])


def test_external_data_is_written_automatically_past_the_threshold(tmp_path, monkeypatch):
    monkeypatch.setattr(backend, "AUTO_EXTERNAL_BYTES", 100)
    src = tmp_path / "m.onnx"
    onnx.save(mlp(32, 16), src)
    out = tmp_path / "o.onnx"
    api.optimize(str(src), "none", output=str(out))
    assert os.path.exists(str(out) + ".data")
    monkeypatch.setattr(backend, "AUTO_EXTERNAL_BYTES", 10**9)
    out2 = tmp_path / "o2.onnx"
    api.optimize(str(src), "none", output=str(out2))
    assert not os.path.exists(str(out2) + ".data")


def test_refuses_to_write_onto_the_input_or_its_data(tmp_path):
    path = save_external(mlp(), tmp_path)
    before = {p: open(tmp_path / p, "rb").read() for p in ("m.onnx", "w.bin")}
    with pytest.raises(WriteError, match="is the input model"):
        api.optimize(path, "none", output=path, force=True)
    with pytest.raises(WriteError, match="is the input model or its external data"):
        api.optimize(path, "none", output=str(tmp_path / "w.bin"), force=True)
    assert {p: open(tmp_path / p, "rb").read() for p in before} == before
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "w.bin"]  # no temporary left behind


def test_refuses_existing_output_without_force_and_symlinked_output(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(mlp(), src)
    out = tmp_path / "o.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(WriteError, match="exists \\(use --force"):
        api.optimize(str(src), "none", output=str(out))
    assert out.read_bytes() == b"keep me"
    api.optimize(str(src), "none", output=str(out), force=True)
    assert onnx.load(out).graph.node[0].op_type == "MatMul"
    link = tmp_path / "link.onnx"
    os.symlink(src, link)
    with pytest.raises(WriteError, match="symlink"):
        api.optimize(str(src), "none", output=str(link), force=True)
    with pytest.raises(WriteError, match="is the input model"):
        api.optimize(str(link), "none", output=str(src), force=True)


def test_a_failed_check_writes_nothing(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(mlp(), src)
    model = frontend.load(str(src))
    x = model.graph.value("x")
    model.graph.add_node("NoSuchOp", [x], ["z"])
    model.graph.outputs.append(model.graph.value("z"))
    out = tmp_path / "o.onnx"
    with OutputTransaction(str(out)) as tx:
        with pytest.raises(InvalidModelError, match="fails the ONNX checker"):
            backend.emit(model, tx.staging_dir(), tx.basename)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    src = tmp_path / "m.onnx"
    onnx.save(mlp(), src)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(backend, "check_model", boom)
    with pytest.raises(KeyboardInterrupt):
        api.optimize(str(src), "none", output=str(tmp_path / "o.onnx"))
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


@pytest.mark.parametrize("content,message", [
    (b"", "file is empty"),
    (b"\x08\x07\x12\x03abc\x1a", "not an ONNX model"),
    (bytes(range(256)) * 4, "not an ONNX model"),
    (onnx.helper.make_tensor("t", TensorProto.FLOAT, [1], [1.0]).SerializeToString(), "not an ONNX model"),
])
def test_unreadable_inputs_get_one_clear_error(tmp_path, content, message):
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        frontend.load(str(p))


def test_truncated_model_is_refused(tmp_path):
    p = tmp_path / "t.onnx"
    p.write_bytes(mlp().SerializeToString()[:-7])
    with pytest.raises(ModelLoadError, match="not an ONNX model"):
        frontend.load(str(p))


def test_opset_bounds(tmp_path):
    """Every opset onnx defines loads (old exports are opset 1 to 6); a newer one is refused."""
    m = mlp()
    m.opset_import[0].version = 6
    assert frontend.load(m).opset == 6
    m.opset_import[0].version = onnx.defs.onnx_opset_version() + 1
    with pytest.raises(ModelLoadError, match=f"unsupported opset {onnx.defs.onnx_opset_version() + 1}"):
        frontend.load(m)
    del m.opset_import[:]
    with pytest.raises(ModelLoadError, match="no opset import"):
        frontend.load(m)
    m.opset_import.add(domain="", version=7)
    assert frontend.load(m).opset == 7


def test_duplicate_names_and_dangling_inputs_are_refused():
    m = mlp()
    m.graph.node.append(helper.make_node("Relu", ["x"], ["y"]))
    with pytest.raises(ModelLoadError, match="value name 'y' is defined twice"):
        frontend.load(m)
    m = mlp()
    m.graph.node[0].input[1] = "nowhere"
    with pytest.raises(ModelLoadError, match="reads 'nowhere', which no node"):
        frontend.load(m)


def test_tensor_numpy_views_are_read_only():
    t = Tensor.from_numpy(np.ones(3, np.float32))
    with pytest.raises(ValueError):
        t.numpy()[0] = 2
