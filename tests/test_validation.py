"""Validation on inputs that make sense: the user's data, inputs synthesized from how the graph
uses each input, and a loud "not validated" when the input model runs on none of them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import model_from_text
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.runtime.inputs import Synthesizer

# y = table[int(|x| * 100)]: generated float inputs index far past the 2-row table.
UNRUNNABLE = """
<ir_version: 8, opset_import: ["" : 17]>
m (float[3] x) => (float[3, 4] y) {
    table = Constant <value = float[2, 4] {1, 2, 3, 4, 5, 6, 7, 8}> ()
    hundred = Constant <value = float {100}> ()
    a = Abs (x)
    s = Mul (a, hundred)
    i = Cast <to = 7> (s)
    y = Gather (table, i)
    unused = Identity (x)
}
"""


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "graphopt", *map(str, args)], capture_output=True, text=True)


def test_a_model_that_runs_on_no_generated_input_is_written_and_says_so(tmp_path):
    src, out, report = tmp_path / "m.onnx", tmp_path / "o.onnx", tmp_path / "r.json"
    onnx.save(model_from_text(UNRUNNABLE), str(src))
    run = _cli(src, "-p", "fold", "-o", out, "--report", report)
    assert run.returncode == 0, run.stderr
    assert out.exists()
    assert "NOT VALIDATED: the input model does not run on generated inputs (onnxruntime failed to run" in run.stderr
    assert "pass --validate-data" in run.stderr and "validation: NOT VALIDATED" in run.stderr
    assert json.loads(report.read_text())["validation_status"].startswith("not validated: the input model does not run")
    quiet = _cli(src, "-p", "fold", "-o", tmp_path / "q.onnx", "-q")
    assert quiet.returncode == 0 and "not validated" in quiet.stderr  # -q never hides it


def test_strict_makes_not_validated_an_error(tmp_path):
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model_from_text(UNRUNNABLE), str(src))
    run = _cli(src, "-p", "fold", "-o", out, "--strict")
    assert run.returncode == 3 and not out.exists()
    assert run.stderr.strip().splitlines()[-1].startswith("graphopt: error: not validated: the input model does not run")


def test_validate_data_validates_what_generated_inputs_cannot(tmp_path):
    src, out, data = tmp_path / "m.onnx", tmp_path / "o.onnx", tmp_path / "v.npz"
    onnx.save(model_from_text(UNRUNNABLE), str(src))
    np.savez(data, x=np.array([[0.001, 0.0, -0.005], [0.0, 0.002, 0.0]], np.float32))
    run = _cli(src, "-p", "fold", "-o", out, "--validate-data", data)
    assert run.returncode == 0 and "NOT VALIDATED" not in run.stderr
    assert "validation: outputs bitwise equal" in run.stderr
    r = graphopt.optimize(model_from_text(UNRUNNABLE), "fold", validation_data=[{"x": np.zeros(3, np.float32)}])
    assert r.validation_status == "validated" and r.validation.ok


def test_calibration_data_validates_a_lossless_pipeline_when_no_validation_data_is_given():
    feeds = [{"x": np.full(3, 0.001 * i, np.float32)} for i in range(3)]
    r = graphopt.optimize(model_from_text(UNRUNNABLE), "fold", calibration=feeds)
    assert r.validation_status == "validated" and r.validation.draws == 3


def _embedding_model(rows: int = 2):
    """token_type_ids index a `rows`-row table; a mask multiplies; a divisor divides."""
    table = numpy_helper.from_array(np.arange(rows * 4, dtype=np.float32).reshape(rows, 4), "table")
    nodes = [helper.make_node("Gather", ["table", "token_type_ids"], ["e"]),
             helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mf", "axis"], ["m3"]),
             helper.make_node("Mul", ["e", "m3"], ["y"]),
             helper.make_node("Div", ["n", "d"], ["q"]),
             helper.make_node("Unsqueeze", ["x", "axes"], ["u"])]
    inputs = [helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("n", TensorProto.INT32, [4]),
              helper.make_tensor_value_info("d", TensorProto.INT32, [4]),
              helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
              helper.make_tensor_value_info("axes", TensorProto.INT64, [2])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None) for n in ("y", "q", "u")]
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [table, numpy_helper.from_array(np.array([-1], np.int64), "axis")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_generated_inputs_fit_how_the_graph_uses_them():
    model = graphopt.load(_embedding_model(rows=2))
    feed = Synthesizer(model).feeds(4, seed=0)
    for f in feed:
        assert set(np.unique(f["token_type_ids"])) <= {0, 1}  # inside the 2-row table
        assert set(np.unique(f["attention_mask"])) <= {0, 1}
        assert np.all(f["d"] != 0)  # a divisor
        assert sorted(f["axes"]) == sorted(set(f["axes"])) and np.all((0 <= f["axes"]) & (f["axes"] < 4))
    r = graphopt.optimize(_embedding_model(rows=2), "fuse,fold")
    assert r.validation_status == "validated" and r.validation.ok


def test_symbolic_dims_grow_until_a_reflect_pad_fits():
    """A reflect Pad of 40 needs the padded dim above 40: 32 fails, the ladder's next size runs."""
    pads = numpy_helper.from_array(np.array([0, 40, 0, 40], np.int64), "pads")
    node = helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [pads])
    r = graphopt.optimize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "fold")
    assert r.validation_status == "validated" and r.validation.ok


def test_string_and_sequence_inputs_are_validated():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    m (string[2] a, string[2] b, seq(float[3]) s) => (string[2] y, float[3] z) {
        y = Identity (a)
        i = Constant <value = int64 {0}> ()
        z = SequenceAt (s, i)
    }
    """
    r = graphopt.optimize(model_from_text(text), "fuse,fold")
    assert r.validation_status == "validated" and r.validation.ok


def test_a_checker_finding_the_input_already_has_is_not_held_against_the_output():
    """onnx's own MeanVarianceNormalization function body fails its full check (test_mvn): the
    run goes on, says so, and the output adds no new finding."""
    node = helper.make_node("MeanVarianceNormalization", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises((onnx.checker.ValidationError, onnx.shape_inference.InferenceError)):
        onnx.checker.check_model(model, full_check=True)
    r = graphopt.optimize(model, "fuse,fold")
    assert r.validation_status == "validated" and r.validation.ok
    assert r.notes and r.notes[0].startswith("the input model already fails the ONNX checker the same way")
    # without validation the passes run on the loaded model itself: the input is loaded again to
    # compare findings
    r = graphopt.optimize(model, "fuse,fold", validate=False)
    assert r.notes and r.notes[0].startswith("the input model already fails the ONNX checker the same way")


def test_pre_opset_7_broadcast_attributes_stop_rules_and_say_data_cannot_help():
    """Add(MatMul(a, b), c, broadcast=1, axis=0) adds c along axis 0 (opset 6): no Gemm may be
    made of it, and onnxruntime, which has no Add(6) kernel, cannot check anything."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["a", "b"], ["p"]), helper.make_node("Add", ["p", "c"], ["y"], broadcast=1, axis=0)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
                          [numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "b"),
                           numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "c")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 6)], ir_version=3)
    r = graphopt.optimize(m, "fuse,fold", explain={"matmul-add-to-gemm"})
    assert [n.op_type for n in r.model.graph.nodes] == ["MatMul", "Add"]
    assert any("pre-opset-7 broadcast" in nm.reason for nm in r.near_misses)
    assert r.validation_status.startswith("not validated: onnxruntime cannot load the input model")
    assert "--validate-data" not in r.validation_status


class IdentityToRelu(graphopt.Pass):
    """Valid ONNX that onnxruntime's CPU cannot run (no int16 Relu kernel)."""

    name = "identity-to-relu"
    summary = "test only"

    def run(self, graph, ctx):
        n = 0
        for node in graph.nodes:
            if node.op_type == "Identity":
                graph.add_node("Relu", node.inputs, [node.outputs[0].name + "_r"])
                relu = graph.nodes[-1]
                graph.replace_all_uses(node.outputs[0], relu.outputs[0])
                graph.remove_node(node)
                n += 1
        return graphopt.PassResult(n > 0, {})


def test_a_pass_whose_output_onnxruntime_cannot_run_is_found_and_rolled_back():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    m (int16[4] x) => (int16[4] y) {
        a = Identity (x)
        y = Neg (a)
    }
    """
    r = graphopt.optimize(model_from_text(text), [IdentityToRelu(), "dce"])
    assert r.rolled_back == ["identity-to-relu"] and r.validation_status == "validated" and r.validation.ok


def test_save_writes_a_result_whose_input_already_failed_the_checker(tmp_path):
    node = helper.make_node("MeanVarianceNormalization", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])])
    r = graphopt.optimize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), "fold")
    assert r.save(str(tmp_path / "o.onnx")) == str(tmp_path / "o.onnx") and (tmp_path / "o.onnx").exists()


def test_an_input_indexing_two_tables_stays_inside_the_smaller():
    for order in (0, 1):
        big = numpy_helper.from_array(np.ones((1000, 2), np.float32), "big")
        small = numpy_helper.from_array(np.ones((2, 2), np.float32), "small")
        nodes = [helper.make_node("Gather", ["big", "ids"], ["a"]), helper.make_node("Gather", ["small", "ids"], ["b"]),
                 helper.make_node("Add", ["a", "b"], ["y"])]
        nodes[:2] = nodes[:2][::-1] if order else nodes[:2]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [big, small])
        r = graphopt.optimize(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), "fold")
        assert r.validation_status == "validated", order


def test_onehot_indices_run_over_the_depth_and_gathernd_tuples_over_their_axes():
    nodes = [helper.make_node("OneHot", ["i", "depth", "values"], ["h"]),
             helper.make_node("GatherND", ["data", "t"], ["y"])]
    inits = [numpy_helper.from_array(np.array(10, np.int64), "depth"),
             numpy_helper.from_array(np.array([0, 1], np.float32), "values"),
             numpy_helper.from_array(np.ones((32, 4), np.float32), "data")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("i", TensorProto.INT64, [64]),
                                       helper.make_tensor_value_info("t", TensorProto.INT64, [8, 2])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("h", "y")], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    feed = Synthesizer(graphopt.load(m)).feeds(1, seed=0)[0]
    assert len(set(feed["i"].tolist())) > 3 and feed["i"].max() < 10
    assert feed["t"][:, 0].max() < 32 and feed["t"][:, 1].max() < 4 and feed["t"][:, 0].max() >= 4
    assert graphopt.optimize(m, "fold").validation_status == "validated"


BIG_OUTPUT = """
<ir_version: 8, opset_import: ["" : 17]>
m (float[N, 64] x) => (float[N, 64, 64, 64] y) {
    shape = Constant <value = int64[4] {1, 64, 64, 64}> ()
    one = Constant <value = float {1}> ()
    axes = Constant <value = int64[2] {2, 3}> ()
    t = Add (x, one)
    u = Unsqueeze (t, axes)
    y = Expand (u, shape)
}
"""


def test_draws_adapt_to_what_a_run_costs_unless_set():
    big = model_from_text(BIG_OUTPUT)
    # 32 x 64 x 64 x 64 float32 outputs are 32 MB a draw: one draw is enough evidence, three cost 3x
    r = graphopt.optimize(big, "fuse,fold", input_shapes={"x": [32, 64]})
    assert r.validation_status == "validated" and r.validation.draws == 1
    # a number the user sets is honoured exactly
    r = graphopt.optimize(big, "fuse,fold", input_shapes={"x": [32, 64]}, draws=2)
    assert r.validation.draws == 2
    # the twin: small outputs get all three
    r = graphopt.optimize(big, "fuse,fold", input_shapes={"x": [1, 64]})
    assert r.validation.draws == 3


def test_generated_draws_are_made_again_when_read_not_kept():
    from graphopt.runtime.validate import SynthesizedFeeds

    m = graphopt.load(model_from_text(BIG_OUTPUT))
    synth = Synthesizer(m, {"x": [2, 64]})
    draws = SynthesizedFeeds(synth, 3, seed=5)
    first, again = list(draws), list(draws)
    assert [f["x"].tobytes() for f in first] == [f["x"].tobytes() for f in again]  # the same values each read
    assert first[0]["x"].dtype == np.float32 and not np.array_equal(first[0]["x"], first[1]["x"])
    assert [f["x"].tobytes() for f in draws[:2]] == [f["x"].tobytes() for f in first[:2]]
    with pytest.raises(ValueError):
        draws[1:]


@pytest.mark.parametrize("spilled", [False, True], ids=["in-memory", "spilled"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_large_outputs_are_compared_chunk_by_chunk_with_the_whole_array_numbers(monkeypatch, tmp_path, dtype, spilled):
    # a 60 MB output must not cost two float64 copies: the comparer walks chunks, and its verdict
    # and errors are those of the whole array (a difference in a late chunk, a scale set early);
    # a reference waiting in a scratch file is read back chunk by chunk with the same verdicts
    from graphopt.runtime import validate
    from graphopt.runtime.validate import SpilledOutput, Tolerance, compare

    monkeypatch.setattr(validate, "COMPARE_CHUNK", 7)

    def kept(a):
        return SpilledOutput(a, str(tmp_path / f"{a.dtype}.bin")) if spilled else a

    rng = np.random.default_rng(3)
    ref = (rng.standard_normal((5, 9)) * 10).astype(dtype)
    ref[0, 0], ref[4, 5] = 100, np.nan
    assert compare([{"y": kept(ref)}], [{"y": ref.copy()}]).bitwise_equal
    new = ref.copy()
    new[4, 8] += dtype(0.5)  # the last chunk; the scale (100) is in the first
    rep = compare([{"y": kept(ref)}], [{"y": new}], Tolerance(rtol=1e-2, atol=0))
    got = rep.outputs[0]
    want_abs = float(abs(np.float64(new[4, 8]) - np.float64(ref[4, 8])))
    assert (got.ok, got.bitwise_equal) == (True, False)
    assert got.max_abs == pytest.approx(want_abs) and got.max_rel == pytest.approx(want_abs / 100)
    assert not compare([{"y": kept(ref)}], [{"y": new}], Tolerance(rtol=1e-4, atol=0)).ok
    moved = ref.copy()
    moved[4, 5], moved[4, 6] = moved[4, 6], np.nan
    assert compare([{"y": kept(ref)}], [{"y": moved}]).outputs[0].problem == "NaN in different places"
    ints = np.arange(45).reshape(5, 9)
    other = ints.copy()
    other[3, 3] = other[4, 4] = -1
    assert compare([{"y": kept(ints)}], [{"y": other}]).outputs[0].problem == "2 of 45 values differ"
    assert compare([{"y": kept(ints)}], [{"y": ints.T.copy()}]).outputs[0].problem == \
        "shape/type int64[9, 5] instead of int64[5, 9]"


def test_large_reference_outputs_wait_in_the_scratch_folder_not_in_memory(tmp_path, monkeypatch):
    # the candidate's run must not stack on the reference's outputs: those of SPILL_MIN_BYTES or
    # more are in files, read back while compared; small ones, and sequences, stay in memory
    from graphopt.onnx_io.emit import ort_view
    from graphopt.runtime import validate
    from graphopt.runtime.validate import SpilledOutput, Validator

    text = BIG_OUTPUT.replace("(float[N, 64, 64, 64] y)", "(float[N, 64, 64, 64] y, float[N, 64] t)")
    m = graphopt.load(model_from_text(text))
    v = Validator(ort_view(m), m, pinned={"x": [2, 64]}, draws=2, scratch=str(tmp_path))
    assert [sorted(type(x).__name__ for x in d.values()) for d in v.reference] == \
        [["SpilledOutput", "ndarray"]] * 2  # y is 2 MB a draw, t 512 bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference-0-0.bin", "reference-1-0.bin"]
    assert v.check(ort_view(m)).bitwise_equal
    # the twin: a candidate that differs in the spilled output's last value fails
    broken = model_from_text(text.replace("y = Expand (u, shape)", "e = Expand (u, shape)\n"
                                          "    y = Add (e, last)").replace(
        "one = Constant", "last = Constant <value = float[64] {" + ", ".join(["0"] * 63 + ["1"]) + "}> ()\n"
        "    one = Constant"))
    assert not v.check(ort_view(graphopt.load(broken))).ok
    # without a scratch folder, or for a lossy comparison (its metrics read whole arrays),
    # everything stays in memory
    v = Validator(ort_view(m), m, pinned={"x": [2, 64]}, draws=1)
    assert isinstance(v.reference[0]["y"], np.ndarray)
    v = Validator(ort_view(m), m, pinned={"x": [2, 64]}, draws=1, scratch=str(tmp_path),
                  lossy=validate.LossyThresholds())
    assert isinstance(v.reference[0]["y"], np.ndarray)
    # only plain tensors are spilled: not sequences, empty optionals or strings
    monkeypatch.setattr(validate, "SPILL_MIN_BYTES", 1)
    kept = validate.spill({"s": [np.zeros(4)], "o": None, "t": np.array(["ab"], object), "z": np.zeros(1)},
                          str(tmp_path), "x")
    assert [type(kept[k]).__name__ for k in "sotz"] == ["list", "NoneType", "ndarray", "SpilledOutput"]
    assert np.array_equal(kept["z"].chunk(0, 8), np.zeros(1))


def test_the_driver_spills_into_the_output_staging_folder(tmp_path, monkeypatch):
    import os

    from graphopt.runtime import validate

    seen = []
    real = validate.spill

    def spy(outputs, folder, stem):
        kept = real(outputs, folder, stem)
        seen.append((folder, sorted(type(v).__name__ for v in kept.values()), sorted(os.listdir(folder))))
        return kept

    monkeypatch.setattr(validate, "spill", spy)
    out = tmp_path / "big.onnx"
    r = graphopt.optimize(model_from_text(BIG_OUTPUT), "fuse,fold", input_shapes={"x": [4, 64]}, output=str(out))
    assert r.validation.ok and seen
    folder, kinds, files = seen[0]
    assert kinds == ["SpilledOutput"] and files == ["reference-0-0.bin"]  # y is 4 MB
    staging = os.path.dirname(folder)  # the transaction's folder beside the output, gone after the run
    assert os.path.dirname(staging) == str(tmp_path) and os.path.basename(staging).startswith(".graphopt-")
    assert os.listdir(tmp_path) == ["big.onnx"]


def test_a_validated_run_leaves_no_scratch_files_beside_the_output(tmp_path):
    src = tmp_path / "big.onnx"
    onnx.save(model_from_text(BIG_OUTPUT), src)
    out = tmp_path / "out" / "big.onnx"
    out.parent.mkdir()
    r = _cli(src, "-p", "fuse,fold", "--input-shape", "x:4,64", "-o", out)
    assert r.returncode == 0 and "validation: outputs bitwise equal" in r.stderr, r.stderr
    assert [p.name for p in out.parent.iterdir()] == ["big.onnx"]


# A graph network's shape: node features [nodes, 4] and an edge list [2, edges] whose halves,
# split apart, index the nodes; TopK keeps the 2 largest along the nodes. Its `nodes` sits where a
# batch usually does, so the first tries make it 1: TopK cannot take 2 of 1.
GRAPH_NETWORK = """
<ir_version: 8, opset_import: ["" : 17]>
m (float[nodes, 4] x, int64[2, edges] edge_index) => (float[edges, 4] msg, float[2, 4] top) {
    k = Constant <value = int64[1] {2}> ()
    src, dst = Split <axis = 0> (edge_index)
    s = Squeeze (src)
    msg = Gather <axis = 0> (x, s)
    top, unused = TopK <axis = 0> (x, k)
}
"""


def test_node_counts_where_a_batch_usually_is_grow_last():
    model = graphopt.load(model_from_text(GRAPH_NETWORK))
    assert Synthesizer(model).shapes["x"] == (1, 4)  # a batch of 1 first: cheap for every other model
    r = graphopt.optimize(model_from_text(GRAPH_NETWORK), "fuse,fold")
    assert r.validation_status == "validated" and r.validation.ok


def test_indices_are_followed_through_split():
    # edge_index's halves index a 3-row table once split apart: every value inside it
    text = GRAPH_NETWORK.replace("float[nodes, 4] x", "float[3, 4] x")
    model = graphopt.load(model_from_text(text))
    for feed in Synthesizer(model).feeds(4, seed=0):
        assert set(np.unique(feed["edge_index"])) <= {0, 1, 2}


def _mvn_then_relu():
    nodes = [helper.make_node("MeanVarianceNormalization", ["x"], ["m"]), helper.make_node("Relu", ["m"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_finding_the_output_adds_behind_one_the_input_has_is_caught():
    # strict shape inference lists every failing node, the first being the input's own (MVN's
    # function body): a pass adding a second failing node must not pass as "the same finding"
    from graphopt.pipeline.base import Pass, PassResult

    class AddMismatch(Pass):
        name = "add-mismatch"

        def run(self, graph, ctx):
            if any(n.op_type == "Add" for n in graph.nodes):
                return PassResult(False)
            c = graph.add_constant(np.ones(5, np.float32), "five")
            graph.add_node("Add", [graph.inputs[0], c])  # [1, 2, 3, 3] + [5]: no broadcast
            return PassResult(True)

    # without validation (onnxruntime would refuse the Add too): the checker alone must see it
    r = graphopt.optimize(_mvn_then_relu(), ["fold", AddMismatch()], validate=False)
    assert r.rolled_back == ["add-mismatch"]
    assert not any(n.op_type == "Add" for n in r.model.graph.nodes)
    with pytest.raises(graphopt.errors.InvalidModelError,
                       match=r"\(op_type:Add\).*beside the finding the input model has\); first broken by pass add-mismatch"):
        graphopt.optimize(_mvn_then_relu(), ["fold", AddMismatch()], validate=False, strict=True)
    r = graphopt.optimize(_mvn_then_relu(), "fold")  # the twin: nothing added, the input's finding only
    assert not r.rolled_back and r.notes[0].startswith("the input model already fails the ONNX checker")


def test_inputs_that_cannot_be_made_are_an_error_not_a_model_that_does_not_run():
    """A sparse-tensor input: synthesis cannot make one. That is said as it is, not as "the input
    model does not run on generated inputs" after trying every size."""
    sparse = onnx.ValueInfoProto(name="s")
    sparse.type.sparse_tensor_type.elem_type = TensorProto.FLOAT
    for d in (3, 4):
        sparse.type.sparse_tensor_type.shape.dim.add().dim_value = d
    node = helper.make_node("SparseToDenseMatMul", ["s", "b"], ["y"], domain="com.microsoft")
    model = helper.make_model(
        helper.make_graph([node], "g", [sparse, helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)], ir_version=8)
    with pytest.raises(graphopt.GraphoptError, match="cannot make input values of type sparse_tensor_type"):
        graphopt.optimize(model, "cleanup")


# silero-vad's shape: audio [?, ?] and an RNN state [2, ?, 4], both dims unnamed; the state's is
# the audio's batch (they are concatenated), and a reflect Pad needs more than 40 samples.
UNNAMED_STATE_BATCH = """
<ir_version: 8, opset_import: ["" : 17]>
m (float[?, ?] x, float[2, ?, 4] state) => (float[3, ?, 4] y) {
    pads = Constant <value = int64[4] {0, 40, 0, 40}> ()
    xp = Pad <mode = "reflect"> (x, pads)
    axes = Constant <value = int64[1] {1}> ()
    s = ReduceSum <keepdims = 1> (xp, axes)
    zero = Constant <value = int64[1] {0}> ()
    u = Unsqueeze (s, zero)
    shape = Constant <value = int64[3] {1, 1, 4}> ()
    e = Expand (u, shape)
    y = Concat <axis = 0> (e, state)
}
"""


def test_an_unnamed_dim_past_axis_0_is_tried_as_the_batch_last():
    from graphopt.runtime.inputs import unnamed_batch_candidates

    proto = model_from_text(UNNAMED_STATE_BATCH)
    assert unnamed_batch_candidates(graphopt.load(proto)) == ["state"]  # not x: no dim of it is declared
    r = graphopt.optimize(proto, "fuse,fold")
    assert r.validation_status == "validated" and r.validation.ok
    # the twins: a name ties the state's batch to the audio's (no extra tries needed), and a
    # single input has nothing to match
    named = UNNAMED_STATE_BATCH.replace("float[?, ?] x", "float[N, ?] x").replace("float[2, ?, 4] state",
                                                                                  "float[2, N, 4] state")
    assert unnamed_batch_candidates(graphopt.load(model_from_text(named))) == []
    assert graphopt.optimize(model_from_text(named), "fuse,fold").validation_status == "validated"
    alone = model_from_text("""
<ir_version: 8, opset_import: ["" : 17]>
m (float[2, ?, 4] state) => (float[2, ?, 4] y) {
    y = Relu (state)
}
""")
    assert unnamed_batch_candidates(graphopt.load(alone)) == []


def test_an_output_computed_in_float16_is_compared_at_float16_precision():
    """A float16 network (ISNet as imgly ships it) carries a one-unit rounding step of an exact
    rewrite on to its float32 outputs: folding a Resize's computed sizes moved them by 3.5e-4 of
    their scale, and the default 1e-5 rolled back fold-constants and dce. The twins: an output
    computed in float32 keeps 1e-5 (float16 weights or inputs widened before any arithmetic do
    not count), and an rtol the user sets is what is used."""
    from graphopt.runtime.validate import Tolerance, _merge, compare, half_outputs

    m = graphopt.load(model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[4] x, float16[4] x16in, bool c) => (float[4] h, float[4] f, float[4] b, float[4] w, float[4] i, float[4] k) {
        x16 = Cast <to = 10> (x)
        r16 = Relu (x16)
        h = Cast <to = 1> (r16)
        f = Abs (x)
        xb = Cast <to = 16> (x)
        hb = Cast <to = 10> (x)
        s = Add (xb, xb)
        sb = Cast <to = 10> (s)
        t = Add (sb, hb)
        b = Cast <to = 1> (t)
        w16 = Constant <value = float16[4] {1, 2, 3, 4}> ()
        w32 = Cast <to = 1> (w16)
        w = Mul (x, w32)
        i32 = Cast <to = 1> (x16in)
        i = Sin (i32)
        k = If (c) <then_branch = g1 () => (float[4] k1) {
                k16 = Cast <to = 10> (x)
                k2 = Neg (k16)
                k1 = Cast <to = 1> (k2)
            }, else_branch = g2 () => (float[4] k3) {
                k3 = Identity (h)
            }>
    }
    """))
    assert half_outputs(m) == {"h": TensorProto.FLOAT16, "b": TensorProto.BFLOAT16, "k": TensorProto.FLOAT16}

    ref = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    step = ref + np.float32(4 * 2.0 ** -11)  # a float16 rounding step at the output's scale 4
    report = compare([{"h": ref, "f": ref}], [{"h": step, "f": ref}], Tolerance(), {"h": TensorProto.FLOAT16})
    assert report.ok and "at float16 precision" in report.summary()
    assert "at float16 precision" in _merge(report, report).summary()  # three draws say it too
    assert not compare([{"f": ref}], [{"f": step}], Tolerance(), {"h": TensorProto.FLOAT16}).ok
    assert not compare([{"h": ref}], [{"h": step}], Tolerance(rtol=1e-5), {"h": TensorProto.FLOAT16}).ok
    bf_step = ref + np.float32(4 * 2.0 ** -8)
    assert compare([{"b": ref}], [{"b": bf_step}], Tolerance(), {"b": TensorProto.BFLOAT16}).ok
    assert not compare([{"h": ref}], [{"h": bf_step}], Tolerance(), {"h": TensorProto.FLOAT16}).ok


@pytest.mark.parametrize("declared, noted", [([1, 6], True), ([2, 3], False), (["N", 3], False), ([6], True)])
def test_an_output_the_input_model_contradicts_its_declaration_of_is_said(declared, noted):
    """ddddocr declares its output [1, seqlen] and gives [20, 1, 8210] (onnxruntime warns of it
    on every run, and onnx cannot infer past its com.microsoft LSTM). The declaration is the
    input's interface: kept, and said. The twins: a true declaration, a symbolic one."""
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, declared)]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    r = graphopt.optimize(m, "fuse,fold")
    assert r.validation_status == "validated"
    want = f"output 'y' is declared [{', '.join(map(str, declared))}] but the input model gives [2, 3]"
    assert [n for n in r.notes if n.startswith("output 'y'")] == ([want + " on the validation inputs; the declaration is "
                                                                   "kept as the input has it"] if noted else [])
    assert r.known_checker_problem is None
