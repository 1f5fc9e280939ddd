"""Property tests: random valid graphs survive the IR round trip and every lossless pass."""

import numpy as np
import onnx
from graphopt.passes import PASSES
from helpers import run_ort
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from graphopt import driver as api
from graphopt.onnx_io import load as frontend
from graphopt.onnx_io.emit import to_proto
from graphopt.runtime.validate import ValidationReport

UNARY = ["Relu", "Neg", "Abs", "Sigmoid", "Identity", "Tanh"]
BINARY = ["Add", "Mul", "Sub", "Max"]


@st.composite
def random_models(draw):
    """A random DAG over one [2, 3] input: unary and binary elementwise ops, Identities,
    dead branches, outputs anywhere (sometimes the same value twice, sometimes an input)."""
    n = draw(st.integers(1, 12))
    names = ["x"]
    nodes = []
    for i in range(n):
        if draw(st.booleans()):
            op = draw(st.sampled_from(UNARY))
            ins = [draw(st.sampled_from(names))]
        else:
            op = draw(st.sampled_from(BINARY))
            ins = [draw(st.sampled_from(names)), draw(st.sampled_from(names))]
        out = f"v{i}"
        nodes.append(helper.make_node(op, ins, [out], name=f"n{i}"))
        names.append(out)
    outs = draw(st.lists(st.sampled_from(names[1:]), min_size=1, max_size=3, unique=True))
    g = helper.make_graph(nodes, "rand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, [2, 3]) for o in outs])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


FEEDS = {"x": np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_models())
def test_ir_round_trip_is_bitwise_exact(proto):
    model = frontend.load(proto)
    model.graph.verify()
    back = to_proto(model)
    onnx.checker.check_model(back, full_check=True)
    for a, b in zip(run_ort(proto, FEEDS), run_ort(back, FEEDS)):
        assert a.tobytes() == b.tobytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_models(), st.permutations([p.name for p in PASSES if p.lossless and not p.needs_calibration]))
def test_lossless_passes_keep_outputs_and_names(proto, order):
    result = api.optimize(proto, ",".join(order) + ",cleanup", strict=True, debug=True)
    assert isinstance(result.validation, ValidationReport) and result.validation.ok  # compared, not just scored
    assert [v.name for v in result.model.graph.outputs] == [o.name for o in proto.graph.output]
    # a second run changes nothing
    again = api.optimize(to_proto(result.model), "cleanup", validate=False)
    assert not any(r.modified for r in again.records)
