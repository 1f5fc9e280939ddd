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
from graphopt.pipeline.manager import PassFailed, PassManager
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
    records = PassManager(steps, verify=True).execute(model, PassContext(model))
    assert [(r.name, r.modified, r.nodes_before, r.nodes_after) for r in records] == [
        ("eliminate-identity", True, 4, 3), ("dce", True, 3, 2)]
    assert records[0].stats == {"removed": 1}
    assert records[1].stats == {"nodes_removed": 1, "initializers_removed": 0}
    assert all(r.seconds >= 0 for r in records)


def test_second_run_reports_no_change():
    model = load()
    steps = api.parse_pipeline("cleanup", registry())
    PassManager(steps).execute(model, PassContext(model))
    again = PassManager(api.parse_pipeline("cleanup", registry())).execute(model, PassContext(model))
    assert not any(r.modified for r in again)


def test_fixed_point_group_stops_when_nothing_changes():
    model = load()
    records = PassManager(api.parse_pipeline("cleanup", registry())).execute(model, PassContext(model))
    # round 0 changes the graph, round 1 confirms nothing is left
    assert [(r.name, r.iteration, r.modified) for r in records] == [
        ("eliminate-identity", 0, True), ("dce", 0, True), ("eliminate-identity", 1, False), ("dce", 1, False)]


def test_fixed_point_group_has_a_cap():
    model = load()
    steps = api.parse_pipeline("busy", registry(CountDown))
    assert steps[0].fixed_point and steps[0].max_iterations == 5
    records = PassManager(steps).execute(model, PassContext(model))
    assert len(records) == 5


def test_a_pass_that_raises_is_rolled_back_and_reported():
    model = load()
    before = model.graph.count_nodes()
    records = PassManager([Explode()]).execute(model, PassContext(model))
    assert records[0].rolled_back and "bug in the pass" in records[0].error
    assert model.graph.count_nodes() == before  # the Sigmoid it removed is back
    model.graph.verify()


def test_a_pass_that_raises_is_an_error_under_strict():
    model = load()
    with pytest.raises(PassFailed, match="pass explode failed and was rolled back: RuntimeError: bug in the pass"):
        PassManager([Explode()], strict=True).execute(model, PassContext(model))


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
    model = frontend.load(proto, keep_initializer_inputs=True)
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
    records = PassManager([BreakInvariant()]).execute(model, PassContext(model))  # no verify flag given
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


class InvalidWithoutIdentity(InvalidAttr):
    """Breaks the checker only once no Identity is left: harmless first, harmful later."""

    name = "invalid-without-identity"

    def run(self, graph, ctx):
        if any(n.op_type == "Identity" for n in graph.nodes):
            return PassResult(False)
        return super().run(graph, ctx)


def test_rollback_disables_only_the_step_that_broke_the_model(tmp_path):
    """The same pass twice: the later invocation breaks the checker; only that step is rolled back,
    the earlier one still runs (and is reported as run)."""
    result = api.optimize(model_from_text(MODEL), "invalid-without-identity,eliminate-identity,invalid-without-identity",
                          registry=registry(InvalidWithoutIdentity))
    assert result.rolled_back == ["invalid-without-identity"]
    first, last = [r for r in result.records if r.name == "invalid-without-identity"]
    assert (first.step, first.rolled_back, first.error) == (0, False, None)
    assert (last.step, last.rolled_back) == (2, True)
    assert "bogus" not in {a for n in result.model.graph.nodes for a in n.attrs}


def test_a_pass_that_breaks_the_checker_is_an_error_under_strict(tmp_path):
    from graphopt.errors import InvalidModelError

    src = tmp_path / "m.onnx"
    onnx.save(model_from_text(MODEL), src)
    with pytest.raises(InvalidModelError, match="fails the ONNX checker.*first broken by pass invalid-attr"):
        api.optimize(str(src), "dce,invalid-attr", output=str(tmp_path / "o.onnx"), strict=True,
                     registry=registry(InvalidAttr))
    assert os.listdir(tmp_path) == ["m.onnx"]


# -- one invocation path: rollback and bisection give what the pipeline gives without the pass --

def named_model() -> onnx.ModelProto:
    """x -> ident1 -> Relu -> ident2 -> Abs -> y, and an unused Sigmoid (what Explode removes)."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Identity", ["x"], ["a"], name="ident1"),
             helper.make_node("Relu", ["a"], ["b"], name="relu"),
             helper.make_node("Identity", ["b"], ["c"], name="ident2"),
             helper.make_node("Abs", ["c"], ["y"], name="abs"),
             helper.make_node("Sigmoid", ["b"], ["unused"], name="sig")]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_scoped_step_keeps_its_scope_when_a_later_pass_is_rolled_back(tmp_path):
    out = tmp_path / "o.onnx"
    result = api.optimize(named_model(), 'eliminate-identity except nodes ["ident1"], explode', output=str(out),
                          registry=registry(Explode))
    assert [(r.name, r.rolled_back) for r in result.records] == [("eliminate-identity", False), ("explode", True)]
    # exactly what `eliminate-identity except nodes ["ident1"]` alone writes: ident1 kept, ident2 gone
    alone = api.optimize(named_model(), 'eliminate-identity except nodes ["ident1"]', output=str(tmp_path / "a.onnx"))
    names = [n.name for n in onnx.load(out).graph.node]
    assert names == [n.name for n in onnx.load(tmp_path / "a.onnx").graph.node] == ["ident1", "relu", "abs", "sig"]
    assert result.validation.ok and alone.records[0].stats == {"removed": 1}


class Reporter(Pass):
    """Reports without changing the graph (its report must survive a later rollback)."""

    name = "reporter"
    summary = "writes a report"

    def run(self, graph, ctx):
        ctx.reports[self.name] = {"nodes": graph.count_nodes()}
        return PassResult(False)


class ReportThenExplode(Pass):
    name = "report-then-explode"
    summary = "writes a report and a near miss, changes the graph, then raises"

    def run(self, graph, ctx):
        ctx.reports[self.name] = {"scale": 0.5}
        ctx.reports["reporter"] = {"nodes": -1}  # overwrites another pass's report
        ctx.near_misses.append("from a pass that failed")
        graph.remove_node(next(n for n in graph.nodes if n.op_type == "Sigmoid"))
        raise RuntimeError("bug in the pass")


def test_reports_of_a_rolled_back_pass_do_not_survive():
    result = api.optimize(named_model(), "reporter, report-then-explode, dce",
                          registry=registry(Reporter, ReportThenExplode))
    assert result.pass_reports == {"reporter": {"nodes": 5}}
    assert result.near_misses == []
    assert [(r.name, r.rolled_back, r.modified) for r in result.records] == [
        ("reporter", False, False), ("report-then-explode", True, False), ("dce", False, True)]
    assert "Sigmoid" not in [n.op_type for n in result.model.graph.nodes]  # dce removed it, not the failed pass


def test_rollback_restores_the_snapshot_and_later_passes_see_the_model_before_the_failure():
    model = frontend.load(named_model())
    pm = PassManager(api.parse_pipeline("eliminate-identity, report-then-explode", registry(ReportThenExplode)))
    ctx = PassContext(model)
    records = pm.execute(model, ctx)
    assert records[1].rolled_back and "bug in the pass" in records[1].error
    assert [n.name for n in model.graph.nodes] == ["relu", "abs", "sig"]  # identities gone, Sigmoid back
    assert ctx.reports == {} and ctx.near_misses == [] and ctx.model is model
    model.graph.verify()


class Spy(Pass):
    """Records the context it runs with, every time it runs."""

    name = "spy"
    summary = "changes nothing"
    seen: list = []

    def run(self, graph, ctx):
        Spy.seen.append((ctx.scope, id(ctx.calibration), frozenset(ctx.explain), tuple(ctx.input_shapes.items()), ctx.verify,
                         ctx.runner is not None))
        return PassResult(False)


def test_bisection_reruns_prefixes_through_the_invocation_path_with_the_same_context(tmp_path, monkeypatch):
    from graphopt.quant.calibration import CalibrationSettings

    monkeypatch.setattr(Spy, "seen", [])
    calls = []
    invoke = PassManager._invoke

    def counting(self, p, ctx, group, iteration):
        calls.append(p.name)
        return invoke(self, p, ctx, group, iteration)

    monkeypatch.setattr(PassManager, "_invoke", counting)
    calib = CalibrationSettings(data=[{"x": np.ones((2, 3), np.float32)}])
    result = api.optimize(named_model(), "spy except ops [Relu], eliminate-identity, invalid-attr, dce",
                          registry=registry(Spy, InvalidAttr), calibration=calib, explain={"some-rule"},
                          input_shapes={"x": (2, 3)}, debug=True)
    assert result.rolled_back == ["invalid-attr"]
    # first run, bisection prefixes (spy is in every one), the rerun without invalid-attr
    assert len(Spy.seen) >= 3 and calls.count("spy") == len(Spy.seen)
    # one calibration-settings object for every run: the driver's copy (the caller's is never modified)
    assert len({seen[1] for seen in Spy.seen}) == 1 and Spy.seen[0][1] != id(calib)
    assert {seen[:1] + seen[2:] for seen in Spy.seen} == {(
        api.parse_pipeline("spy except ops [Relu]", registry(Spy))[0].scope, frozenset({"some-rule"}),
        (("x", (2, 3)),), True, True)}


class NegateRelu(Pass):
    """Wrong on purpose: negates every Relu it may rewrite."""

    name = "negate-relu"
    summary = "puts a Neg after every Relu in scope"

    def run(self, graph, ctx):
        relus = [n for n in graph.nodes if n.op_type == "Relu" and ctx.in_scope(n)]
        for relu in relus:
            out = relu.outputs[0]
            neg = graph.add_node("Neg", [None], 1)
            graph.replace_all_uses(out, neg.outputs[0])
            graph.set_input(neg, 0, out)
        return PassResult(bool(relus))


def test_bisection_runs_a_scoped_step_with_its_scope(tmp_path):
    # negate-relu is scoped away from every Relu: harmless. Replayed without its scope, it would
    # break validation and take the blame for invalid-attr.
    out = tmp_path / "o.onnx"
    result = api.optimize(model_from_text(MODEL), "negate-relu except ops [Relu], invalid-attr", output=str(out),
                          registry=registry(NegateRelu, InvalidAttr))
    assert result.rolled_back == ["invalid-attr"]
    assert [n.op_type for n in onnx.load(out).graph.node] == ["Identity", "Relu", "Sigmoid", "Abs"]


def test_execute_with_a_limit_runs_a_prefix_of_the_pipeline():
    steps = api.parse_pipeline("cleanup", registry())
    full_model = load()
    full = PassManager(steps).execute(full_model, PassContext(full_model))
    for n in range(len(full) + 1):
        model = load()
        pm = PassManager(steps)
        records = pm.execute(model, PassContext(model), limit=n)
        assert [(r.name, r.iteration, r.modified) for r in records] == [
            (r.name, r.iteration, r.modified) for r in full[:n]]
        assert model.graph.count_nodes() == (full[n - 1].nodes_after if n else 4)


def test_int8_with_calibration_then_a_failing_pass_writes_the_calibrated_scales(tmp_path):
    from int8_models import small_cnn
    from test_int8 import View, cnn_feeds

    class Boom(Pass):
        name = "boom"
        summary = "raises"

        def run(self, graph, ctx):
            raise RuntimeError("boom")

    out = tmp_path / "o.onnx"
    result = api.optimize(small_cnn(), "int8, boom", output=str(out), calibration=cnn_feeds(),
                          registry=registry(Boom))
    assert [r.name for r in result.records if r.rolled_back] == ["boom"]
    report = result.pass_reports["quantize-int8"]
    assert report["calibration"]["data"] != "random"
    (reported,) = [i["scale"] for L in report["layers"] for i in L["inputs"] if i["tensor"] == "x"]
    proto = onnx.load(out)
    v = View(proto)
    q = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    written = float(v.consts[q.input[1]])
    assert written == pytest.approx(reported, rel=1e-6)
    # and it is what int8 alone writes
    alone = api.optimize(small_cnn(), "int8", output=str(tmp_path / "a.onnx"), calibration=cnn_feeds())
    assert alone.pass_reports["quantize-int8"]["layers"] == report["layers"]


class Unchanged(Pass):
    name = "lossy-noop"
    summary = "a lossy pass that changes nothing"
    lossless = False

    def run(self, graph, ctx):
        return PassResult(False)


def _count_clones(monkeypatch) -> list:
    from graphopt.ir import Model

    clones = []
    clone = Model.clone
    monkeypatch.setattr(Model, "clone", lambda self: clones.append(1) or clone(self))
    return clones


def test_a_lossless_pipeline_copies_the_model_once(monkeypatch):
    clones = _count_clones(monkeypatch)
    model = load()
    records = PassManager(api.parse_pipeline("cleanup", registry())).execute(model, PassContext(model))
    assert [r.modified for r in records] == [True, True, False, False]
    assert len(clones) == 1  # at the start: a failure would replay from there


def test_with_a_lossy_pass_snapshots_are_taken_only_when_the_model_changed(monkeypatch):
    clones = _count_clones(monkeypatch)
    model = load()
    steps = api.parse_pipeline("cleanup, lossy-noop", registry(Unchanged))
    records = PassManager(steps).execute(model, PassContext(model))
    assert [r.modified for r in records] == [True, True, False, False, False]
    assert len(clones) == 3  # before each of the first three; the fourth reuses the third's; none before lossy-noop


def test_a_failure_replays_the_run_without_the_failed_invocation(monkeypatch, caplog):
    """The invocations before the failure are replayed (logged once), the failed one is left
    out, and the result is what the pipeline gives without it."""
    class FailOnce(Pass):
        name = "explode-late"
        summary = "raises"

        def run(self, graph, ctx):
            raise RuntimeError("bug in the pass")

    clones = _count_clones(monkeypatch)
    model = load()
    with caplog.at_level("INFO", logger="graphopt"):
        records = PassManager(api.parse_pipeline("eliminate-identity, explode-late, dce", registry(FailOnce))) \
            .execute(model, PassContext(model))
    assert [(r.name, r.modified, r.rolled_back) for r in records] == [
        ("eliminate-identity", True, False), ("explode-late", False, True), ("dce", records[2].modified, False)]
    assert "bug in the pass" in records[1].error
    assert sum("eliminate-identity" in m for m in caplog.messages) == 1
    assert sum("explode-late failed and was rolled back" in m for m in caplog.messages) == 1
    assert len(clones) == 3  # the start copy, the replay's copy of it, and a snapshot before dce
    clean = load()
    PassManager(api.parse_pipeline("eliminate-identity, dce", registry())).execute(clean, PassContext(clean))
    from graphopt.onnx_io.emit import to_proto

    assert to_proto(model).SerializeToString(deterministic=True) == to_proto(clean).SerializeToString(deterministic=True)
    caplog.clear()
    model = load()
    with caplog.at_level("INFO", logger="graphopt"):  # a group that ended before the failure: logged once too
        PassManager(api.parse_pipeline("cleanup, explode-late", registry(FailOnce))).execute(model, PassContext(model))
    assert [m.split()[0] for m in caplog.messages].count("cleanup") == 1


def test_a_lossy_pass_that_raises_inside_a_group_fails_the_run():
    class LossyBoom(Pass):
        name = "lossy-boom"
        summary = "a lossy pass that raises"
        lossless = False

        def run(self, graph, ctx):
            raise RuntimeError("boom")

    model = load()
    group = PassManager([registry().passes["dce"](), LossyBoom()], name="g", fixed_point=True)
    with pytest.raises(PassFailed, match="pass lossy-boom failed: RuntimeError: boom"):
        PassManager([group]).execute(model, PassContext(model))


# -- nesting: a fixed-point group is a pass manager, itself a pass --

CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
m (float[2, 3] x) => (float[2, 3] y) {
    a = Identity (x)
    b = Identity (a)
    c = Identity (b)
    y = Relu (c)
}
"""


class PeelIdentity(Pass):
    """Removes one Identity per run, so a fixed point takes several rounds."""

    name = "peel-identity"
    summary = "removes the first Identity in scope"

    def run(self, graph, ctx):
        node = next((n for n in graph.nodes if n.op_type == "Identity" and ctx.in_scope(n)), None)
        if node is None:
            return PassResult(False, {"removed": 0})
        graph.bypass(node, node.inputs[0])
        return PassResult(True, {"removed": 1})


def test_a_group_inside_a_group():
    from graphopt.pipeline.base import NodeScope

    reg = registry(PeelIdentity)
    inner = PassManager([PeelIdentity()], name="inner", fixed_point=True, max_iterations=2)
    outer = PassManager([inner, reg.passes["dce"]()], name="outer", fixed_point=True)
    assert outer.flatten() == [inner.passes[0], outer.passes[1]] and outer.lossless
    model = load(CHAIN)
    pm = PassManager([outer])
    records = pm.execute(model, PassContext(model))
    assert [n.op_type for n in model.graph.nodes] == ["Relu"]
    assert [(r.name, r.group, r.iteration, r.modified, r.step) for r in records] == [
        ("peel-identity", "inner", 0, True, 0), ("peel-identity", "inner", 1, True, 0), ("dce", "outer", 0, False, 1),
        ("peel-identity", "inner", 0, True, 0), ("peel-identity", "inner", 1, False, 0), ("dce", "outer", 1, False, 1),
        ("peel-identity", "inner", 0, False, 0), ("dce", "outer", 2, False, 1)]
    # the groups were invoked like passes: recorded, with their rounds
    groups = [(r.name, r.group, r.iteration, r.modified, r.stats) for _, r in pm.trace if r.kind == "group"]
    assert groups == [("inner", "outer", 0, True, {"rounds": 2}), ("inner", "outer", 1, True, {"rounds": 2}),
                      ("inner", "outer", 2, False, {"rounds": 1}), ("outer", None, 0, True, {"rounds": 3})]
    # in its first invocation the inner group hit its cap while still peeling
    assert pm.warnings == [("fixed-point group inner stopped at its cap of 2 rounds; still changing the graph in "
                            "the last round: peel-identity")]
    # the DSL builds the same thing
    steps = api.parse_pipeline("fixpoint { fixpoint 2 { peel-identity }, dce }", reg)
    again = load(CHAIN)
    pm2 = PassManager(steps)
    assert [(r.name, r.iteration, r.modified) for r in pm2.execute(again, PassContext(again))] == [
        (r.name, r.iteration, r.modified) for r in records]
    # a group's scope applies to its members that have none of their own
    scoped = load(CHAIN)
    PassManager([PassManager([PeelIdentity()], name="g", fixed_point=True, scope=NodeScope(except_nodes=("*",)))]
                ).execute(scoped, PassContext(scoped))
    assert scoped.graph.count_nodes() == 4


def test_a_lossy_member_makes_its_group_lossy_and_drivers_see_it():
    from graphopt.passes import default_registry

    reg = default_registry()
    group = PassManager([reg.passes["dce"](), reg.passes["quantize-int8"]()], name="g", fixed_point=True)
    assert not group.lossless and PassManager([reg.passes["dce"]()]).lossless
    assert api._lossy_passes([group, reg.passes["fold-constants"]()]) == ["quantize-int8"]


def test_the_default_cap_is_defined_once():
    from graphopt.pipeline.manager import DEFAULT_MAX_ITERATIONS

    reg = registry()
    assert api.parse_pipeline("fixpoint { dce }", reg)[0].max_iterations == DEFAULT_MAX_ITERATIONS
    assert api.parse_pipeline("fold", reg)[0].max_iterations == DEFAULT_MAX_ITERATIONS
    assert Alias("a", "b", ("dce",), True).max_iterations == DEFAULT_MAX_ITERATIONS


def test_the_cap_warning_names_only_the_passes_still_changing():
    model = load(CHAIN)
    pm = PassManager(api.parse_pipeline("fixpoint 4 { peel-identity, count-down }", registry(PeelIdentity, CountDown)))
    pm.execute(model, PassContext(model))
    assert pm.warnings == [("fixed-point group fixpoint stopped at its cap of 4 rounds; still changing the graph in "
                            "the last round: count-down")]
    model = load(CHAIN)
    pm = PassManager(api.parse_pipeline("fixpoint 4 { peel-identity }", registry(PeelIdentity)))
    pm.execute(model, PassContext(model))
    assert pm.warnings == []  # the fourth round changed nothing: a fixed point, not the cap


def test_the_cap_is_a_warning_in_the_summary_and_both_reports(tmp_path, monkeypatch, capsys):
    import json

    from graphopt.cli import main

    monkeypatch.setattr(api, "default_registry", lambda: registry(CountDown))
    src = tmp_path / "m.onnx"
    onnx.save(model_from_text(MODEL), src)
    warning = ("fixed-point group busy stopped at its cap of 5 rounds; still changing the graph in the last "
               "round: count-down")
    for report in ("r.json", "r.md"):
        assert main([str(src), "-p", "busy", "-o", str(tmp_path / f"{report}.onnx"), "--report",
                     str(tmp_path / report)]) == 0
        err = capsys.readouterr().err
        assert f"graphopt: WARNING: {warning}\n" in err and "; 1 warning\n" in err
    assert json.loads((tmp_path / "r.json").read_text())["warnings"] == [warning]
    assert f"- **WARNING**: {warning}\n" in (tmp_path / "r.md").read_text()


# -- the report: one row per pass --

def test_the_report_has_one_row_per_pass_with_its_rounds(tmp_path):
    from graphopt.report.markdown import markdown

    result = api.optimize(model_from_text(MODEL), "cleanup,fold")
    rows = result.report()["passes"]
    fold = registry().aliases["fold"].members
    assert [(r["name"], r["group"]) for r in rows] == [
        ("eliminate-identity", "cleanup"), ("dce", "cleanup"), *[(m, "fold") for m in fold]]
    first = rows[0]
    assert len(first["rounds"]) == 2 and [r["iteration"] for r in first["rounds"]] == [0, 1]
    assert first["modified"] and first["node_delta"] == -1 and first["stats"] == {"removed": 1}
    assert first["seconds"] == pytest.approx(sum(r["seconds"] for r in first["rounds"]))
    assert rows[1]["stats"] == {"nodes_removed": 1, "initializers_removed": 0}
    assert all(len(r["rounds"]) == 1 and not r["modified"] for r in rows[2:])  # fold: one round, nothing to do
    assert sum(len(r["rounds"]) for r in rows) == len(result.records) == 4 + len(fold)  # cleanup: two rounds
    text, _ = markdown({"input": "m.onnx", **result.report()}, str(tmp_path / "r"))
    table = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(table) == 2 + len(fold)
    assert table[0] == "| 0 | eliminate-identity | cleanup | 2 | yes | -1 | " \
                       f"{first['seconds']:.3f} | removed=1 |"


def test_pass_table_sums_numeric_stats_and_keeps_the_last_other_value():
    from graphopt.pipeline.manager import PassRecord, pass_table

    recs = [PassRecord(0, "p", "p", "g", 0, step=0, modified=True, stats={"n": 2, "note": "a", "flag": True},
                       seconds=0.5, nodes_before=10, nodes_after=8),
            PassRecord(1, "q", "q", "g", 0, step=1, nodes_before=8, nodes_after=8),
            PassRecord(2, "p", "p", "g", 1, step=0, stats={"n": 3, "note": "b", "flag": False},
                       seconds=0.25, nodes_before=8, nodes_after=7),
            PassRecord(3, "g", "g", None, 0, kind="group")]
    rows = pass_table(recs)
    assert [(r["name"], len(r["rounds"]), r["modified"], r["node_delta"], r["seconds"]) for r in rows] == [
        ("p", 2, True, -3, 0.75), ("q", 1, False, 0, 0.0)]
    assert rows[0]["stats"] == {"n": 5, "note": "b", "flag": False}


def test_verbose_logs_every_round(tmp_path, capsys):
    from graphopt.cli import main

    src = tmp_path / "m.onnx"
    onnx.save(model_from_text(MODEL), src)
    assert main([str(src), "-p", "cleanup", "-o", str(tmp_path / "o.onnx"), "-v"]) == 0
    err = capsys.readouterr().err
    for name in ("eliminate-identity", "dce"):
        for k in (1, 2):
            assert f"{name} [cleanup round {k}]" in err


def test_a_run_imports_only_the_passes_it_names(tmp_path):
    # the pass library is listed by name; a module is imported when its pass is looked up
    import subprocess
    import sys

    src = tmp_path / "m.onnx"
    onnx.save(model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[2] x) => (float[2] y) {
        i = Identity (x)
        y = Relu (i)
    }
    """), str(src))
    code = ("import sys, graphopt\n"
            f"graphopt.optimize({str(src)!r}, 'cleanup')\n"
            "print(sorted(m.rsplit('.', 1)[1] for m in sys.modules if m.startswith('graphopt.passes.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['dead_code_elimination', 'eliminate_identity']"


def test_a_library_entry_must_name_the_pass_its_class_is():
    from graphopt.pipeline.registry import PassRef

    reg = Registry([PassRef("dce", "graphopt.passes.eliminate_identity:EliminateIdentity")])
    with pytest.raises(ValueError, match="is pass 'eliminate-identity', listed as 'dce'"):
        reg.lookup("dce")


class ExplodeWhenTwoIdentitiesLeft(Pass):
    """Raises once the graph is down to `left` Identity nodes: deterministic in the model, so it
    fails in a later round of a fixed point, after other passes changed the graph."""

    name = "explode-at-two"
    summary = "raises when two Identity nodes are left"
    left = 2

    def run(self, graph, ctx):
        if sum(n.op_type == "Identity" for n in graph.nodes) == self.left:
            raise RuntimeError(f"{self.left} left")
        return PassResult(False)


class ExplodeWhenOneIdentityLeft(ExplodeWhenTwoIdentitiesLeft):
    name = "explode-at-one"
    summary = "raises when one Identity node is left"
    left = 1


IDENTITY_CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
m (float[2, 3] x) => (float[2, 3] y) {
    a = Identity (x)
    b = Identity (a)
    c = Identity (b)
    d = Identity (c)
    e = Relu (d)
    unused = Sigmoid (e)
    y = Abs (e)
}
"""


@pytest.mark.parametrize("pipeline", [
    "fixpoint 6 { peel-identity, explode-at-two }, dce",
    "fixpoint 3 { fixpoint 2 { peel-identity }, explode-at-two, dce }",
    "peel-identity, peel-identity, explode-at-two, peel-identity, explode-at-two, dce",
    "fixpoint 6 { peel-identity, explode-at-two, explode-at-one }, dce",  # a second failure after the replay
])
def test_replaying_after_a_failure_gives_what_snapshots_give(pipeline):
    """The twin runs the same pipeline with a lossy no-op at its end, which keeps the manager
    taking a snapshot before every invocation: records and model must be the same. (Passes that
    name new values may number them differently: the replay restarts the name counter from the
    start copy, not from the failed pass.)"""
    from graphopt.onnx_io.emit import to_proto

    reg = registry(PeelIdentity, ExplodeWhenTwoIdentitiesLeft, ExplodeWhenOneIdentityLeft, Unchanged)
    results = []
    for steps in (pipeline, pipeline + ", lossy-noop"):
        model = load(IDENTITY_CHAIN)
        records = PassManager(api.parse_pipeline(steps, reg)).execute(model, PassContext(model))
        rows = [(r.name, r.group, r.iteration, r.modified, r.rolled_back, r.error) for r in records
                if r.name != "lossy-noop"]
        results.append((rows, to_proto(model).SerializeToString(deterministic=True)))
    (replayed, model_a), (snapshotted, model_b) = results
    assert any(row[4] for row in replayed), "the pipeline must roll something back"
    assert replayed == snapshotted and model_a == model_b


def test_under_strict_a_failure_puts_the_model_back_and_records_the_pass_before_the_error():
    class HalfThenExplode(Pass):
        name = "half-explode"
        summary = "removes a node, then raises"

        def run(self, graph, ctx):
            node = next(n for n in graph.nodes if n.op_type == "Identity")
            graph.bypass(node, node.inputs[0])
            raise RuntimeError("bug in the pass")

    model = load()
    pm = PassManager(api.parse_pipeline("dce, half-explode", registry(HalfThenExplode)), strict=True)
    with pytest.raises(PassFailed, match="pass half-explode failed and was rolled back: RuntimeError: bug in the pass"):
        pm.execute(model, PassContext(model))
    assert [(r.name, r.rolled_back) for r in pm.records()] == [("dce", False), ("half-explode", True)]
    assert [n.op_type for n in model.graph.toposort()] == ["Identity", "Relu", "Abs"]  # dce's work, not the half
