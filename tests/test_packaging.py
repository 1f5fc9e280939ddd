"""Issue 17, point 6: dependencies that do work. Every package graphopt imports is declared; the
declared onnxsim has a job (`--compare onnxsim`), whose numbers land in the summary and the
report; a tool that is not installed is a usage error."""

import ast
import importlib.util
import json
import os
import re
import sys

import pytest
from helpers import golden

from graphopt.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CNN = os.path.join(golden.HERE, "torch", "cnn_torchscript.onnx")
DISTRIBUTION = {"google": "protobuf"}  # import name -> distribution name, where they differ


def declared_dependencies() -> set[str]:
    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    return {re.match(r"[A-Za-z0-9_.-]+", s).group(0).lower() for s in re.findall(r'"([^"]+)"', block)}


def imported_packages() -> set[str]:
    found = set()
    for folder in ("graphopt", "passes"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                tree = ast.parse(open(os.path.join(dirpath, f)).read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        found |= {a.name.split(".")[0] for a in node.names}
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        found.add(node.module.split(".")[0])
    return found


def test_every_directly_imported_package_is_declared():
    third_party = {m for m in imported_packages() if m not in sys.stdlib_module_names and m != "graphopt"}
    assert third_party  # the scan found onnx, numpy, ...
    missing = {DISTRIBUTION.get(m, m) for m in third_party} - declared_dependencies()
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
    assert "protobuf" in declared_dependencies() and "onnxsim" in declared_dependencies()


def test_compare_onnxsim_in_the_summary_and_both_reports(tmp_path, capsys):
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    code = main([CNN, str(out), "-p", "fuse,fold", "--compare", "onnxsim", "--report", str(rep)])
    err = capsys.readouterr().err
    assert code == 0, err
    line = next(x for x in err.splitlines() if x.startswith("graphopt: compare: onnxsim "))
    assert re.search(r"onnxsim [\d.]+: \d+ nodes in [\d.]+s \(graphopt: 10\)", line), line
    report = json.loads(rep.read_text())["compare"]
    assert report["graphopt"]["nodes"] == 10 and report["graphopt"]["ops"]["Conv"] == 3
    sim = report["onnxsim"]
    assert sim["nodes"] == sum(sim["ops"].values()) and sim["ops"]["Conv"] == 3 and "BatchNormalization" not in sim["ops"]
    md = tmp_path / "r.md"
    assert main([CNN, str(tmp_path / "p.onnx"), "-p", "fuse,fold", "--compare", "onnxsim", "--report", str(md), "-q"]) == 0
    text = md.read_text()
    assert "## Compared with other tools" in text and "| | graphopt | onnxsim |" in text
    assert "| Conv | 3 | 3 |" in text


def test_compare_passes_pinned_shapes_and_reports_a_failing_tool(tmp_path, capsys, monkeypatch):
    from graphopt.cli import compare

    calls = []

    def spy(tool, path, shapes=None):
        calls.append((tool, shapes))
        return {"version": "x", "seconds": 0.1, "error": "it broke"}

    monkeypatch.setattr(compare, "run_tool", spy)
    code = main([CNN, str(tmp_path / "o.onnx"), "-p", "none", "--compare", "onnxsim", "--input-shape", "2,3,32,32"])
    err = capsys.readouterr().err
    assert code == 0 and "graphopt: compare: onnxsim failed: it broke" in err
    (tool, shapes), = calls
    assert tool == "onnxsim" and list(shapes.values()) == [(2, 3, 32, 32)] and None not in shapes


@pytest.mark.skipif(importlib.util.find_spec("onnxslim") is not None, reason="onnxslim is installed")
def test_compare_a_tool_that_is_not_installed_is_a_usage_error(tmp_path, capsys):
    code = main([CNN, str(tmp_path / "o.onnx"), "-p", "none", "--compare", "onnxslim"])
    err = capsys.readouterr().err
    assert code == 2 and "--compare onnxslim: onnxslim is not installed" in err
    assert not (tmp_path / "o.onnx").exists()
