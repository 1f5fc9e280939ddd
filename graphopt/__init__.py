"""graphopt: an ONNX graph-rewriting compiler.

    import graphopt
    result = graphopt.optimize("model.onnx", "cleanup", output="out.onnx")
"""

from graphopt.errors import GraphoptError

__version__ = "0.1.0"


def optimize(*args, **kwargs):
    """See graphopt.api.optimize."""
    from graphopt.api import optimize as _optimize

    return _optimize(*args, **kwargs)


def load(source, **kwargs):
    """Parse an ONNX file or ModelProto into graphopt's IR (graphopt.frontend.load)."""
    from graphopt.frontend import load as _load

    return _load(source, **kwargs)


__all__ = ["GraphoptError", "load", "optimize", "__version__"]
