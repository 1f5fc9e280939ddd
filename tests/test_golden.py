"""`-p none` round-trips every golden model losslessly and deterministically."""

import os

import numpy as np
import onnx
import pytest
from helpers import golden, golden_params, run_ort

from graphopt import driver as api
from graphopt.onnx_io import load as frontend
from graphopt.onnx_io.emit import check_model


@pytest.mark.parametrize("gm", golden_params())
def test_round_trip_is_lossless_and_deterministic(gm, golden_path, tmp_path):
    src = golden_path(gm)
    first = tmp_path / "first.onnx"
    result = api.optimize(src, "none", output=str(first))
    # validation ran on seeded random inputs and found the outputs bitwise equal
    assert result.validation.ok and result.validation.bitwise_equal
    assert result.nodes_after == result.nodes_before
    check_model(str(first))  # full checker + strict shape inference, from the file

    # the committed reference outputs are reproduced by the round-tripped model
    ref = os.path.join(golden.HERE, gm.path[:-5] + ".ref.npz")
    if os.path.exists(ref):
        data = np.load(ref)
        feeds = {k[3:]: data[k] for k in data.files if k.startswith("in_")}
        outs = run_ort(str(first), feeds)
        expected = [data[k] for k in data.files if k.startswith("out_")]
        for got, want in zip(outs, expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    # a second run on the output is byte-identical, and so is a run in a fresh call
    second = tmp_path / "second.onnx"
    api.optimize(str(first), "none", output=str(second), validate=False)
    assert first.read_bytes() == second.read_bytes()
    third = tmp_path / "third.onnx"
    api.optimize(src, "none", output=str(third), validate=False)
    assert first.read_bytes() == third.read_bytes()


@pytest.mark.parametrize("gm", [m for m in golden.CORPUS if golden.is_committed(m)], ids=lambda m: m.name)
def test_committed_models_have_reference_outputs(gm):
    path = golden.model_path(gm)
    assert os.path.exists(path), f"{gm.path} is missing: run python golden_models/build.py"
    assert os.path.exists(path[:-5] + ".ref.npz")


def test_round_trip_keeps_metadata_functions_and_value_info(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17, "local" : 1], producer_name: "exp", producer_version: "1.2",
     model_version: 7, doc_string: "the model">
    m (float[N, 4] x) => (float[N, 4] y) {
        h = local.Scale <alpha: float = 2.0> (x)
        y = Relu (h)
    }
    <domain: "local", opset_import: ["" : 17]>
    Scale <alpha> (a) => (b) {
        s = Constant <value_float: float = @alpha> ()
        b = Mul (a, s)
    }
    """
    proto = onnx.parser.parse_model(text)
    proto.metadata_props.add(key="author", value="team")
    proto.graph.doc_string = "graph doc"
    proto.graph.node[1].doc_string = "relu doc"
    proto.graph.value_info.append(onnx.helper.make_tensor_value_info("h", onnx.TensorProto.FLOAT, ["N", 4]))
    src = tmp_path / "m.onnx"
    onnx.save(proto, src)
    out = tmp_path / "out.onnx"
    api.optimize(str(src), "none", output=str(out))
    got = onnx.load(out)
    assert (got.producer_name, got.producer_version, got.model_version, got.doc_string) == ("exp", "1.2", 7, "the model")
    assert {p.key: p.value for p in got.metadata_props} == {"author": "team"}
    assert [(o.domain, o.version) for o in got.opset_import] == [("", 17), ("local", 1)]
    assert got.graph.doc_string == "graph doc" and got.graph.node[1].doc_string == "relu doc"
    assert [vi.name for vi in got.graph.value_info] == ["h"]
    assert got.graph.value_info[0].type == proto.graph.value_info[0].type
    (f,) = got.functions
    assert (f.name, f.domain, list(f.attribute)) == ("Scale", "local", ["alpha"])
    assert f.node[0].attribute[0].ref_attr_name == "alpha"
    assert onnx.printer.to_text(f) == onnx.printer.to_text(proto.functions[0])


def test_ir_v3_initializers_are_constants_unless_kept(golden_path):
    """Initializers also listed as inputs are weights (TensorRT's parser and onnxsim agree) and
    leave the interface; --keep-initializer-inputs keeps them overridable."""
    sq = next(m for m in golden.CORPUS if m.name == "squeezenet")
    path = golden_path(sq)
    default = frontend.load(path)
    w = default.graph.value("conv1_w_0")
    assert w.const is not None and not w.is_graph_input
    assert [v.name for v in default.graph.inputs] == ["data_0"]
    kept = frontend.load(path, keep_initializer_inputs=True)
    w = kept.graph.value("conv1_w_0")
    assert w.const is not None and w.is_graph_input


def test_constant_nodes_are_kept(tmp_path):
    cf = next(m for m in golden.CORPUS if m.name == "control_flow")
    model = frontend.load(golden.model_path(cf))
    ops = [n.op_type for n in model.graph.nodes]
    assert ops.count("Constant") == 3


@pytest.mark.parametrize("opset", [7, 9, 11, 13, 17, onnx.defs.onnx_opset_version()])
def test_round_trip_across_opsets(opset, tmp_path):
    text = f"""
    <ir_version: {7 if opset <= 12 else 8}, opset_import: ["" : {opset}]>
    m (float[2, 3] x, float[3, 4] w) => (float[2, 4] y) {{
        h = MatMul (x, w)
        y = Relu (h)
    }}
    """
    src = tmp_path / "m.onnx"
    onnx.save(onnx.parser.parse_model(text), src)
    result = api.optimize(str(src), "none", output=str(tmp_path / "o.onnx"))
    assert result.validation.bitwise_equal
    assert onnx.load(tmp_path / "o.onnx").opset_import[0].version == opset


@pytest.mark.parametrize("gm", golden_params())
def test_fuse_fold_order_does_not_matter_and_leaves_no_fusable_batchnorm(gm, golden_path, tmp_path):
    src = golden_path(gm)
    a = api.optimize(src, "fuse,fold", output=str(tmp_path / "a.onnx"), initializers_as_constants=True)
    b = api.optimize(src, "fold,fuse", validate=False, initializers_as_constants=True)
    assert a.validation.ok
    assert a.nodes_after == b.nodes_after
    g = a.model.graph
    for n in g.nodes:
        if n.op_type == "BatchNormalization":
            prod = n.inputs[0].producer
            assert prod is None or prod.op_type not in ("Conv", "ConvTranspose", "Gemm"), f"fusable BN {n.name}"


@pytest.mark.parametrize("name", ["encoder_dynamo", "control_flow", "inception_v1"])
def test_pipeline_output_is_byte_identical_across_processes(name, golden_path, tmp_path):
    import shutil
    import subprocess

    src = golden_path(next(m for m in golden.CORPUS if m.name == name))
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"o{seed}.onnx"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([shutil.which("graphopt"), src, "-p", "fuse,fold,promote", "-o", str(out), "-q",
                               "--no-validate"], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def _ir_v3_conv_bn():
    """Conv + BatchNormalization whose weights are initializers also listed as graph inputs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "s": rng.uniform(0.5, 1.5, 4).astype(np.float32),
             "b": rng.standard_normal(4).astype(np.float32), "m": rng.standard_normal(4).astype(np.float32),
             "v": rng.uniform(0.5, 1.5, 4).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])] + [
        helper.make_tensor_value_info(k, TensorProto.FLOAT, list(a.shape)) for k, a in inits.items()]
    graph = helper.make_graph(nodes, "v3", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(a, k) for k, a in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)


def test_ir_v3_weights_fold_by_default_and_stay_with_keep_initializer_inputs(tmp_path):
    out = tmp_path / "o.onnx"
    r = api.optimize(_ir_v3_conv_bn(), "fuse,fold", output=str(out))
    assert r.validation.ok
    written = onnx.load(str(out))
    assert [n.op_type for n in written.graph.node] == ["Conv"]
    assert [i.name for i in written.graph.input] == ["x"]
    kept = api.optimize(_ir_v3_conv_bn(), "fuse,fold", keep_initializer_inputs=True)
    assert [n.op_type for n in kept.model.graph.nodes] == ["Conv", "BatchNormalization"]
    assert [v.name for v in kept.model.graph.inputs] == ["x", "w", "s", "b", "m", "v"]
