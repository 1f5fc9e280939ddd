"""What every subcommand shares: the argument parser that exits 2 on usage errors, logging
set-up, atomic text writes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

EXIT_FINDINGS = 4  # trt-check found errors


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other usage error
        self.exit(2, f"graphopt: error: {message} (see graphopt --help)\n")


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


def setup_logging(args) -> None:
    level = logging.ERROR if args.quiet else (logging.INFO if args.verbose or args.debug else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("graphopt: %(message)s"))
    logger = logging.getLogger("graphopt")
    logger.handlers = [handler]
    logger.setLevel(level)
    logger.propagate = False


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
        PassManager([registry.expand_alias(registry.aliases["fold"])]).execute(folded, PassContext(folded))
    return inspect(model, shapes_from=folded)
