"""graphopt: an ONNX graph-rewriting compiler.

    import graphopt
    result = graphopt.optimize("model.onnx", ["fuse", "fold"], output="out.onnx")

The data flow and the package map are in docs/ARCHITECTURE.md.
"""

import os as _os
import sys as _sys

from graphopt.errors import GraphoptError

__version__ = "0.1.0"


def _find_pass_library() -> None:
    """The pass library lives in the top-level passes/ folder and installs as graphopt.passes. In
    a source checkout (running from the repository without an install that maps it) it is
    found beside this package, so `python -m graphopt` works there too."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    if _os.path.isdir(_os.path.join(here, "passes")):
        return  # installed: graphopt/passes is a real subpackage
    beside = _os.path.join(_os.path.dirname(here), "passes", "__init__.py")
    if not _os.path.isfile(beside):
        return  # an editable install's finder (or nothing) provides it
    import importlib.abc
    import importlib.util

    class _PassLibraryFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname != "graphopt.passes":
                return None
            return importlib.util.spec_from_file_location(
                fullname, beside, submodule_search_locations=[_os.path.dirname(beside)])

    _sys.meta_path.append(_PassLibraryFinder())  # appended: an install's own finder wins


_find_pass_library()


def load(source, **kwargs):
    """Parse an ONNX file or ModelProto into graphopt's IR (graphopt.onnx_io.load.load)."""
    from graphopt.onnx_io.load import load as _load

    return _load(source, **kwargs)


# The API, imported on first use (a plain run never pays for it); the real objects, so that
# help(graphopt.optimize) and inspect.signature show their parameters.
_EXPORTS = {"optimize": "graphopt.driver", "Result": "graphopt.driver",
            "CalibrationSettings": "graphopt.quant.calibration", "LossyThresholds": "graphopt.runtime.validate",
            "Tolerance": "graphopt.runtime.validate",
            "Pass": "graphopt.pipeline.base", "PassResult": "graphopt.pipeline.base",
            "PassContext": "graphopt.pipeline.base", "Rule": "graphopt.rewrite", "RulePass": "graphopt.rewrite",
            "Op": "graphopt.rewrite",
            "Var": "graphopt.rewrite", "Opt": "graphopt.rewrite", "Graph": "graphopt.ir", "Model": "graphopt.ir"}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'graphopt' has no attribute {name!r}")


__all__ = ["GraphoptError", "load", "__version__", *_EXPORTS]


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
