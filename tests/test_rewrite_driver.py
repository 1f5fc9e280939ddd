"""The rewrite driver and its rule API, on small graphs built directly in the IR: matching and
captures, declines with a reason, escape refusal, commutative matching, stamping, rollback of a
rule that raises, scope filtering, and RulePass."""

import numpy as np
import pytest
from helpers import model_from_text

from graphopt import driver as api
from graphopt.ir import Graph
from graphopt.ir.dtypes import DataType
from graphopt.onnx_io import load as frontend
from graphopt.pipeline.base import NodeScope, PassContext
from graphopt.rewrite import (
    Driver,
    Op,
    Opt,
    RewriteContext,
    Rule,
    RulePass,
    Var,
    match,
    matches,
)

OPSET = 17


def double_neg_graph():
    """x -> Neg(a) -> Neg(b) -> Relu(y); y is the graph output."""
    g = Graph("g")
    x = g.add_input("x", DataType.FLOAT, (2, 3))
    inner = g.add_node("Neg", [x], ["a"], name="inner")
    outer = g.add_node("Neg", [inner.outputs[0]], ["b"], name="outer")
    relu = g.add_node("Relu", [outer.outputs[0]], ["y"], name="relu")
    g.outputs = [relu.outputs[0]]
    return g, x, inner, outer, relu


class DoubleNeg(Rule):
    name = "double-neg"
    pattern = Op("Neg", Op("Neg", Var("x"), name="inner"), name="outer")

    def rewrite(self, m, b):
        return [m["x"]]


class Declines(DoubleNeg):
    name = "declines"

    def check(self, m):
        return "not today"


def run(g, rules, filter_node=None, **kw):
    near_misses = []
    fired = Driver(rules, opset=OPSET, near_misses=near_misses, **kw).run(g, filter_node)
    return fired, near_misses


def ops(g):
    return [n.op_type for n in g.toposort()]


# ------------------------------------------------------------------------------ match
def test_a_match_gives_its_captures_by_name():
    g, x, inner, outer, relu = double_neg_graph()
    ctx = RewriteContext(g, OPSET)
    m = match(DoubleNeg.pattern, outer, ctx)
    assert m is not None
    assert m["x"] is x and m.value("x") is x
    assert m["inner"] is inner and m.node("outer") is outer
    assert m.matched == [outer, inner] and m.root is outer and m.ctx.opset == OPSET
    with pytest.raises(TypeError):
        m.value("inner")
    with pytest.raises(TypeError):
        m.node("x")
    assert match(DoubleNeg.pattern, inner, ctx) is None  # x has no producer


def test_an_absent_optional_input_is_bound_to_none_and_const_folds():
    g = Graph("g")
    x = g.add_input("x", DataType.FLOAT, (2,))
    w = g.add_constant(np.array([2.0, 3.0], np.float32), "w")
    n = g.add_node("Mul", [x, w], ["y"])
    g.outputs = [n.outputs[0]]
    m = match(Op("Mul", Var("x"), Var("w"), Opt(Var("extra"))), n, RewriteContext(g, OPSET))
    assert m["extra"] is None
    assert m.const("x") is None and list(m.const("w")) == [2.0, 3.0]


def test_a_rule_fires_and_its_match_is_removed():
    g, x, inner, outer, relu = double_neg_graph()
    fired, _ = run(g, [DoubleNeg()])
    assert fired == {"double-neg": 1}
    assert ops(g) == ["Relu"] and relu.inputs[0] is x


# ------------------------------------------------------------------------------ decline
def test_a_decline_is_recorded_with_its_reason_only_under_explain():
    g, *_ = double_neg_graph()
    fired, near = run(g, [Declines()], explain={"declines"})
    assert fired == {} and ops(g) == ["Neg", "Neg", "Relu"]
    assert [(nm.rule, nm.node, nm.reason) for nm in near] == [("declines", "outer", "not today")]
    _, near = run(g, [Declines()])
    assert near == []


def test_a_decline_is_recorded_once_per_run_not_once_per_round():
    g, x, inner, outer, relu = double_neg_graph()
    other = g.add_node("Neg", [x], ["c"], name="other")
    g.add_node("Neg", [other.outputs[0]], ["d"], name="other2")  # a second round: this pair fires
    g.outputs = g.outputs + [g.nodes[-1].outputs[0]]

    class OnlyOther(DoubleNeg):
        name = "only-other"

        def check(self, m):
            return None if m.root.name == "other2" else "not this one"

    fired, near = run(g, [OnlyOther()], explain={"only-other"})
    assert fired == {"only-other": 1}
    assert sorted((nm.node, nm.reason) for nm in near) == [("other2", "fired"), ("outer", "not this one")]


def test_a_firing_is_recorded_under_explain():
    g, *_ = double_neg_graph()
    _, near = run(g, [DoubleNeg()], explain={"double-neg"})
    assert [(nm.node, nm.reason) for nm in near] == [("outer", "fired")]


# ------------------------------------------------------------------------------ escapes
def test_an_inner_value_read_outside_the_match_is_refused():
    g, x, inner, outer, relu = double_neg_graph()
    g.add_node("Sigmoid", [inner.outputs[0]], ["s"], name="other")
    fired, near = run(g, [DoubleNeg()], explain={"double-neg"})
    assert fired == {} and ops(g).count("Neg") == 2
    assert "also read by Sigmoid 'other'" in near[0].reason


def test_an_inner_value_that_is_a_graph_output_is_refused():
    g, x, inner, outer, relu = double_neg_graph()
    g.outputs = g.outputs + [inner.outputs[0]]
    fired, near = run(g, [DoubleNeg()], explain={"double-neg"})
    assert fired == {} and ops(g).count("Neg") == 2
    assert "'a' inside the match is a graph output" in near[0].reason


def test_forwarding_to_a_value_that_cannot_take_the_output_name_declines():
    from graphopt.passes.eliminate_identity import RemoveIdentity

    g = Graph("g")
    x = g.add_input("x", DataType.FLOAT, (2,))
    ident = g.add_node("Identity", [x], ["y"], name="id")
    g.outputs = [ident.outputs[0]]
    fired, near = run(g, [RemoveIdentity()], explain={"remove-identity"})
    assert fired == {} and ops(g) == ["Identity"] and g.outputs[0].name == "y"
    assert "is a graph output" in near[0].reason and "Identity would be needed" in near[0].reason


# ------------------------------------------------------------------------------ commutative
def add_of_neg(neg_first: bool):
    g = Graph("g")
    x = g.add_input("x", DataType.FLOAT, (2,))
    c = g.add_input("c", DataType.FLOAT, (2,))
    neg = g.add_node("Neg", [x], ["n"], name="neg")
    ins = [neg.outputs[0], c] if neg_first else [c, neg.outputs[0]]
    add = g.add_node("Add", ins, ["y"], name="add")
    g.outputs = [add.outputs[0]]
    return g, x, c, neg, add


@pytest.mark.parametrize("neg_first", [True, False])
def test_a_commutative_op_matches_its_inputs_in_either_order(neg_first):
    g, x, c, neg, add = add_of_neg(neg_first)
    ctx = RewriteContext(g, OPSET)
    pattern = Op("Add", Op("Neg", Var("x"), name="neg"), Var("c"), commute=True)
    m = match(pattern, add, ctx)
    assert m is not None and m["x"] is x and m["c"] is c and m["neg"] is neg
    fixed = Op("Add", Op("Neg", Var("x")), Var("c"))
    assert (match(fixed, add, ctx) is not None) == neg_first


def test_a_repeated_capture_binds_one_value_across_the_swap():
    g = Graph("g")
    a = g.add_input("a", DataType.FLOAT, (2,))
    b = g.add_input("b", DataType.FLOAT, (2,))
    neg = g.add_node("Neg", [a], ["n"])
    same = g.add_node("Mul", [neg.outputs[0], a], ["p"])  # Neg(a) * a
    other = g.add_node("Mul", [neg.outputs[0], b], ["q"])  # Neg(a) * b
    g.outputs = [same.outputs[0], other.outputs[0]]
    pattern = Op("Mul", Var("x"), Op("Neg", Var("x")), commute=True)
    ctx = RewriteContext(g, OPSET)
    m = match(pattern, same, ctx)
    assert m is not None and m["x"] is a
    assert match(pattern, other, ctx) is None


def test_the_driver_tries_the_other_order_when_the_first_declines():
    g = Graph("g")
    x = g.add_input("x", DataType.FLOAT, (2,))
    one = g.add_constant(np.ones(2, np.float32), "one")
    mul = g.add_node("Mul", [one, x], ["y"], name="mul")  # constant first
    relu = g.add_node("Relu", [mul.outputs[0]], ["z"])
    g.outputs = [relu.outputs[0]]

    class TimesOne(Rule):
        name = "times-one"
        pattern = Op("Mul", Var("x"), Var("c"), commute=True)

        def check(self, m):
            c = m.const("c")
            return None if c is not None and np.all(c == 1) else "c is not all ones"

        def rewrite(self, m, b):
            return [m["x"]]

    assert len(list(matches(TimesOne.pattern, mul, RewriteContext(g, OPSET)))) == 2
    fired, near = run(g, [TimesOne()], explain={"times-one"})
    assert fired == {"times-one": 1} and ops(g) == ["Relu"] and relu.inputs[0] is x
    assert [nm.reason for nm in near] == ["fired"]


def test_a_decline_in_both_orders_is_one_near_miss_with_both_reasons():
    g, x, c, neg, add = add_of_neg(True)

    class Picky(Rule):
        name = "picky"
        pattern = Op("Add", Var("p"), Var("q"), commute=True)

        def check(self, m):
            return f"p is {m['p'].name}"

    fired, near = run(g, [Picky()], explain={"picky"})
    assert fired == {} and [nm.reason for nm in near] == ["p is n; in another operand order: p is c"]


def test_commute_needs_two_inputs():
    with pytest.raises(ValueError):
        Op("Sum", Var("a"), Var("b"), Var("c"), commute=True)


def test_a_user_rule_compiles_to_one_commutative_rule():
    from graphopt.dsl.parser import parse_file
    from graphopt.dsl.rules import compile_rule

    text = "rule r {\n    match {\n        p = Add(x, k)\n        y = Mul(p, x)\n    }\n    replace {\n        y = Neg(x)\n    }\n}\n"
    rule = compile_rule(parse_file(text, source="r.gopt").statements[0])
    assert rule.pattern.commute and rule.pattern.inputs[0].commute


# ------------------------------------------------------------------------------ stamping
def test_created_nodes_carry_the_rule_name():
    g, x, inner, outer, relu = double_neg_graph()

    class ToAbs(Rule):
        name = "to-abs"
        pattern = DoubleNeg.pattern

        def rewrite(self, m, b):
            return [b.op("Abs", [b.op("Mul", [m["x"], b.const(np.float32(1.0), "one")])])]

    run(g, [ToAbs()])
    created = [n for n in g.nodes if n.op_type in ("Abs", "Mul")]
    assert len(created) == 2 and ops(g) == ["Mul", "Abs", "Relu"]
    for n in created:
        assert n.doc_string == "created by graphopt rule to-abs" and "to-abs" in n.name
    assert any("to-abs" in v.name for v in g.initializers)


# ------------------------------------------------------------------------------ failure
class Boom(Exception):
    pass


def test_a_rule_that_raises_mid_rewrite_leaves_nothing_behind():
    g, x, inner, outer, relu = double_neg_graph()
    before = ([n.id for n in g.nodes], [v.id for v in g.values])

    class HalfBuilt(Rule):
        name = "half-built"
        pattern = DoubleNeg.pattern

        def rewrite(self, m, b):
            mid = b.op("Abs", [m["x"]])
            b.op("Mul", [mid, b.const(np.float32(2.0), "two")])
            b.set_input(m.node("inner"), 0, mid)  # an in-place edit, undone too
            raise Boom()

    with pytest.raises(Boom):
        run(g, [HalfBuilt()])
    assert ([n.id for n in g.nodes], [v.id for v in g.values]) == before
    assert inner.inputs == [x] and ops(g) == ["Neg", "Neg", "Relu"]
    g.verify()


def test_in_place_edits_are_limited_to_matched_nodes():
    g, x, inner, outer, relu = double_neg_graph()

    class Reaches(Rule):
        name = "reaches"
        pattern = DoubleNeg.pattern

        def rewrite(self, m, b):
            b.set_input(relu, 0, m["x"])

    with pytest.raises(ValueError, match="only the nodes it matched"):
        run(g, [Reaches()])
    assert relu.inputs[0] is outer.outputs[0]


def test_an_in_place_rewrite_keeps_the_root():
    g, x, inner, outer, relu = double_neg_graph()

    class Rewire(Rule):
        name = "rewire"
        pattern = Op("Relu", Op("Neg", Var("x"), name="neg"), name="relu")

        def check(self, m):
            return None if m.node("neg").inputs[0] is not x else "already rewired"

        def rewrite(self, m, b):
            b.set_input(m.node("neg"), 0, x)  # the root stays; nothing is replaced

    fired, _ = run(g, [Rewire()])
    assert fired == {"rewire": 1}
    assert relu in g and outer in g and outer.inputs[0] is x
    assert inner in g and not inner.outputs[0].uses  # outside the match: dead code is dce's job


# ------------------------------------------------------------------------------ scope
@pytest.mark.parametrize("excluded,fires", [(None, True), ("outer", False), ("inner", False), ("relu", True)])
def test_every_matched_node_must_be_in_scope(excluded, fires):
    g, *_ = double_neg_graph()
    fired, _ = run(g, [DoubleNeg()], filter_node=lambda n: n.name != excluded)
    assert (fired == {"double-neg": 1}) == fires
    assert ops(g) == (["Relu"] if fires else ["Neg", "Neg", "Relu"])


# ------------------------------------------------------------------------------ RulePass
class DoubleNegPass(RulePass):
    name = "double-neg-pass"
    rules = [DoubleNeg()]
    shapes = False
    stat = "removed"


TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
m (float[2, 3] x) => (float[2, 3] y) {
    a = Neg (x)
    b = Neg (a)
    y = Relu (b)
}
"""


@pytest.mark.parametrize("scope,removed", [(None, 1), (NodeScope(ops=("Neg",)), 1), (NodeScope(except_ops=("Neg",)), 0)])
def test_a_rule_pass_runs_its_rules_within_the_scope(scope, removed):
    model = frontend.load(model_from_text(TEXT))
    ctx = PassContext(model, scope=scope, explain={"double-neg"})
    result = DoubleNegPass(scope=scope).run(model.graph, ctx)
    assert result.modified == bool(removed) and result.stats == {"removed": removed}
    assert len(model.graph.nodes) == 3 - 2 * removed
    assert [nm.reason for nm in ctx.near_misses] == (["fired"] if removed else [])


def test_a_rule_pass_without_a_root_op_is_a_no_op():
    model = frontend.load(model_from_text(TEXT.replace("Neg", "Abs")))
    result = DoubleNegPass().run(model.graph, PassContext(model))
    assert not result.modified and result.stats == {"removed": 0}


def test_explain_covers_the_local_rewrites(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[2, 3] x) => (float[2, 3] y, float[2, 3] z) {
        y = Identity (x)
        c = Cast <to = 1> (x)
        d = Cast <to = 11> (x)
        e = Cast <to = 1> (d)
        z = Add (c, e)
    }
    """
    result = api.optimize(model_from_text(text), "eliminate-identity,eliminate-noops",
                          explain={"remove-identity", "noop-cast"}, strict=True)
    got = sorted((nm.rule, nm.reason) for nm in result.near_misses)
    assert got[0][0] == "noop-cast" and got[0][1] == "fired"
    assert ("noop-cast", "it changes the type, or x's type is unknown") in got
    assert any(r == "remove-identity" and "graph output" in why for r, why in got)


def test_explain_names_an_existing_rule(tmp_path, capsys):
    from graphopt.cli import main

    src = tmp_path / "m.onnx"
    src.write_bytes(model_from_text(TEXT).SerializeToString())
    out = str(tmp_path / "o.onnx")
    assert main([str(src), "-p", "fold", "-o", out, "--explain", "noop-cats", "-q"]) != 0
    err = capsys.readouterr().err
    assert "no such rule" in err and "did you mean 'noop-cast'" in err
    assert main([str(src), "-p", "fold", "-o", out, "--explain", "remove-identity", "--force"]) == 0
    assert "explain remove-identity: no node matched its pattern" in capsys.readouterr().err
