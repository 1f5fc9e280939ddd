"""The element types of tensors, by their ONNX codes, and what passes ask about them.

Values and tensors store the ONNX code (an int, `Value.dtype`); `DataType` names the codes so
no pass writes a magic number, and the helpers answer the usual questions (is it a float type,
which numpy dtype holds it) in one place.
"""

from __future__ import annotations

import enum
from typing import Optional

import numpy as np
import onnx
from onnx import helper


class DataType(enum.IntEnum):
    UNDEFINED = 0
    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23


FLOAT8_TYPES = frozenset({DataType.FLOAT8E4M3FN, DataType.FLOAT8E4M3FNUZ, DataType.FLOAT8E5M2,
                          DataType.FLOAT8E5M2FNUZ})
# Element types packed below a byte, and types numpy has no exact kernels for: passes neither
# fold nor create constants of these (the runtime that defines them computes them).
SUBBYTE_TYPES = frozenset({DataType.UINT4, DataType.INT4, DataType.FLOAT4E2M1}
                          | {getattr(DataType, n) for n in ("INT2", "UINT2") if hasattr(DataType, n)})
NO_NUMPY_ARITHMETIC = FLOAT8_TYPES | SUBBYTE_TYPES
HALF_TYPES = frozenset({DataType.FLOAT16, DataType.BFLOAT16})
FLOAT_TYPES = frozenset({DataType.FLOAT, DataType.DOUBLE}) | HALF_TYPES | FLOAT8_TYPES | {DataType.FLOAT4E2M1}
INTEGER_TYPES = frozenset({DataType.UINT8, DataType.INT8, DataType.UINT16, DataType.INT16, DataType.INT32,
                           DataType.INT64, DataType.UINT32, DataType.UINT64, DataType.UINT4, DataType.INT4})
SHAPE_TYPES = frozenset({DataType.INT32, DataType.INT64})  # what shape tensors are made of


def is_float(t: Optional[int]) -> bool:
    return t in FLOAT_TYPES


def is_integer(t: Optional[int]) -> bool:
    return t in INTEGER_TYPES


def np_dtype(t: int) -> np.dtype:
    """The numpy dtype that holds elements of ONNX type `t` (bfloat16 and float8 as onnx's
    custom dtypes)."""
    return np.dtype(helper.tensor_dtype_to_np_dtype(t))


def from_numpy(dtype) -> int:
    """The ONNX element type of a numpy dtype (np.float32 -> DataType.FLOAT)."""
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def itemsize(t: Optional[int]) -> Optional[int]:
    """Bytes per element, or None for strings, sub-byte and unknown types."""
    if t is None or t in SUBBYTE_TYPES or t == DataType.STRING:
        return None
    try:
        return np_dtype(t).itemsize
    except Exception:  # a type this onnx does not map to numpy
        return None


def name(t: Optional[int]) -> str:
    """The ONNX name of a type code ('FLOAT', 'INT64', ...)."""
    if t is None:
        return "unknown"
    try:
        return onnx.TensorProto.DataType.Name(t)
    except ValueError:
        return f"type {t}"
