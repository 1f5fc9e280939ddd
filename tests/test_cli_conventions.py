"""Issue 17, point 1: the command line behaves like the tools it sits beside (onnxsim, onnxslim,
polygraphy): --version, subcommands in --help, a misspelled subcommand, the positional output,
the input-shape spellings, the common flags on every subcommand, every exit code, a closed pipe."""

import os
import shutil
import subprocess
import sys

import onnx
import pytest
from helpers import golden, model_from_text

from graphopt.cli import main

MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
m (float[N, 3] x) => (float[N, 3] y) {
    a = Identity (x)
    b = Relu (a)
    y = Abs (b)
}
"""

TWO_INPUTS = """
<ir_version: 8, opset_import: ["" : 17]>
m (float[N, 3] x, float[N, 3] z) => (float[N, 3] y) {
    y = Add (x, z)
}
"""

DIGITS = os.path.join(golden.HERE, "trained", "digits_cnn.onnx")


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(model_from_text(MODEL), p)
    return p


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def graphopt_exe() -> str:
    exe = shutil.which("graphopt")
    assert exe, "the graphopt console script is not installed"
    return exe


def test_version(capsys):
    import graphopt

    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out == f"graphopt {graphopt.__version__}\n"
    proc = subprocess.run([graphopt_exe(), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"graphopt {graphopt.__version__}"


def test_help_lists_every_subcommand_and_the_exit_codes():
    from graphopt.cli.main import SUBCOMMANDS

    proc = subprocess.run([graphopt_exe(), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for name in SUBCOMMANDS:
        assert f"\n  {name} " in proc.stdout, name
    assert "exit codes: 0 ok, 1 bad input, 2 usage, 3 accuracy or validation, 4 checker findings, 70 internal" \
        in proc.stdout


def test_misspelled_subcommand_is_a_usage_error_with_a_suggestion(tmp_path, capsys):
    code, out, err = run_cli(capsys, "inpsect", "m.onnx")
    assert code == 2 and out == ""
    assert "unknown command 'inpsect' (did you mean 'inspect'?)" in err and err.count("\n") == 1
    proc = subprocess.run([graphopt_exe(), "trt-chek", "m.onnx"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "did you mean 'trt-check'" in proc.stderr


def test_a_model_path_that_looks_like_a_subcommand_is_still_a_model(tmp_path, capsys, monkeypatch):
    onnx.save(model_from_text(MODEL), tmp_path / "inspekt")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "inspekt", "-p", "none", "-o", "o.onnx")
    assert code == 0, err and (tmp_path / "o.onnx").exists()


def test_positional_output_like_onnxsim(tmp_path, model_file, capsys):
    out = tmp_path / "o.onnx"
    code, _, err = run_cli(capsys, model_file, out, "-p", "cleanup")
    assert code == 0, err
    assert [n.op_type for n in onnx.load(out).graph.node] == ["Relu", "Abs"]


def test_positional_and_dash_o_output_together_is_a_usage_error(tmp_path, model_file):
    proc = subprocess.run([graphopt_exe(), str(model_file), str(tmp_path / "a.onnx"), "-o", str(tmp_path / "b.onnx"),
                           "-p", "none"], capture_output=True, text=True)
    assert proc.returncode == 2 and "give the output once" in proc.stderr and proc.stderr.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


@pytest.mark.parametrize("flags", [
    ["--input-shape", "x:4x3"],
    ["--input-shape", "x:4,3"],
    ["--input-shape", "4x3"],
    ["--input-shape", "4,3"],
    ["--input-shapes", "x:4,3"],
])
def test_input_shape_spellings(tmp_path, model_file, capsys, flags):
    out = tmp_path / "o.onnx"
    code, _, err = run_cli(capsys, model_file, "-p", "none", "-o", out, *flags)
    assert code == 0, err
    assert [d.dim_value for d in onnx.load(out).graph.input[0].type.tensor_type.shape.dim] == [4, 3]


def test_input_shapes_takes_several_specs_after_one_flag(tmp_path, capsys):
    src, out = tmp_path / "two.onnx", tmp_path / "o.onnx"
    onnx.save(model_from_text(TWO_INPUTS), src)
    code, _, err = run_cli(capsys, src, out, "--input-shapes", "x:2,3", "z:2x3", "-p", "none")
    assert code == 0, err
    dims = [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in onnx.load(out).graph.input]
    assert dims == [[2, 3], [2, 3]]
    # a bare shape needs a model with one input
    code, _, err = run_cli(capsys, src, tmp_path / "p.onnx", "--input-shape", "2x3", "-p", "none")
    assert code == 2 and "gives no input name, and the model has 2 inputs (x, z)" in err


@pytest.mark.parametrize("sub", [["inspect", "{m}"], ["sparsity", "{m}"], ["trt-check", "{m}"], ["qdq-lint", "{m}"],
                                 ["passes"], ["{m}", "-p", "none", "-o", "{out}"]])
@pytest.mark.parametrize("flag", ["--debug", "-v", "-q"])
def test_every_subcommand_takes_debug_verbose_quiet(tmp_path, model_file, capsys, sub, flag):
    args = [a.format(m=model_file, out=tmp_path / "o.onnx") for a in sub]
    code, _, err = run_cli(capsys, *args, flag)
    assert code == 0, err
    assert "unrecognized arguments" not in err


def test_exit_code_0_1_2(tmp_path, model_file, capsys):
    assert run_cli(capsys, model_file, "-p", "none", "-o", tmp_path / "ok.onnx")[0] == 0
    assert run_cli(capsys, tmp_path / "missing.onnx", "-p", "none", "-o", tmp_path / "o.onnx")[0] == 1
    code, _, err = run_cli(capsys, model_file, "-o", tmp_path / "o.onnx")  # no -p
    assert code == 2 and "give passes with -p" in err
    code, _, err = run_cli(capsys, model_file, "-p", "none", "--pipeline", "trt-fp32", "-o", tmp_path / "o.onnx")
    assert code == 2 and "give -p or --pipeline, not both" in err
    code, _, err = run_cli(capsys, model_file, "-p", "none", "-o", tmp_path / "o.onnx", "--input-shape", "x:4xq")
    assert code == 2 and "expected NAME:DIMxDIM" in err
    proc = subprocess.run([graphopt_exe(), "inspect"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("graphopt: error: ")


def test_exit_code_3_accuracy_below_its_threshold(tmp_path, capsys):
    pipe = tmp_path / "strict.gopt"
    pipe.write_text("pipeline {\n    prune{sparsity=0.9}\n}\n\nvalidate {\n    min_cosine = 0.99999999\n}\n")
    out = tmp_path / "o.onnx"
    code, _, err = run_cli(capsys, DIGITS, "--pipeline", pipe, "-o", out)
    assert code == 3, err
    assert "below min_cosine 0.99999999" in err and not out.exists()


def test_exit_code_4_checker_findings(tmp_path, capsys):
    out = tmp_path / "s.onnx"
    assert run_cli(capsys, DIGITS, "-p", "prune{sparsity=0.5}", "-o", out, "--no-validate")[0] == 0
    code, out_text, _ = run_cli(capsys, "sparsity", out, "--require-2:4")
    assert code == 4 and "2:4 broken" in out_text


def test_exit_code_70_internal_error(model_file, capsys, monkeypatch):
    from graphopt.report import inspect as report

    def broken(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(report, "inspect", broken)
    code, _, err = run_cli(capsys, "inspect", model_file)
    assert code == 70 and err == ("graphopt: internal error: RuntimeError: a bug (run with --debug for a "
                                  "traceback)\n")


def test_closed_stdout_ends_quietly(model_file):
    """`graphopt inspect m.onnx | head -1`: no 'Broken pipe' error, as with any well-behaved tool."""
    for exe in ([graphopt_exe()], [sys.executable, "-m", "graphopt"]):
        for _ in range(3):
            r = subprocess.Popen([*exe, "inspect", str(model_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            r.stdout.close()  # the reader is gone before anything is written
            err = r.stderr.read().decode()
            r.wait()
            assert err == "" and r.returncode in (0, 141), (r.returncode, err)
    proc = subprocess.run(f"'{graphopt_exe()}' inspect '{model_file}' | head -1", shell=True,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "inputs:\n" and proc.stderr == ""
