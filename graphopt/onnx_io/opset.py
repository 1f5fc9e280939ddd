"""Raising a model's default-domain opset, by onnx's version converter.

The converter works on the model's structure: large weights travel as stubs (name, type and
shape) and are handed back to the converted model by name, never copied.
"""

from __future__ import annotations

import onnx

from graphopt.errors import UserInputError
from graphopt.ir import Model
from graphopt.onnx_io import emit as backend
from graphopt.onnx_io import load as frontend


def takes_type(op_type: str, opset: int, type_str: str, domain: str = "") -> bool:
    """Whether the op's schema at `opset` lets every float type constraint be `type_str`
    (e.g. "tensor(bfloat16)": Conv takes it only from opset 22)."""
    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except Exception:  # unknown op or domain: nothing is known to work
        return False
    floats = [tc for tc in schema.type_constraints if "tensor(float)" in tc.allowed_type_strs]
    return bool(floats) and all(type_str in tc.allowed_type_strs for tc in floats)


def convert(model: Model, target: int) -> Model:
    """`model` converted to default-domain opset `target` (>= its own), or a clear error."""
    if model.opset >= target:
        return model
    from onnx import version_converter

    emitter = backend._Emitter(None, defer_initializers=True)
    proto = emitter.model(model)
    deferred = dict(emitter.deferred)
    backend._add_stub_initializers(proto, emitter)
    try:
        converted = version_converter.convert_version(proto, target)
    except Exception as e:  # the converter raises RuntimeError, ValueError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserInputError(f"cannot raise the model from opset {model.opset} to {target}: {first}") from None
    given = {t.name: deferred[t.name] for t in converted.graph.initializer
             if t.name in deferred and t.data_location == onnx.TensorProto.EXTERNAL}
    out = frontend.load(converted, tensors=given)
    out.source_path, out.source_data_files, out.mapped_files = model.source_path, model.source_data_files, model.mapped_files
    return out
