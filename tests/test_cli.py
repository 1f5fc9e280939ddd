"""The command line: exit codes, one-line errors, nothing written on failure, reports."""

import json
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


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(model_from_text(MODEL), p)
    return p


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_optimize_writes_a_validated_model_and_a_report(tmp_path, model_file, capsys):
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    code, _, err = run_cli(capsys, model_file, "-p", "cleanup", "-o", out, "--report", rep)
    assert code == 0
    assert "3 -> 2 nodes" in err and "validation: outputs bitwise equal (3 draws)" in err
    assert [n.op_type for n in onnx.load(out).graph.node] == ["Relu", "Abs"]
    report = json.loads(rep.read_text())
    assert report["pipeline"] == "cleanup" and report["nodes_before"] == 3 and report["nodes_after"] == 2
    assert report["validation"]["ok"] and report["validation"]["bitwise_equal"]
    first = report["passes"][0]
    assert first["name"] == "eliminate-identity" and first["node_delta"] == -1 and first["modified"]
    assert {"seconds", "stats", "group", "rounds"} <= set(first)
    # one row per pass of the pipeline, each fixed-point round under "rounds"
    assert [(p["name"], p["group"], len(p["rounds"])) for p in report["passes"]] == [
        ("eliminate-identity", "cleanup", 2), ("dce", "cleanup", 2)]
    assert [r["iteration"] for r in first["rounds"]] == [0, 1] and report["warnings"] == []


def test_quiet_prints_nothing_and_verbose_logs_each_pass(tmp_path, model_file, capsys):
    code, out, err = run_cli(capsys, model_file, "-p", "cleanup", "-o", tmp_path / "q.onnx", "-q")
    assert code == 0 and out == "" and err == ""
    code, out, err = run_cli(capsys, model_file, "-p", "dce", "-o", tmp_path / "v.onnx", "-v")
    assert code == 0 and "dce" in err and "unchanged" in err


def test_input_shape_pins_symbolic_dims(tmp_path, model_file, capsys):
    out = tmp_path / "o.onnx"
    code, _, _ = run_cli(capsys, model_file, "-p", "none", "-o", out, "--input-shape", "x:4x3")
    assert code == 0
    dims = [d.dim_value for d in onnx.load(out).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [4, 3]


@pytest.mark.parametrize("spec,message,exit_code", [
    ("x:4x5", "does not match the model's input shape", 1),
    ("z:4x3", "names 'z', which is not a model input", 1),
    ("x:4xq", "expected NAME:DIMxDIM", 2),  # malformed: a usage error
    (":4x3", "expected NAME:DIMxDIM", 2),
])
def test_bad_input_shape(tmp_path, model_file, capsys, spec, message, exit_code):
    code, _, err = run_cli(capsys, model_file, "-p", "none", "-o", tmp_path / "o.onnx", "--input-shape", spec)
    assert code == exit_code and message in err and not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    (b"", "file is empty"),
    (b"garbage\xff\xfe" * 10, "not an ONNX model"),
    ("truncated", "not an ONNX model"),
])
def test_bad_input_files_get_one_line_and_write_nothing(tmp_path, capsys, content, message):
    src = tmp_path / "in.onnx"
    if content == "truncated":
        src.write_bytes(model_from_text(MODEL).SerializeToString()[:-5])
    elif content is not None:
        src.write_bytes(content)
    code, out, err = run_cli(capsys, src, "-p", "none", "-o", tmp_path / "o.onnx")
    assert code == 1
    assert err.startswith("graphopt: error: ") and message in err and err.count("\n") == 1
    assert "Traceback" not in err
    assert not (tmp_path / "o.onnx").exists()


def test_pipeline_errors_exit_2(tmp_path, model_file, capsys):
    code, _, err = run_cli(capsys, model_file, "-p", "dcee", "-o", tmp_path / "o.onnx")
    assert code == 2 and "unknown pass 'dcee' (did you mean 'dce'?)" in err
    code, _, err = run_cli(capsys, model_file, "-p", "dce,,", "-o", tmp_path / "o.onnx")
    assert code == 2 and "-p:1:5: expected 'fixpoint' or a name or end of input, got ','" in err
    code, _, err = run_cli(capsys, model_file, "-o", tmp_path / "o.onnx")
    assert code == 2 and "give passes with -p" in err
    assert not (tmp_path / "o.onnx").exists()


def test_existing_output_needs_force(tmp_path, model_file, capsys):
    out = tmp_path / "o.onnx"
    out.write_bytes(b"old")
    code, _, err = run_cli(capsys, model_file, "-p", "none", "-o", out)
    assert code == 1 and "exists (use --force to overwrite)" in err and out.read_bytes() == b"old"
    code, _, _ = run_cli(capsys, model_file, "-p", "none", "-o", out, "--force")
    assert code == 0 and onnx.load(out).graph.node


def test_never_overwrites_its_input(model_file, capsys):
    before = model_file.read_bytes()
    code, _, err = run_cli(capsys, model_file, "-p", "cleanup", "-o", model_file, "--force")
    assert code == 1 and "is the input model" in err and model_file.read_bytes() == before


def test_no_validate_skips_validation(tmp_path, model_file, capsys):
    code, _, err = run_cli(capsys, model_file, "-p", "none", "-o", tmp_path / "o.onnx", "--no-validate")
    assert code == 0 and "validation: skipped (--no-validate)" in err


def test_passes_lists_every_pass_and_alias():
    from graphopt.passes import default_registry

    proc = subprocess.run([_graphopt(), "passes"], capture_output=True, text=True, check=True)
    for name in default_registry().names():
        assert f"  {name} " in proc.stdout
    assert "none" in proc.stdout and "fixed point" in proc.stdout


def _graphopt() -> str:
    exe = shutil.which("graphopt")
    assert exe, "the graphopt console script is not installed"
    return exe


def test_console_script_errors_have_no_traceback_unless_debug(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01\x02 not a model")
    proc = subprocess.run([_graphopt(), str(bad), "-p", "none", "-o", str(tmp_path / "o.onnx")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    proc = subprocess.run([_graphopt(), str(bad), "-p", "none", "-o", str(tmp_path / "o.onnx"), "--debug"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.onnx"]


def test_usage_errors_exit_2_with_one_line(tmp_path):
    proc = subprocess.run([_graphopt(), "m.onnx", "-p", "none"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "the following arguments are required: -o/--output" in proc.stderr


def test_readme_command_runs_on_a_shipped_golden_model(tmp_path):
    """The README's first set-up command, minus the install."""
    src = os.path.join(golden.HERE, "zoo", "squeezenet.onnx")
    proc = subprocess.run([_graphopt(), src, "-p", "none", "-o", str(tmp_path / "squeezenet.onnx")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "validation: outputs bitwise equal" in proc.stderr


def test_python_m_graphopt_cli_works(tmp_path, model_file):
    proc = subprocess.run([sys.executable, "-m", "graphopt", str(model_file), "-p", "none", "-o",
                           str(tmp_path / "o.onnx")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_os_errors_are_one_line(tmp_path, model_file, capsys, monkeypatch):
    code, _, err = run_cli(capsys, model_file, "-p", "none", "-o", tmp_path / "o.onnx",
                           "--report", tmp_path / "missing" / "r.json")
    assert code == 1 and "--report folder" in err and "does not exist" in err
    assert not (tmp_path / "o.onnx").exists()

    import errno

    from graphopt.onnx_io import emit as backend

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o.onnx"))

    monkeypatch.setattr(backend, "emit", disk_full)
    code, _, err = run_cli(capsys, model_file, "-p", "none", "-o", tmp_path / "o.onnx")
    assert code == 1 and err == f"graphopt: error: No space left on device: {tmp_path / 'o.onnx'}\n"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]  # the staging folder is gone too
