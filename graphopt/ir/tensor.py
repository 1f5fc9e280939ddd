"""Constant tensor data, loaded lazily and never copied until someone changes it.

A Tensor has one of three sources:
- an inline TensorProto from the parsed model (decoded to numpy on first use),
- a region of a memory-mapped external data file (a zero-copy numpy view),
- a numpy array (what passes create).
Tensors are immutable: a pass that changes a weight makes a new Tensor.
"""

from __future__ import annotations

import math
import mmap
import os
from typing import Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from graphopt.ir.dtypes import DataType, np_dtype


class MappedFile:
    """One read-only memory map per external data file, shared by all its tensors."""

    def __init__(self, path: str):
        self.path = path
        self.size = os.path.getsize(path)
        self._map: Optional[mmap.mmap] = None

    def release(self, offset: int = 0, length: int | None = None) -> None:
        """Drop this process's resident pages of the file, or of a range of it. They stay in
        the page cache and fault back in on the next read; RSS stays near the working set."""
        if self._map is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        end = self.size if length is None else min(offset + length, self.size)
        start = offset - offset % mmap.PAGESIZE
        if end > start:
            self._map.madvise(mmap.MADV_DONTNEED, start, end - start)

    def buffer(self) -> mmap.mmap:
        if self._map is None:
            with open(self.path, "rb") as f:
                if self.size == 0:
                    raise ValueError(f"external data file {self.path} is empty")
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._map


class Tensor:
    __slots__ = ("dtype", "shape", "_proto", "_file", "_offset", "_array", "doc_string")

    def __init__(self, dtype: int, shape, *, proto=None, file: MappedFile | None = None,
                 offset: int = 0, array: np.ndarray | None = None, doc_string: str = ""):
        self.dtype = int(dtype)
        self.shape = tuple(int(d) for d in shape)
        self._proto = proto
        self._file = file
        self._offset = offset
        self._array = array
        self.doc_string = doc_string

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_numpy(cls, array: np.ndarray, dtype: int | None = None) -> "Tensor":
        array = np.asarray(array)
        if dtype is None:
            dtype = helper.np_dtype_to_tensor_dtype(array.dtype)
        array.flags.writeable = False
        return cls(dtype, array.shape, array=array)

    @classmethod
    def from_proto(cls, proto: onnx.TensorProto) -> "Tensor":
        return cls(proto.data_type, proto.dims, proto=proto, doc_string=proto.doc_string)

    @classmethod
    def from_external(cls, proto: onnx.TensorProto, file: MappedFile, offset: int) -> "Tensor":
        return cls(proto.data_type, proto.dims, file=file, offset=offset, doc_string=proto.doc_string)

    # -- queries -------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        if self.dtype == DataType.STRING:
            return sum(len(s) for s in self.numpy().ravel())
        bits = _SUBBYTE_BITS.get(self.dtype)
        if bits:
            return (self.size * bits + 7) // 8
        return self.size * np_dtype(self.dtype).itemsize

    @property
    def is_external(self) -> bool:
        return self._file is not None

    def file_location(self) -> Optional[tuple[str, int]]:
        """(file path, byte offset) for a tensor that lives in a mapped file, else None."""
        return (self._file.path, self._offset) if self._file is not None else None

    def release_pages(self, start: int = 0, length: int | None = None) -> None:
        """For a memory-mapped tensor: drop the resident pages of its bytes [start, start+length)
        (see MappedFile.release)."""
        if self._file is not None:
            length = self.nbytes - start if length is None else min(length, self.nbytes - start)
            self._file.release(self._offset + start, length)

    @property
    def source_proto(self) -> onnx.TensorProto | None:
        """The untouched inline proto this tensor came from, if any (for zero-work emission)."""
        return self._proto

    def numpy(self) -> np.ndarray:
        """The data as a read-only numpy array (a view where possible)."""
        if self._array is not None:
            return self._array
        if self._file is not None:
            if self.dtype in _SUBBYTE_BITS:
                raw = memoryview(self._file.buffer())[self._offset:self._offset + self.nbytes]
                return _decode_raw(self.dtype, self.shape, bytes(raw))
            dt = np_dtype(self.dtype)
            arr = np.frombuffer(self._file.buffer(), dtype=dt, count=self.size, offset=self._offset)
            return arr.reshape(self.shape)
        arr = numpy_helper.to_array(self._proto)
        arr.flags.writeable = False
        return arr

    def raw_bytes(self) -> memoryview:
        """Little-endian bytes as ONNX stores them in raw_data / external files."""
        if self._file is not None:
            return memoryview(self._file.buffer())[self._offset:self._offset + self.nbytes]
        if self._proto is not None and self._proto.HasField("raw_data"):
            return memoryview(self._proto.raw_data)
        return memoryview(numpy_helper.from_array(np.asarray(self.numpy())).raw_data)

    def __repr__(self) -> str:
        where = "external" if self._file is not None else ("proto" if self._proto is not None else "array")
        return f"Tensor({onnx.TensorProto.DataType.Name(self.dtype)}, {list(self.shape)}, {where})"


def _subbyte_bits() -> dict[int, int]:
    bits = {}
    for name, width in (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2)):
        if hasattr(onnx.TensorProto, name):
            bits[getattr(onnx.TensorProto, name)] = width
    return bits


_SUBBYTE_BITS = _subbyte_bits()


def _decode_raw(elem_type: int, shape, raw: bytes) -> np.ndarray:
    t = onnx.TensorProto(data_type=elem_type, dims=shape, raw_data=raw)
    return numpy_helper.to_array(t)
