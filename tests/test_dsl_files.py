"""Pipeline files: parse/format round trips, error messages, user rules, scopes, the tools."""

import json
import os
import shutil
import subprocess

import onnx
import pytest
from helpers import golden, model_from_text

from graphopt import driver as api
from graphopt.cli import main
from graphopt.dsl.format import format_file
from graphopt.dsl.lower import load_pipeline, shipped_pipelines
from graphopt.dsl.parser import parse_file
from graphopt.errors import PipelineError, ValidationError

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "dsl_corpus")
VALID = sorted(os.listdir(os.path.join(CORPUS, "valid")))


def labels(steps):
    return [(s.name, s.max_iterations, labels(s.passes)) if s.is_group else (s.label(), s.scope) for s in steps]


@pytest.mark.parametrize("name", VALID)
def test_valid_files_check_and_format_round_trip(name, tmp_path):
    path = os.path.join(CORPUS, "valid", name)
    text = open(path).read()
    once = format_file(parse_file(text, source=path))
    assert format_file(parse_file(once, source=path)) == once  # formatting its own output changes nothing
    formatted = tmp_path / name
    formatted.write_text(once)
    registry = api.default_registry()
    assert labels(load_pipeline(str(formatted), registry).steps) == labels(load_pipeline(path, registry).steps)


@pytest.mark.parametrize("name", sorted(shipped_pipelines()))
def test_shipped_pipelines_check_and_are_canonical(name):
    text = shipped_pipelines()[name]
    assert format_file(parse_file(text, source=name)) == text
    load_pipeline(name, api.default_registry())


def test_comments_survive_formatting():
    text = open(os.path.join(CORPUS, "valid", "comments.gopt")).read()
    out = format_file(parse_file(text, source="c.gopt"))
    assert out == "# header\n\n# about the pipeline\npipeline {\n    # a step comment\n    fuse\n    fold\n}\n"


INVALID = {
    "bad_method.gopt": "2:5: calibrate.method must be one of auto, minmax, percentile, entropy, mse, got 'kl'",
    "bad_option_value.gopt": "2:20: option 'lower' of pass 'fuse-batchnorm' expects bool, got 'maybe'",
    "fixpoint_zero.gopt": "2:5: a fixpoint needs at least 1 iteration",
    "missing_include.gopt": "1:1: cannot include 'nope.gopt': no such pipeline file or shipped pipeline",
    "rule_named_like_pass.gopt": "1:1: rule name 'fold' is already a pass or alias",
    "self_include.gopt": ": includes itself",
    "unclosed_brace.gopt": "3:1: expected '}', got end of input",
    "undefined_capture.gopt": "6:9: rule 'r': 'z' is not captured by the match block or built above",
    "unknown_function.gopt": "6:9: unknown function 'valu' (did you mean 'value'?)",
    "unknown_op.gopt": "6:9: unknown ONNX op 'Reluu' (did you mean 'Relu'?)",
    "unknown_option.gopt": "2:20: pass 'fuse-batchnorm' has no option 'lowr' (did you mean 'lower'?)",
    "unknown_pass.gopt": "2:5: unknown pass 'fuze' (did you mean 'fuse'?)",
    "unknown_pass_typo.gopt": "2:11: unknown pass 'fusee' (did you mean 'fuse'?)",
    "unknown_setting.gopt": "2:5: validate has no setting 'rtoll' (did you mean 'rtol'?)",
}


def test_every_invalid_file_has_an_expected_message():
    assert sorted(INVALID) == sorted(os.listdir(os.path.join(CORPUS, "invalid")))


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_files_name_the_position_and_the_problem(name):
    path = os.path.join(CORPUS, "invalid", name)
    with pytest.raises(PipelineError) as e:
        load_pipeline(path, api.default_registry())
    first, *rest = str(e.value).splitlines()
    assert first.startswith(path) and INVALID[name] in first
    if INVALID[name][0].isdigit():  # positioned: the line and a caret under the column
        line_text, caret = rest
        col = int(INVALID[name].split(":")[1])
        assert caret.strip() == "^" and len(caret) - 4 == col


def test_check_and_fmt_commands(tmp_path, capsys):
    f = tmp_path / "p.gopt"
    f.write_text("pipeline {\n  fold ,  fuse\n}\n")
    assert main(["check", str(f)]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["fmt", "--check", str(f)]) == 1
    assert main(["fmt", str(f)]) == 0
    assert capsys.readouterr().out == "pipeline {\n    fold\n    fuse\n}\n"
    assert main(["fmt", "--write", str(f)]) == 0 and main(["fmt", "--check", str(f)]) == 0
    bad = tmp_path / "bad.gopt"
    bad.write_text("pipeline {\n    fuze\n}\n")
    proc = subprocess.run([shutil.which("graphopt"), "check", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [f"graphopt: error: {bad}:2:5: unknown pass 'fuze' (did you mean 'fuse'?)",
                                        "        fuze", "        ^"]


# ------------------------------------------------------------------------------ user rules
def mbv3(exporter):
    return golden.build(next(m for m in golden.CORPUS if m.name == f"mobilenetv3_block_{exporter}"))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_hardswish_rule_on_an_exported_mobilenetv3_block(exporter, tmp_path, capsys):
    out = tmp_path / "o.onnx"
    code = main([mbv3(exporter), "--pipeline", "trt-fp32", "-o", str(out), "--explain", "hardswish", "-q"])
    assert code == 0
    ops = [n.op_type for n in onnx.load(out).graph.node]
    assert ops.count("HardSwish") == 2
    # the squeeze-excite gate h * hsigmoid(s) multiplies another tensor: not a HardSwish
    assert ops.count("Clip") == 1 and ops.count("BatchNormalization") == 0
    err = capsys.readouterr().err
    assert "explain hardswish: fired 2 times" in err


RULES = os.path.join(HERE, "dsl_corpus", "valid", "everything.gopt")


def hswish_model(div=6.0, opset=17, spelling="div", out_extra=False):
    body = {
        "div": "m = Mul (x, c)\n y = Div (m, k)",
        "sixth": "m = Mul (x, c)\n y = Mul (m, k)",
    }[spelling]
    k = div if spelling == "div" else 1 / div
    extra = ", float[2, 8] c" if out_extra else ""
    return model_from_text(f"""
    <ir_version: 8, opset_import: ["" : {opset}]>
    m (float[2, 8] x) => (float[2, 8] y{extra}) {{
        three = Constant <value = float {{3.0}}> ()
        lo = Constant <value = float {{0.0}}> ()
        hi = Constant <value = float {{6.0}}> ()
        k = Constant <value = float {{{k}}}> ()
        p = Add (x, three)
        c = Clip (p, lo, hi)
        {body}
    }}
    """)


def run_rules(proto, tmp_path, pipeline_text, **kw):
    f = tmp_path / "r.gopt"
    f.write_text(pipeline_text)
    cfg = load_pipeline(str(f), api.default_registry())
    return api.optimize(proto, cfg.steps, strict=True, **kw)


HSWISH = 'include "hardswish"\npipeline {\n    hardswish\n    dce\n}\n'


@pytest.mark.parametrize("spelling", ["div", "sixth"])
def test_hardswish_rule_fires_on_its_spellings(spelling, tmp_path):
    result = run_rules(hswish_model(spelling=spelling), tmp_path, HSWISH)
    assert [n.op_type for n in result.model.graph.nodes] == ["HardSwish"]
    assert result.records[0].stats == {"fired": 1}


def test_hardsigmoid_spelling_fires_and_a_different_alpha_does_not(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[2, 8] x) => (float[2, 8] y) {
        s = HardSigmoid <alpha = ALPHA, beta = 0.5> (x)
        y = Mul (x, s)
    }
    """
    fired = run_rules(model_from_text(text.replace("ALPHA", "0.16666667")), tmp_path, HSWISH)
    assert [n.op_type for n in fired.model.graph.nodes] == ["HardSwish"]
    kept = run_rules(model_from_text(text.replace("ALPHA", "0.2")), tmp_path, HSWISH)  # Keras' hard sigmoid
    assert [n.op_type for n in kept.model.graph.nodes] == ["HardSigmoid", "Mul"]


@pytest.mark.parametrize("kw,reason", [
    ({"div": 5.0}, "approx(value(six), 6) is false"),
    ({"opset": 13}, "opset() >= 14 is false"),
])
def test_hardswish_twins_that_must_not_fire(kw, reason, tmp_path):
    result = run_rules(hswish_model(**kw), tmp_path, HSWISH, explain={"hardswish"})
    assert "HardSwish" not in [n.op_type for n in result.model.graph.nodes]
    assert any(reason in nm.reason for nm in result.near_misses)


def test_a_user_rule_never_rewrites_a_value_read_elsewhere(tmp_path):
    result = run_rules(hswish_model(out_extra=True), tmp_path, HSWISH, explain={"hardswish"})
    assert "HardSwish" not in [n.op_type for n in result.model.graph.nodes]
    assert any("is a graph output" in nm.reason for nm in result.near_misses)


def test_a_wrong_user_rule_is_caught_by_validation_and_rolled_back(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[2, 8] x) => (float[2, 8] y) {
        k = Constant <value = float {2.0}> ()
        k2 = Constant <value = float {3.0}> ()
        a = Mul (x, k)
        y = Mul (a, k2)
    }
    """
    f = tmp_path / "r.gopt"
    f.write_text(open(RULES).read())
    cfg = load_pipeline(str(f), api.default_registry())
    with pytest.raises(ValidationError, match="first broken by pass scale-fix"):
        api.optimize(model_from_text(text), cfg.steps, strict=True)
    result = api.optimize(model_from_text(text), cfg.steps)
    assert "scale-fix" in result.rolled_back


def test_scoped_steps_only_touch_the_nodes_they_name(tmp_path):
    from onnx import helper, numpy_helper
    from test_fuse_passes import arr, bn_inits, bn_node, model

    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"], name="body/conv"), bn_node("c1", "y1", "b1", name="body/bn"),
             helper.make_node("Conv", ["x", "w"], ["c2"], name="head/conv"), bn_node("c2", "y2", "b2", name="head/bn")]
    m = model(nodes, [numpy_helper.from_array(arr(6, 4, 3, 3), "w")] + bn_inits(6, "b1") + bn_inits(6, "b2"),
              [("x", [1, 4, 5, 5])], [("y1", None), ("y2", None)])
    result = api.optimize(m, 'fuse-batchnorm except nodes ["head/*"]', strict=True)
    names = sorted(n.name for n in result.model.graph.nodes if n.op_type == "BatchNormalization")
    assert names == ["head/bn"]
    result = api.optimize(m, "fold, fuse-batchnorm on ops [Conv]", strict=True)  # BN roots are not Conv
    assert len([n for n in result.model.graph.nodes if n.op_type == "BatchNormalization"]) == 2


def test_pipeline_file_settings_reach_the_run(tmp_path, capsys):
    src = mbv3("torchscript")
    f = tmp_path / "p.gopt"
    f.write_text('input x: 3x16x16x16\nvalidate {\n    draws = 2\n    rtol = 0.001\n}\npipeline {\n    fold\n}\n')
    rep = tmp_path / "r.json"
    assert main([src, "--pipeline", str(f), "-o", str(tmp_path / "o.onnx"), "--report", str(rep), "-q"]) == 0
    report = json.loads(rep.read_text())
    assert report["validation"]["draws"] == 2
    dims = [d.dim_value for d in onnx.load(tmp_path / "o.onnx").graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, 16, 16, 16]


def test_inline_pipelines_take_fixpoints_and_scopes():
    steps = api.parse_pipeline("fixpoint 2 { fold, fuse }, fuse-batchnorm on ops [BatchNormalization]",
                               api.default_registry())
    assert steps[0].max_iterations == 2 and steps[1].scope.ops == ("BatchNormalization",)


def test_hardswish_rule_fires_on_the_min_relu_spelling(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[2, 8] x) => (float[2, 8] y) {
        three = Constant <value = float {3.0}> ()
        six = Constant <value = float {6.0}> ()
        p = Add (three, x)
        r = Relu (p)
        c = Min (r, six)
        m = Mul (c, x)
        y = Div (m, six)
    }
    """
    result = run_rules(model_from_text(text), tmp_path, HSWISH)
    assert [n.op_type for n in result.model.graph.nodes] == ["HardSwish"]  # operands swapped: still found


def test_formatting_never_loses_a_comment():
    text = ('# top\ninclude "hardswish"   # why\n\nvalidate {  # v\n    rtol = 0.001  # loose\n}\n'
            'pipeline {  # head\n    fold  # one\n    fixpoint 2 {\n        fuse\n    }  # after a brace\n}\n'
            'rule r {\n    match {\n        a = Neg(x)  # inner\n        y = Neg(a)\n    }\n    replace {\n'
            '        y = Identity(x)\n    }\n}  # the end\n')
    once = format_file(parse_file(text, source="c.gopt"))
    for comment in ("# top", "# why", "# v", "# loose", "# head", "# one", "# after a brace", "# inner", "# the end"):
        assert comment in once
    assert "include \"hardswish\"  # why" in once and "    fold  # one" in once
    assert format_file(parse_file(once, source="c.gopt")) == once


def test_readme_pipeline_example_checks_and_is_canonical(tmp_path):
    readme = open(os.path.join(os.path.dirname(HERE), "README.md")).read()
    start = readme.index("# trt.gopt")
    example = readme[start:readme.index("```", start)]
    f = tmp_path / "trt.gopt"
    f.write_text(example)
    load_pipeline(str(f), api.default_registry())
    assert format_file(parse_file(example, source="trt.gopt")) == example
