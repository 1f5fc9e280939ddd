"""External tensor data: the safety checks of docs/ARCHITECTURE.md, Reading and writing safely and zero-copy reading.

Every external reference is checked here, before a byte is read: the location must be relative,
without '..', resolve inside the model's folder, not be a symlink or a hard-linked file, and
offset+length must fit in the file. Only the keys ONNX defines are accepted. Files are
memory-mapped once and shared by all tensors they hold.
"""

from __future__ import annotations

import os
import stat

import onnx

from graphopt.errors import UnsafeModelError
from graphopt.ir.tensor import MappedFile, Tensor

KNOWN_KEYS = {"location", "offset", "length", "checksum", "basepath"}


class ExternalDataReader:
    def __init__(self, base_dir: str):
        # Always an explicit absolute base: an empty base would resolve against the cwd.
        self.base_dir = os.path.realpath(os.path.abspath(base_dir))
        self.files: dict[str, MappedFile] = {}

    def tensor(self, proto: onnx.TensorProto) -> Tensor:
        info = {}
        for entry in proto.external_data:
            if entry.key not in KNOWN_KEYS:
                raise UnsafeModelError(
                    f"tensor {proto.name!r}: unknown external data key {entry.key!r}")
            info[entry.key] = entry.value
        location = info.get("location", "")
        path = self._checked_path(proto.name, location)
        mapped = self.files.get(path)
        if mapped is None:
            mapped = self.files[path] = MappedFile(path)
        offset = _int_key(proto.name, info, "offset", 0)
        tensor = Tensor.from_external(proto, mapped, offset)
        expected = tensor.nbytes
        length = _int_key(proto.name, info, "length", expected)
        if length != expected:
            raise UnsafeModelError(
                f"tensor {proto.name!r}: external data length {length} does not match its "
                f"shape and type ({expected} bytes)")
        if offset + length > mapped.size:
            raise UnsafeModelError(
                f"tensor {proto.name!r}: external data offset {offset} + length {length} is past "
                f"the end of {location!r} ({mapped.size} bytes)")
        return tensor

    def _checked_path(self, tensor_name: str, location: str) -> str:
        what = f"tensor {tensor_name!r}: external data location {location!r}"
        if not location:
            raise UnsafeModelError(f"tensor {tensor_name!r}: external data has no location")
        if "\x00" in location:
            raise UnsafeModelError(f"{what} contains a NUL byte")
        if os.path.isabs(location) or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
            raise UnsafeModelError(f"{what} is an absolute path")
        parts = location.replace("\\", "/").split("/")
        if ".." in parts:
            raise UnsafeModelError(f"{what} contains '..'")
        joined = os.path.join(self.base_dir, *[p for p in parts if p not in ("", ".")])
        real = os.path.realpath(joined)
        if os.path.commonpath([real, self.base_dir]) != self.base_dir:
            raise UnsafeModelError(f"{what} resolves outside the model's folder")
        try:
            st = os.lstat(joined)
        except FileNotFoundError:
            raise UnsafeModelError(f"{what}: file not found") from None
        if stat.S_ISLNK(st.st_mode) or real != os.path.normpath(joined):
            raise UnsafeModelError(f"{what} is a symlink")
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeModelError(f"{what} is not a regular file")
        if st.st_nlink > 1:
            raise UnsafeModelError(f"{what} is a hard-linked file")
        return real


def _int_key(name: str, info: dict, key: str, default: int) -> int:
    if key not in info:
        return default
    try:
        value = int(info[key])
    except ValueError:
        raise UnsafeModelError(f"tensor {name!r}: external data {key} {info[key]!r} is not an integer") from None
    if value < 0:
        raise UnsafeModelError(f"tensor {name!r}: external data {key} {value} is negative")
    return value
