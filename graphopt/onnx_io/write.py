"""Writing an output safely: a fresh temporary folder beside the target, moved into place only
on commit, never onto the input, its external data or a symlink (docs/ARCHITECTURE.md, write safety).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Optional

from graphopt.errors import WriteError
from graphopt.onnx_io.emit import EmittedModel


class OutputTransaction:
    """Writes an output safely: into a fresh temporary folder beside the target, moved into
    place only on commit(). Refuses to write onto the input, its external data or a symlink,
    and onto an existing file unless `force`."""

    def __init__(self, out_path: str, *, force: bool = False, protected: tuple[str, ...] = ()):
        self.target = os.path.abspath(os.fspath(out_path))
        self.out_dir = os.path.dirname(self.target)
        self.basename = os.path.basename(self.target)
        self.protected = {os.path.realpath(p) for p in protected if p}
        self.force = force
        self._check_target(self.target, "output")
        self.tmpdir: Optional[str] = None

    def _check_target(self, path: str, what: str) -> None:
        if not self.basename:
            raise WriteError(f"{what} path {path!r} names a folder, not a file")
        if not os.path.isdir(self.out_dir):
            raise WriteError(f"{what} folder {self.out_dir!r} does not exist")
        if os.path.islink(path):
            raise WriteError(f"refusing to write {what} {path!r}: it is a symlink")
        if os.path.realpath(path) in self.protected:
            raise WriteError(f"refusing to write {what} {path!r}: it is the input model or its external data")
        if os.path.isdir(path):
            raise WriteError(f"{what} path {path!r} is a folder")
        if os.path.exists(path) and not self.force:
            raise WriteError(f"{what} {path!r} exists (use --force to overwrite)")

    def protect(self, paths) -> None:
        """Also refuse to write onto these files (the input's external data)."""
        self.protected |= {os.path.realpath(p) for p in paths}
        self._check_target(self.target, "output")

    def __enter__(self) -> "OutputTransaction":
        self.tmpdir = tempfile.mkdtemp(prefix=".graphopt-", dir=self.out_dir)
        return self

    def __exit__(self, *exc) -> None:
        if self.tmpdir and os.path.isdir(self.tmpdir):
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def staging_dir(self) -> str:
        """A fresh folder for one candidate emission (the final one is committed)."""
        return tempfile.mkdtemp(dir=self.tmpdir)

    def commit(self, staged: "EmittedModel") -> None:
        data_target = None
        if staged.data_path:
            data_target = os.path.join(self.out_dir, os.path.basename(staged.data_path))
            self._check_target(data_target, "external data file")
        for src, dst in ((staged.data_path, data_target), (staged.path, self.target)):
            if src:
                os.replace(src, dst)
