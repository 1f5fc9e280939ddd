"""Command line entry: dispatch to a subcommand, turn errors into one line and an exit code.

Errors are one line on stderr and a non-zero exit code; a traceback only with --debug.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from graphopt.errors import GraphoptError

EXIT_INTERNAL = 70


EXIT_INTERRUPTED = 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        name = argv[0] if argv and argv[0] in SUBCOMMANDS else None
        return subcommand(name)(argv[1:] if name else argv)
    except GraphoptError as e:
        if debug:
            raise
        print(f"graphopt: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("graphopt: interrupted; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:  # the environment, not a bug: unwritable folder, disk full, ...
        if debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"graphopt: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except MemoryError:
        print("graphopt: error: out of memory", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: still one line unless --debug
        if debug:
            raise
        msg = " ".join(str(e).split())[:300]
        print(f"graphopt: internal error: {type(e).__name__}: {msg} (run with --debug for a traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


# subcommand -> (module in graphopt.cli, function); imported only when run, to keep start-up short
SUBCOMMANDS = {"passes": ("passes", "command"), "trt-check": ("findings", "trt_check_command"),
               "qdq-lint": ("findings", "qdq_lint_command"), "sparsity": ("sparsity", "command"),
               "inspect": ("inspect", "command"), "check": ("check", "command"), "fmt": ("fmt", "command")}


def subcommand(name):
    """The function that runs subcommand `name` (None: the optimize command)."""
    import importlib

    module, function = SUBCOMMANDS[name] if name else ("optimize", "command")
    return getattr(importlib.import_module(f"graphopt.cli.{module}"), function)


def entry() -> None:
    """Console-script entry: run, flush, and exit without tearing the interpreter down module by
    module (every file and temporary folder is closed by then; teardown only costs time)."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
