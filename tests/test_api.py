"""Issue 17, point 4: the Python API is like its anchors' (onnxsim.simplify, onnxslim.slim,
onnxruntime's quantize_static): a real signature, a result that gives a ModelProto or saves
itself, calibration data from a CalibrationDataReader or any iterable, streamed, and the
caller's objects never modified."""

import inspect
import os
import weakref

import numpy as np
import onnx
import pytest
from helpers import golden

import graphopt
from graphopt.quant.calibration import CalibrationSettings

DIGITS = os.path.join(golden.HERE, "trained", "digits_cnn")


def digits_feeds(n=None):
    with np.load(DIGITS + ".calib.npz") as z:
        name = [k for k in z.files if k != "labels"][0]
        x = z[name]
    return name, x[:n] if n else x


def test_optimize_has_its_real_signature_and_documented_parameters():
    sig = inspect.signature(graphopt.optimize)
    params = list(sig.parameters)
    assert params[:2] == ["model", "passes"]
    assert {"output", "input_shapes", "validate", "strict", "calibration", "validation_data", "thresholds"} <= set(params)
    doc = graphopt.optimize.__doc__
    for p in params:
        assert f"`{p}`" in doc, p
    from graphopt import optimize  # noqa: F401  (import works too)
    assert "optimize" in dir(graphopt) and graphopt.CalibrationSettings is CalibrationSettings


def test_result_to_proto_and_save(tmp_path):
    r = graphopt.optimize(DIGITS + ".onnx", "fuse,fold")
    proto = r.to_proto()
    assert isinstance(proto, onnx.ModelProto)
    onnx.checker.check_model(proto, full_check=True)
    assert len(proto.graph.node) == r.nodes_after < r.nodes_before
    path = r.save(str(tmp_path / "out.onnx"))
    assert path == str(tmp_path / "out.onnx")
    assert [n.op_type for n in onnx.load(path).graph.node] == [n.op_type for n in proto.graph.node]
    with pytest.raises(graphopt.GraphoptError, match="exists"):
        r.save(path)
    assert r.save(path, force=True) == path


class Reader:
    """onnxruntime.quantization.CalibrationDataReader's protocol: get_next() until None."""

    def __init__(self, name, x):
        self.items = iter([{name: x[i:i + 1]} for i in range(len(x))])
        self.calls = 0

    def get_next(self):
        self.calls += 1
        return next(self.items, None)


def test_calibration_data_reader(tmp_path):
    name, x = digits_feeds(40)
    reader = Reader(name, x)
    r = graphopt.optimize(DIGITS + ".onnx", "int8", calibration=reader)
    assert reader.calls == 41  # read once, to the end
    acc = r.pass_reports["quantize-int8"]["accuracy"]
    assert acc and r.pass_reports["quantize-int8"]["calibration"]["held_out"] == 8


def test_a_generator_is_streamed_not_listed(tmp_path):
    """The generator's arrays are dropped as they are spooled (in chunks): never all alive at once."""
    from graphopt.driver import SPOOL_CHUNK

    name, x = digits_feeds()
    count = 4 * SPOOL_CHUNK + 5
    alive, peak = set(), [0]

    class Tracked(np.ndarray):
        pass

    def forget(i):
        alive.discard(i)

    def feeds():
        for i in range(count):
            a = x[i % len(x)][None].copy().view(Tracked)
            alive.add(i)
            weakref.finalize(a, forget, i)
            peak[0] = max(peak[0], len(alive))
            yield {name: a}

    settings = CalibrationSettings(data=feeds(), method="minmax", holdout=0.25)
    before = dict(vars(settings))
    r = graphopt.optimize(DIGITS + ".onnx", "int8", calibration=settings)
    assert r.pass_reports["quantize-int8"]["calibration"]["method"] == "minmax"
    assert peak[0] <= SPOOL_CHUNK + 2 < count
    assert vars(settings) == before  # the caller's settings are not modified (data is still their generator)


def test_the_spool_folder_is_removed(monkeypatch, tmp_path):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    name, x = digits_feeds(12)
    graphopt.optimize(DIGITS + ".onnx", "fuse", validation_data=({name: x[i:i + 1]} for i in range(12)))
    assert not [p for p in os.listdir(tmp_path) if p.startswith("graphopt-feeds-")]


def test_feeds_that_are_not_dicts_get_one_clear_error():
    with pytest.raises(graphopt.GraphoptError, match="calibration feed 1 is a list, not a dict"):
        graphopt.optimize(DIGITS + ".onnx", "int8", calibration=iter([{"x": 1}, [1, 2]]))
    with pytest.raises(graphopt.GraphoptError, match="the calibration data is empty"):
        graphopt.optimize(DIGITS + ".onnx", "int8", calibration=iter([]))
