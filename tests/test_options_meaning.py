"""Issue 17, point 2: an option means what it says. One that does not apply to the chosen
method is a usage error naming the method it belongs to; prune-channels alone prunes channels;
calibration data nothing uses is a warning, and -q never hides a warning."""

import os

import onnx
import pytest
from helpers import golden

import graphopt
from graphopt.cli import main
from graphopt.errors import PipelineError

DIGITS = os.path.join(golden.HERE, "trained", "digits_cnn")


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("passes,message", [
    ("prune{ratio=0.3}", "option 'ratio' applies only to method=channel, not method=magnitude"),
    ("prune{method=2:4,criterion=l1}", "option 'criterion' applies only to method=channel, not method=2:4"),
    ("prune{method=channel,sparsity=0.5}", "option 'sparsity' applies only to method=magnitude, not method=channel"),
    ("prune{method=2:4,sparsity=0.5}", "option 'sparsity' applies only to method=magnitude, not method=2:4"),
    ("prune{method=2:4,allocation=layer}", "option 'allocation' applies only to method=magnitude or method=channel"),
    ("prune-weights{method=2:4,sparsity=0.5}", "option 'sparsity' applies only to method=magnitude"),
    ("prune-channels{method=magnitude,ratio=0.2}", "option 'ratio' applies only to method=channel"),
])
def test_an_option_of_another_method_is_a_usage_error(tmp_path, capsys, passes, message):
    out = tmp_path / "o.onnx"
    code, _, err = run_cli(capsys, DIGITS + ".onnx", "-p", passes, "-o", out)
    assert code == 2 and message in err and not out.exists()
    with pytest.raises(PipelineError, match=message):
        graphopt.optimize(DIGITS + ".onnx", passes)


@pytest.mark.parametrize("passes", ["prune{method=channel,ratio=0.3,allocation=global}", "prune{sparsity=0.3}",
                                    "prune{allocation=layer}", "prune{method=2:4}", "prune-channels{ratio=0.2}"])
def test_options_of_the_chosen_method_are_accepted(passes):
    r = graphopt.optimize(DIGITS + ".onnx", passes, validate=False)
    assert r.pass_reports  # something was pruned


def test_prune_channels_alone_prunes_channels():
    r = graphopt.optimize(DIGITS + ".onnx", "prune-channels", validate=False)
    c = r.pass_reports["prune-channels"]
    assert c["layers"] and c["after"]["params"] < c["before"]["params"]
    # in the prune alias it acts only for method=channel
    r = graphopt.optimize(DIGITS + ".onnx", "prune", validate=False)
    assert "prune-channels" not in r.pass_reports and r.pass_reports["prune-weights"]["method"] == "magnitude"


def test_calibration_data_nothing_uses_is_a_warning_even_under_quiet(tmp_path, capsys):
    calib = DIGITS + ".calib.npz"
    code, _, err = run_cli(capsys, DIGITS + ".onnx", "-p", "fuse", "-o", tmp_path / "a.onnx", "--calib", calib,
                           "--no-validate", "-q")
    assert code == 0
    assert err == ("graphopt: WARNING: the calibration data is not used: no pass calibrates or measures on it "
                   "(int8, fp16/bf16, a prune max_drop budget) and validation is off\n")
    # validation uses it: no warning
    code, _, err = run_cli(capsys, DIGITS + ".onnx", "-p", "fuse", "-o", tmp_path / "b.onnx", "--calib", calib)
    assert code == 0 and "not used" not in err
    # a pass that measures on it: no warning
    code, _, err = run_cli(capsys, DIGITS + ".onnx", "-p", "prune{max_drop=100}", "-o", tmp_path / "c.onnx",
                           "--calib", calib, "--no-validate")
    assert code == 0 and "not used" not in err
    r = graphopt.optimize(DIGITS + ".onnx", "fuse", calibration=calib, validate=False)
    assert any("calibration data is not used" in w for w in r.warnings)


def test_quiet_still_prints_a_rollback(tmp_path, capsys, monkeypatch):
    """-q hides progress; a pass rolled back changes what the result is, so it prints."""
    from graphopt.passes.eliminate_identity import EliminateIdentity
    from helpers import model_from_text

    def breaks(self, graph, ctx):
        for n in list(graph.nodes):
            if n.op_type == "Relu":
                n.op_type = "Sigmoid"  # computes something else: validation fails, bisection names it
        from graphopt.pipeline.base import PassResult
        return PassResult(True)

    monkeypatch.setattr(EliminateIdentity, "run", breaks)
    src = tmp_path / "m.onnx"
    onnx.save(model_from_text("""
<ir_version: 8, opset_import: ["" : 17]>
m (float[2, 3] x) => (float[2, 3] y) {
    y = Relu (x)
}
"""), src)
    code, out, err = run_cli(capsys, src, "-p", "eliminate-identity", "-o", tmp_path / "o.onnx", "-q")
    assert code == 0 and out == ""
    assert "first broken by pass eliminate-identity; rolling it back" in err
