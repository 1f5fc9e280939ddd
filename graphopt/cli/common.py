"""What every subcommand shares: the argument parser that exits 2 on usage errors, logging
set-up, atomic text writes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

# Exit codes, the same for every subcommand (README, "Using it"): 0 ok, 1 bad input, 2 usage,
# 3 accuracy or validation, 4 checker findings, 70 internal error (a bug), 130 interrupted,
# 141 stdout closed early (`graphopt inspect m.onnx | head -1`), as a SIGPIPE death would.
EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE, EXIT_VALIDATION, EXIT_FINDINGS, EXIT_INTERNAL = 0, 1, 2, 3, 4, 70
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141


def version() -> str:
    """graphopt's version. The package's __init__ has run before any of its modules (no import
    of the package from this lower layer: docs/ARCHITECTURE.md, Package map)."""
    return sys.modules["graphopt"].__version__


class Parser(argparse.ArgumentParser):
    """Every subcommand's parser: one-line usage errors with exit code 2, and the options every
    subcommand takes (--debug, -v, -q), which set up logging when the arguments are parsed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="verify the IR after every pass; show tracebacks")
        self.add_argument("-v", "--verbose", action="store_true", help="log every pass, every round of a fixed-point group")
        self.add_argument("-q", "--quiet", action="store_true",
                          help="hide progress; errors and warnings that change what the result means still print")

    def parse_args(self, *args, **kwargs):
        parsed = super().parse_args(*args, **kwargs)
        setup_logging(parsed)
        return parsed

    def error(self, message: str):  # one line, exit 2, like every other usage error
        self.exit(EXIT_USAGE, f"graphopt: error: {message} (see {self.prog} --help)\n")


def add_input_shape_options(p: argparse.ArgumentParser) -> None:
    """--input-shape (repeatable) and onnxslim's --input-shapes (several specs after one flag)."""
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:DIMS",
                   help="pin an input's shape: input:1x3x224x224 or input:1,3,224,224, or a bare 1x3x224x224 "
                   "for a model with one input (repeatable)")
    p.add_argument("--input-shapes", dest="input_shape", action="extend", nargs="+", metavar="NAME:DIMS",
                   help="the same, several specs after one flag (onnxslim's spelling)")


def write_text_atomically(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".graphopt-report-", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a report is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# Warnings that change what a result means (not validated, an option nothing used) go to this
# logger, which -q does not silence; -q hides progress and notes only.
MEANING = "graphopt.meaning"


def setup_logging(args) -> None:
    level = logging.ERROR if args.quiet else (logging.INFO if args.verbose or args.debug else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("graphopt: %(message)s"))
    logger = logging.getLogger("graphopt")
    logger.handlers = [handler]
    logger.setLevel(level)
    logger.propagate = False
    logging.getLogger(MEANING).setLevel(logging.WARNING)  # a child of "graphopt": -q never hides it


def inspect_model(model) -> dict:
    """`inspect` of a model, with shapes that shape inference leaves unknown taken from a copy
    whose shape chains the fold passes have folded."""
    from graphopt.pipeline.base import PassContext
    from graphopt.pipeline.manager import PassManager
    from graphopt.report.inspect import inspect, needs_refinement

    folded = None
    if needs_refinement(model):
        from graphopt.driver import default_registry

        folded = model.clone()
        registry = default_registry()
        PassManager([registry.expand_alias(registry.aliases["fold"])]).execute(
            folded, PassContext(folded), quiet=True)  # a private copy for better shapes: its passes are no news
    return inspect(model, shapes_from=folded)
