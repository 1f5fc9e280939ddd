"""The package layering of docs/ARCHITECTURE.md, checked on the source: imports point one way.

Every import of a graphopt module (at the top of a file or inside a function) must go to a
package at the same layer or below. The pass library uses the IR API only.
"""

from __future__ import annotations

import ast
import os

import pytest
from helpers import ROOT

# Lowest first. A module may import its own package and any package listed before it.
LAYERS = ["errors", "ir", "onnx_io", "analysis", "runtime", "pipeline", "rewrite", "quant", "lint", "report",
          "dsl", "passes", "driver", "cli", "__init__", "__main__"]
RANK = {name: i for i, name in enumerate(LAYERS)}


def _package_of(module: str) -> str:
    """graphopt.onnx_io.emit -> onnx_io; graphopt.driver -> driver; graphopt -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _sources():
    for folder, package in ((os.path.join(ROOT, "graphopt"), "graphopt"), (os.path.join(ROOT, "passes"), "graphopt.passes")):
        for dirpath, _, files in os.walk(folder):
            for f in sorted(files):
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, f), folder)[:-3].replace(os.sep, ".")
                    module = package if rel == "__init__" else f"{package}.{rel.removesuffix('.__init__')}"
                    yield os.path.join(dirpath, f), module


def _imports(path: str, module: str):
    """(line, imported module) for every graphopt import in the file, nested ones included."""
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("graphopt"):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("graphopt"):
            if node.module == "graphopt":  # `from graphopt import x`: x is a subpackage or a name of the package
                for alias in node.names:
                    yield node.lineno, f"graphopt.{alias.name}" if alias.name in RANK else "graphopt"
            else:
                yield node.lineno, node.module


SOURCES = list(_sources())


def test_every_package_has_a_layer():
    packages = {_package_of(module) for _, module in SOURCES}
    assert packages <= set(RANK), sorted(packages - set(RANK))


@pytest.mark.parametrize("path,module", SOURCES, ids=[m for _, m in SOURCES])
def test_imports_point_down(path, module):
    mine = _package_of(module)
    wrong = [f"line {line}: {target}" for line, target in _imports(path, module)
             if RANK[_package_of(target)] > RANK[mine]]
    assert not wrong, f"{module} ({mine}) imports from a higher layer: {wrong}"


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The check itself can fail: an analysis module importing the pass library is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from graphopt.passes import default_registry\n")
    targets = [t for _, t in _imports(str(bad), "graphopt.analysis.bad")]
    assert targets == ["graphopt.passes"] and RANK[_package_of(targets[0])] > RANK["analysis"]


@pytest.mark.parametrize("path,module", [s for s in SOURCES if s[1].startswith("graphopt.passes")],
                         ids=[m for _, m in SOURCES if m.startswith("graphopt.passes")])
def test_a_pass_never_sees_networkx_or_protobuf(path, module):
    """Passes use the IR API only (docs/ARCHITECTURE.md): a static check of the pass library."""
    text = open(path).read()
    forbidden = ("networkx", "._g", "onnx.helper", "import onnx", "from onnx", "google.protobuf")
    assert not [f for f in forbidden if f in text], module


def test_the_pass_library_is_found_from_a_source_checkout():
    """Without an install that maps passes/ to graphopt.passes (a plain checkout on sys.path),
    graphopt finds the pass library beside its package, so `python -m graphopt` runs there."""
    import subprocess
    import sys

    code = f"""
import sys
sys.meta_path[:] = [f for f in sys.meta_path
                    if not (f if isinstance(f, type) else type(f)).__module__.startswith("__editable__")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "editable" not in getattr(h, "__module__", "")]
sys.path.insert(0, {ROOT!r})
for name in [m for m in sys.modules if m == "graphopt" or m.startswith("graphopt.")]:
    del sys.modules[name]
import graphopt, graphopt.passes
assert graphopt.__file__.startswith({ROOT!r}), graphopt.__file__
print(graphopt.passes.__file__)
from graphopt.cli.main import main
sys.exit(main(["passes"]))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == os.path.join(ROOT, "passes", "__init__.py")
    assert "fold-constants" in run.stdout
