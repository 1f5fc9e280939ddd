"""Command line entry: dispatch to a subcommand, turn errors into one line and an exit code.

Errors are one line on stderr and a non-zero exit code; a traceback only with --debug.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Callable, Optional, Sequence

from graphopt.cli.common import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    version,
)
from graphopt.errors import GraphoptError


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        if argv[:1] == ["--version"]:
            print(f"graphopt {version()}")
            return 0
        name = argv[0] if argv and argv[0] in SUBCOMMANDS else None
        if name is None and argv and _misspelled(argv[0]):
            return EXIT_USAGE
        return subcommand(name)(argv[1:] if name else argv)
    except BrokenPipeError:  # stdout closed early (`| head`): stop quietly, as a SIGPIPE death would
        _silence_stdout()
        return EXIT_BROKEN_PIPE
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


def _misspelled(word: str) -> bool:
    """A first argument that is no file and looks like a subcommand (`graphopt inpsect m.onnx`):
    say so (exit 2) instead of reading it as a model path."""
    import difflib

    if word.startswith("-") or os.path.exists(word) or word.lower().endswith(".onnx") or os.sep in word:
        return False
    close = difflib.get_close_matches(word, list(SUBCOMMANDS), n=1, cutoff=0.6)
    if not close:
        return False
    print(f"graphopt: error: unknown command {word!r} (did you mean {close[0]!r}?); a model path must exist "
          f"(see graphopt --help)", file=sys.stderr)
    return True


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing at exit does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def subcommand(name):
    """The function that runs subcommand `name` (None: the optimize command)."""
    import importlib

    module, function = SUBCOMMANDS[name] if name else ("optimize", "command")
    command = getattr(importlib.import_module(f"graphopt.cli.{module}"), function)
    if _after_imports is not None:
        _after_imports()
    return command


_after_imports: Optional[Callable[[], None]] = None  # set by entry(): the process is ours alone


def _collect_again() -> None:
    """Start-up creates ~10^5 objects that live as long as the process (modules, classes, the
    pass library); the garbage collector walking them again and again while they are imported
    costs a tenth of a small run. entry() turns it off until the command's modules (and the
    compiler driver) are loaded, then freezes them out of every later collection."""
    import graphopt.driver  # noqa: F401 (imported here so its objects are frozen too)

    gc.freeze()
    gc.enable()


MMAP_THRESHOLD = 1 << 20  # bytes; glibc's start value is 128 KiB, raised up to 32 MiB as blocks are freed


def _unmap_large_blocks() -> None:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD, so that a freed block that large goes back
    to the OS at once. Left to itself, glibc raises the threshold whenever it frees a mapped
    block; blocks up to that size then come from the heap, and what onnxruntime frees there stays
    with the process: validation's runs stack on one another and on the passes (up to a third
    of the peak RSS on the corpus; docs/ARCHITECTURE.md, Validation). Only for the console
    script, whose process is graphopt's alone, and never over the user's own setting."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (Windows cannot even open the process)
        return
    M_MMAP_THRESHOLD = -3
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def entry() -> None:
    """Console-script entry: run, flush, and exit without tearing the interpreter down module by
    module (every file and temporary folder is closed by then; teardown only costs time)."""
    global _after_imports
    _unmap_large_blocks()
    gc.disable()
    _after_imports = _collect_again
    try:
        code = main()
    finally:
        gc.enable()  # whatever path main() took (--version, a usage error)
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away before the buffered output was written
        _silence_stdout()
        code = EXIT_BROKEN_PIPE
    try:
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code)
