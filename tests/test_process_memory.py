"""The console script's process is graphopt's alone: it fixes glibc's mmap threshold so that
large blocks onnxruntime frees go back to the OS, unless the user set the threshold
(docs/ARCHITECTURE.md, Validation)."""

import ctypes
import os
import subprocess
import sys

import pytest

# After a 4 MB block is mapped and freed, glibc (left to itself) raises its threshold past 4 MB,
# so the next 2 MB block comes from the heap; fixed at 1 MB, it is mapped. Prints how many
# mapped blocks the 2 MB allocation added.
PROBE = r"""
import ctypes, sys
import numpy as np
import importlib

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "entry":
    importlib.import_module("graphopt.cli.main")._unmap_large_blocks()
a = np.ones(4 << 20, np.uint8)
del a
before = libc.mallinfo2().hblks
b = np.ones(2 << 20, np.uint8)
print(libc.mallinfo2().hblks - before)
"""


def _probe(how: str, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    r = subprocess.run([sys.executable, "-c", PROBE, how], capture_output=True, text=True, env={**clean, **env})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _has_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "mallinfo2")
    except (OSError, TypeError):  # not glibc
        return False


@pytest.mark.skipif(not _has_mallinfo2(), reason="glibc 2.33 or later only")
def test_the_console_script_maps_large_blocks_unless_the_user_set_the_threshold():
    assert _probe("entry") == "1"
    # the twins: glibc's own behaviour in a library user's process, and the user's setting kept
    assert _probe("library") == "0"
    assert _probe("entry", MALLOC_MMAP_THRESHOLD_=str(8 << 20)) == "0"
    assert _probe("entry", GLIBC_TUNABLES=f"glibc.malloc.mmap_threshold={8 << 20}") == "0"
