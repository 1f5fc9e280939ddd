"""Pass manager: records, fixed points, rollback, bisection of validation failures, registry."""

import dataclasses
import os

import numpy as np
import onnx
import pytest
from graphopt.passes import ALIASES, PASSES
from helpers import model_from_text

from graphopt import driver as api
from graphopt.errors import PipelineError, ValidationError
from graphopt.ir import Tensor
from graphopt.onnx_io import load as frontend
from graphopt.pipeline.base import Pass, PassContext, PassResult
from graphopt.pipeline.manager import FixedPoint, PassFailed, PassManager
from graphopt.pipeline.registry import Alias, Registry

MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
m (float[2, 3] x) => (float[2, 3] y) {
    a = Identity (x)
    b = Relu (a)
    unused = Sigmoid (b)
    y = Abs (b)
}
"""


class Explode(Pass):
    name = "explode"
    summary = "removes a node, then raises (a buggy pass)"

    def run(self, graph, ctx):
        graph.remove_node(next(n for n in graph.nodes if n.op_type == "Sigmoid"))
        raise RuntimeError("bug in the pass")


class NegateOutput(Pass):
    """Wrong on purpose: changes what the model computes."""

    name = "negate-output"
    summary = "puts a Neg in front of the first graph output"

    def run(self, graph, ctx):
        out = graph.outputs[0]
        prod = out.producer
        if prod.op_type == "Neg":
            return PassResult(False)
        neg = graph.add_node("Neg", [None], 1)
        graph.replace_all_uses(out, neg.outputs[0])
        graph.set_input(neg, 0, out)  # after the rewire, or Neg would read itself
        return PassResult(True, {"negated": 1})


class CountDown(Pass):
    """Reports a change every run, to exercise the fixed-point cap."""

    name = "count-down"
    summary = "always claims to modify"

    @dataclasses.dataclass
    class Options:
        times: int = 100

    def run(self, graph, ctx):
        return PassResult(True)


def registry(*extra):
    busy = [Alias("busy", "never settles", ("count-down",), True, 5)] if CountDown in extra else []
    return Registry([*PASSES, *extra], [*ALIASES, *busy])


def load(text=MODEL):
    return frontend.load(model_from_text(text))


def test_records_time_node_delta_and_stats():
    model = load()
    steps = api.parse_pipeline("eliminate-identity,dce", registry())
    records = PassManager(steps, verify=True).run(model, PassContext(model))
    assert [(r.name, r.modified, r.nodes_before, r.nodes_after) for r in records] == [
        ("eliminate-identity", True, 4, 3), ("dce", True, 3, 2)]
    assert records[0].stats == {"removed": 1}
    assert records[1].stats == {"nodes_removed": 1, "initializers_removed": 0}
    assert all(r.seconds >= 0 for r in records)


def test_second_run_reports_no_change():
    model = load()
    steps = api.parse_pipeline("cleanup", registry())
    PassManager(steps).run(model, PassContext(model))
    again = PassManager(api.parse_pipeline("cleanup", registry())).run(model, PassContext(model))
    assert not any(r.modified for r in again)


def test_fixed_point_group_stops_when_nothing_changes():
    model = load()
    records = PassManager(api.parse_pipeline("cleanup", registry())).run(model, PassContext(model))
    # round 0 changes the graph, round 1 confirms nothing is left
    assert [(r.name, r.iteration, r.modified) for r in records] == [
        ("eliminate-identity", 0, True), ("dce", 0, True), ("eliminate-identity", 1, False), ("dce", 1, False)]


def test_fixed_point_group_has_a_cap():
    model = load()
    steps = api.parse_pipeline("busy", registry(CountDown))
    assert isinstance(steps[0], FixedPoint) and steps[0].max_iterations == 5
    records = PassManager(steps).run(model, PassContext(model))
    assert len(records) == 5


def test_a_pass_that_raises_is_rolled_back_and_reported():
    model = load()
    before = model.graph.count_nodes()
    records = PassManager([Explode()]).run(model, PassContext(model))
    assert records[0].rolled_back and "bug in the pass" in records[0].error
    assert model.graph.count_nodes() == before  # the Sigmoid it removed is back
    model.graph.verify()


def test_a_pass_that_raises_is_an_error_under_strict():
    model = load()
    with pytest.raises(PassFailed, match="pass explode failed and was rolled back: RuntimeError: bug in the pass"):
        PassManager([Explode()], strict=True).run(model, PassContext(model))


def test_validation_failure_is_bisected_to_the_first_bad_pass_and_rolled_back(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(model_from_text(MODEL), src)
    out = tmp_path / "o.onnx"
    result = api.optimize(str(src), "eliminate-identity,negate-output,dce", output=str(out),
                          registry=registry(NegateOutput))
    assert result.rolled_back == ["negate-output"]
    assert result.validation.ok
    assert "Neg" not in [n.op_type for n in onnx.load(out).graph.node]
    assert [n.op_type for n in onnx.load(out).graph.node] == ["Relu", "Abs"]  # the good passes ran


def test_validation_failure_is_an_error_under_strict_and_writes_nothing(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(model_from_text(MODEL), src)
    with pytest.raises(ValidationError, match="output 'y' differs.*first broken by pass negate-output"):
        api.optimize(str(src), "eliminate-identity,negate-output", output=str(tmp_path / "o.onnx"),
                     strict=True, registry=registry(NegateOutput))
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_registry_rejects_duplicates_and_non_kebab_names():
    class Bad(Pass):
        name = "Bad_Name"

    with pytest.raises(ValueError, match="not kebab-case"):
        Registry([Bad])
    with pytest.raises(ValueError, match="duplicate pass or alias name 'dce'"):
        Registry([*PASSES, PASSES[0]])
    with pytest.raises(ValueError, match="duplicate"):
        Registry(PASSES, [Alias("dce", "x", ("dce",))])
    with pytest.raises(ValueError, match="unknown pass nope"):
        Registry(PASSES, [Alias("grp", "x", ("nope",))])


def test_unknown_pass_and_option_errors_suggest_the_closest_name():
    reg = registry(CountDown)
    with pytest.raises(PipelineError, match="unknown pass 'dcee' \\(did you mean 'dce'\\?\\)"):
        api.parse_pipeline("dcee", reg)
    with pytest.raises(PipelineError, match="pass 'count-down' has no option 'time' \\(did you mean 'times'\\?\\)"):
        api.parse_pipeline("count-down{time=3}", reg)
    with pytest.raises(PipelineError, match="option 'times' of pass 'count-down' expects int, got 'many'"):
        api.parse_pipeline("count-down{times=many}", reg)
    with pytest.raises(PipelineError, match="pass 'dce' has no option 'x'; it takes no options"):
        api.parse_pipeline("dce{x=1}", reg)
    with pytest.raises(PipelineError, match="given twice"):
        api.parse_pipeline("count-down{times=1,times=2}", reg)


def test_options_are_typed_and_shown_in_the_label():
    (p,) = api.parse_pipeline("count-down{times=3}", registry(CountDown))
    assert p.options.times == 3 and p.label() == "count-down{times=3}"
    (p,) = api.parse_pipeline("count-down", registry(CountDown))
    assert p.label() == "count-down"


def test_none_is_the_empty_pipeline():
    assert api.parse_pipeline("none", registry()) == []


def test_dce_keeps_graph_outputs_and_overridable_initializers():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[2] x, float[2] w) => (float[2] y, float[2] z) {
        y = Relu (x)
        z = Identity (x)
    }
    """
    proto = model_from_text(text)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.ones(2, np.float32), "w"))
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.ones(2, np.float32), "dead"))
    model = frontend.load(proto)
    res = registry().passes["dce"]().run(model.graph, PassContext(model))
    # nothing here is dead except the initializer no one reads; `w` is a graph input
    assert res.modified and res.stats == {"nodes_removed": 0, "initializers_removed": 1}
    assert model.graph.value("w") is not None and model.graph.value("dead") is None
    assert not registry().passes["dce"]().run(model.graph, PassContext(model)).modified


def test_dce_removes_dead_subgraph_code_and_frees_outer_values():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[2] x, bool c) => (float[2] y) {
        a = Neg (x)
        y = If (c) <
            then_branch = t () => (float[2] t_out) { dead = Sigmoid (a)  t_out = Relu (x) },
            else_branch = e () => (float[2] e_out) { e_out = Abs (x) }
        >
    }
    """
    model = frontend.load(model_from_text(text))
    res = registry().passes["dce"]().run(model.graph, PassContext(model))
    assert res.stats["nodes_removed"] == 2  # Sigmoid in the branch, then Neg outside
    assert model.graph.value("a") is None
    model.graph.verify()


def test_eliminate_identity_twin_cases_that_must_not_fire():
    # output fed straight from a graph input: the Identity carries the output's name
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[2] x) => (float[2] y) {
        y = Identity (x)
    }
    """
    model = frontend.load(model_from_text(text))
    res = registry().passes["eliminate-identity"]().run(model.graph, PassContext(model))
    assert not res.modified and [n.op_type for n in model.graph.nodes] == ["Identity"]


def test_eliminate_identity_inside_a_subgraph_rewires_through_the_capture(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[2] x, bool c) => (float[2] y) {
        a = Neg (x)
        y = If (c) <
            then_branch = t () => (float[2] t_out) { i = Identity (a)  t_out = Relu (i) },
            else_branch = e () => (float[2] e_out) { e_out = Abs (a) }
        >
    }
    """
    src = tmp_path / "m.onnx"
    onnx.save(model_from_text(text), src)
    out = tmp_path / "o.onnx"
    result = api.optimize(str(src), "eliminate-identity", output=str(out))
    assert result.records[0].stats == {"removed": 1}
    assert result.validation.ok
    assert "Identity" not in onnx.printer.to_text(onnx.load(out).graph)


def test_a_pass_never_sees_networkx_or_protobuf():
    """Passes use the IR API only (DESIGN §1): a static check of the pass library."""
    import graphopt.passes as lib

    folder = os.path.dirname(lib.__file__)
    for name in os.listdir(folder):
        if name.endswith(".py"):
            text = open(os.path.join(folder, name)).read()
            forbidden = ("networkx", "._g", "onnx.helper", "import onnx", "from onnx", "google.protobuf")
            assert not [f for f in forbidden if f in text], name


def test_tensor_constructors_keep_dtype():
    t = Tensor.from_numpy(np.arange(3, dtype=np.int64))
    assert t.dtype == onnx.TensorProto.INT64 and t.shape == (3,) and t.nbytes == 24


class BreakInvariant(Pass):
    """Leaves a dangling read: verify() must catch it and the pass must be rolled back."""

    name = "break-invariant"
    summary = "reads a value nothing defines"

    def run(self, graph, ctx):
        relu = next(n for n in graph.nodes if n.op_type == "Relu")
        graph.set_input(relu, 0, graph.add_value("dangling"))
        return PassResult(True)


def test_tests_verify_the_ir_after_every_pass():
    model = load()
    records = PassManager([BreakInvariant()]).run(model, PassContext(model))  # no verify flag given
    assert records[0].rolled_back and "never defined" in records[0].error
    model.graph.verify()


class InvalidAttr(Pass):
    """Produces a model the ONNX checker rejects (Relu has no attribute 'bogus')."""

    name = "invalid-attr"
    summary = "adds an attribute Relu does not have"

    def run(self, graph, ctx):
        relu = next(n for n in graph.nodes if n.op_type == "Relu")
        if "bogus" in relu.attrs:
            return PassResult(False)
        from graphopt.ir import make_attr

        relu.attrs["bogus"] = make_attr(1)
        return PassResult(True)


def test_a_pass_that_breaks_the_checker_is_bisected_and_rolled_back(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(model_from_text(MODEL), src)
    for validate in (True, False):
        out = tmp_path / f"o{validate}.onnx"
        result = api.optimize(str(src), "eliminate-identity,invalid-attr,dce", output=str(out),
                              validate=validate, registry=registry(InvalidAttr))
        assert result.rolled_back == ["invalid-attr"]
        assert [n.op_type for n in onnx.load(out).graph.node] == ["Relu", "Abs"]
        rec = next(r for r in result.records if r.name == "invalid-attr")
        assert rec.rolled_back and "rolled back" in rec.error


def test_a_pass_that_breaks_the_checker_is_an_error_under_strict(tmp_path):
    from graphopt.errors import InvalidModelError

    src = tmp_path / "m.onnx"
    onnx.save(model_from_text(MODEL), src)
    with pytest.raises(InvalidModelError, match="fails the ONNX checker.*first broken by pass invalid-attr"):
        api.optimize(str(src), "dce,invalid-attr", output=str(tmp_path / "o.onnx"), strict=True,
                     registry=registry(InvalidAttr))
    assert os.listdir(tmp_path) == ["m.onnx"]
