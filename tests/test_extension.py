"""The public extension point: Pass objects mixed with pass names in graphopt.optimize, and
passes other packages add through the `graphopt.passes` entry-point group."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from helpers import model_from_text, run_ort

import graphopt
from graphopt.errors import PipelineError

MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
m (float[2, 3] x) => (float[2, 3] y) {
    a = Identity (x)
    b = Neg (a)
    c = Neg (b)
    y = Relu (c)
}
"""


class CancelNegations(graphopt.Pass):
    """Neg(Neg(x)) -> x, written against the IR API only."""

    name = "cancel-negations"
    summary = "remove pairs of Neg"

    def run(self, graph, ctx):
        removed = 0
        for node in graph.toposort():
            if node in graph and node.op_type == "Neg":
                inner = graph.producer(node.inputs[0])
                if inner is not None and inner.op_type == "Neg" and len(inner.outputs[0].uses) == 1:
                    graph.replace_all_uses(node.outputs[0], inner.inputs[0])
                    graph.remove_node(node)
                    graph.remove_node(inner)
                    removed += 1
        return graphopt.PassResult(removed > 0, {"removed": removed})


def test_pass_objects_mix_with_names():
    result = graphopt.optimize(model_from_text(MODEL), ["cleanup", CancelNegations(), "fold"])
    assert [n.op_type for n in result.model.graph.nodes] == ["Relu"]
    mine = [r for r in result.records if r.name == "cancel-negations"]
    assert len(mine) == 1 and mine[0].stats == {"removed": 1}
    assert result.validation.ok


def test_a_list_of_names_is_a_pipeline_and_a_pass_class_runs_with_defaults():
    result = graphopt.optimize(model_from_text(MODEL), ["fuse", "fold", CancelNegations])
    assert [n.op_type for n in result.model.graph.nodes] == ["Relu"]


class DoubleNeg(graphopt.Rule):
    """Neg(Neg(x)) -> x."""

    name = "double-neg"
    pattern = graphopt.Op("Neg", graphopt.Op("Neg", graphopt.Var("x"), name="inner"), name="outer")

    def rewrite(self, m, b):
        return [m["x"]]


def test_a_rule_in_the_list_runs_as_a_pass_of_its_name():
    result = graphopt.optimize(model_from_text(MODEL), ["cleanup", DoubleNeg(), "dce"], explain={"double-neg"})
    assert [n.op_type for n in result.model.graph.nodes] == ["Relu"]
    assert [r.stats for r in result.records if r.name == "double-neg"] == [{"double-neg": 1}]
    assert [(nm.rule, nm.reason) for nm in result.near_misses] == [("double-neg", "fired")]


def test_a_list_item_that_is_no_pass_is_a_pipeline_error():
    with pytest.raises(PipelineError, match="pipeline item 42 is not a pass name"):
        graphopt.optimize(model_from_text(MODEL), ["fold", 42])


PLUGIN = '''
import graphopt


class DropRelu(graphopt.Pass):
    name = "drop-relu"
    summary = "team plugin: forget Relu nodes (for the test only)"

    def run(self, graph, ctx):
        n = 0
        for node in graph.nodes:
            if node.op_type == "Relu":
                n += graph.bypass(node, node.inputs[0])
        return graphopt.PassResult(n > 0, {"dropped": n})


class DoubleNeg(graphopt.Rule):
    """team plugin rule: Neg(Neg(x)) -> x"""

    name = "double-neg"
    pattern = graphopt.Op("Neg", graphopt.Op("Neg", graphopt.Var("x"), name="inner"), name="outer")

    def rewrite(self, m, b):
        return [m["x"]]


PASSES = [DropRelu, DoubleNeg]
'''


def _install_plugin(folder, entry: str, source: str) -> dict:
    """A package on PYTHONPATH declaring `entry` in the graphopt.passes entry-point group."""
    (folder / "teamplug.py").write_text(textwrap.dedent(source))
    info = folder / "teamplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: teamplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[graphopt.passes]\nteam = {entry}\n")
    return {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_an_entry_point_adds_passes_usable_from_the_command_line(tmp_path):
    env = _install_plugin(tmp_path, "teamplug:PASSES", PLUGIN)
    src = tmp_path / "m.onnx"
    onnx.save(model_from_text(MODEL), str(src))
    out = tmp_path / "out.onnx"
    run = subprocess.run([sys.executable, "-m", "graphopt", str(src), "-p", "drop-relu,double-neg,cleanup", "-o",
                          str(out), "--no-validate", "--explain", "double-neg"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert [n.op_type for n in onnx.load(str(out)).graph.node] == ["Identity"]  # y = x keeps its name
    listing = subprocess.run([sys.executable, "-m", "graphopt", "passes"], capture_output=True, text=True, env=env)
    assert "drop-relu" in listing.stdout and "team plugin" in listing.stdout and "double-neg" in listing.stdout
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    assert np.array_equal(run_ort(onnx.load(str(out)), {"x": x})[0], x)


def test_a_broken_plugin_is_named_when_its_pass_is_asked_for(tmp_path):
    env = _install_plugin(tmp_path, "teamplug:PASSES", "raise ImportError('no torch here')\n")
    src = tmp_path / "m.onnx"
    onnx.save(model_from_text(MODEL), str(src))
    ok = subprocess.run([sys.executable, "-m", "graphopt", str(src), "-p", "fold", "-o", str(tmp_path / "a.onnx")],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "was not loaded" not in ok.stderr  # built-in passes never load plugins
    run = subprocess.run([sys.executable, "-m", "graphopt", str(src), "-p", "drop-relu", "-o", str(tmp_path / "b.onnx")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 2
    error = next(line for line in run.stderr.splitlines() if line.startswith("graphopt: error:"))
    assert "unknown pass 'drop-relu'" in error and "plugin 'team' (teamplug:PASSES) was not loaded: no torch here" in error
