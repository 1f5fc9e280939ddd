"""Errors graphopt reports to users.

Every error carries a one-line message that names the problem; the CLI prints it without a
traceback (unless --debug) and exits non-zero.
"""


class GraphoptError(Exception):
    """Base class: a problem the user can act on, reported in one line."""

    exit_code = 1

    def __init__(self, message: str):
        # One line, always: multi-line library messages are folded.
        super().__init__(" ".join(str(message).split()))


class ModelLoadError(GraphoptError):
    """The input is not a readable ONNX model."""


class UnsafeModelError(GraphoptError):
    """The model asks for something graphopt refuses to do (e.g. read outside its folder)."""


class UsageError(GraphoptError):
    """The command line is wrong (a missing or malformed option): exit code 2, like argparse's."""

    exit_code = 2


class PipelineError(GraphoptError):
    """A pipeline names an unknown pass or option, or gives an invalid value."""

    exit_code = 2


class UserInputError(GraphoptError):
    """Something the user gave a pass cannot work with (calibration data, a cache, a model the
    pass cannot take): the run stops, it is never rolled back into a silently unchanged model."""


class InvalidModelError(GraphoptError):
    """The emitted model fails the ONNX checker or strict shape inference. The message names the
    first finding; `findings` holds every line the checker reported (strict shape inference
    reports one per failing node)."""

    def __init__(self, message: str, findings: frozenset = frozenset()):
        super().__init__(message)
        self.findings = findings


class ValidationError(GraphoptError):
    """The optimized model does not compute what the input computes."""

    exit_code = 3


class WriteError(GraphoptError):
    """The output cannot be written safely."""


class IRError(GraphoptError):
    """An IR invariant does not hold (a bug in a pass or in graphopt)."""
