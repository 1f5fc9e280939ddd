"""Models over 2 GiB (marked large: `pytest -m large`)."""

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from graphopt import driver as api

pytestmark = pytest.mark.large

N = 560_000_000  # float32 elements: 2.24 GB of weights


def make_big_model(folder) -> str:
    """One 2.24 GB embedding table in a sparse external file (zeros but for a few rows)."""
    data = os.path.join(folder, "big.onnx.data")
    with open(data, "wb") as f:
        f.truncate(N * 4)
        f.seek(0)
        f.write(np.arange(1024, dtype=np.float32).tobytes())
    table = TensorProto(name="table", data_type=TensorProto.FLOAT, dims=[N // 8, 8])
    table.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "big.onnx.data"), ("offset", "0"), ("length", str(N * 4))):
        table.external_data.add(key=k, value=v)
    g = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["rows"]),
                           helper.make_node("Relu", ["rows"], ["y"])], "big",
                          [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])], [table])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = os.path.join(folder, "big.onnx")
    onnx.save_model(m, path)
    return path


def test_model_over_2gib_round_trips_with_external_data(tmp_path):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    src = make_big_model(str(src_dir))
    out = tmp_path / "out" / "big_out.onnx"
    out.parent.mkdir()
    result = api.optimize(src, "none", output=str(out))
    assert result.validation.ok and result.validation.bitwise_equal
    data = str(out) + ".data"  # written automatically: the weights do not fit in one protobuf
    assert os.path.getsize(data) == N * 4
    assert os.path.getsize(out) < 10_000
    m = onnx.load(str(out), load_external_data=False)
    (t,) = m.graph.initializer
    assert {e.key: e.value for e in t.external_data}["location"] == "big_out.onnx.data"
