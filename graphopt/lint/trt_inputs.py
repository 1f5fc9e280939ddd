"""Which node inputs TensorRT wants as constants, per TensorRT version (docs/ARCHITECTURE.md,
TensorRT facts), read from the support matrix (`trt_matrix`).

Three kinds, from strict to soft:
- initializer inputs: the parser rejects the node unless the input is an initializer or a
  Constant node's output (Slice/Squeeze/Unsqueeze/Reduce* axes, Pad axes in 10.0/10.1, CumSum
  axis, Dropout training_mode, InstanceNormalization scale/B on 8.6's plugin path);
- build-time inputs: the parser takes a tensor but the builder must fold it (OneHot depth);
- run-time shape inputs: accepted as run-time shape tensors (Reshape/Expand/ConstantOfShape
  shape, Slice starts/ends/steps, Tile repeats, Resize scales/sizes, Pad pads, TopK K, Split,
  Range), which costs speed: the shapes downstream stay dynamic.

`build_time_inputs(node)` is all three: what promote-shape-inputs makes constant where it can.
"""

from __future__ import annotations

from graphopt.ir import Node
from graphopt.lint import trt_matrix

# Run-time-ok inputs that are shape tensors (they decide an output shape): a run-time value costs
# speed. Other run-time-ok inputs (Conv weights, Q/DQ scales, Clip bounds, NMS thresholds) do not
# decide shapes and are not listed.
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "ConstantOfShape": (0,), "Slice": (1, 2, 4), "Tile": (1,),
    "Resize": (2, 3), "Upsample": (1,), "Pad": (1,), "TopK": (1,), "Split": (1,), "Range": (0, 1, 2),
    "OneHot": (1,),
}


def _ops(trt: str) -> dict:
    return trt_matrix.TRT[trt_matrix.resolve(trt)]["ops"]


def initializer_inputs(node: Node, trt: str = trt_matrix.DEFAULT) -> dict[int, str]:
    """Inputs the parser of TensorRT `trt` rejects unless they are initializers/Constant outputs."""
    if not node.is_standard:
        return {}
    return dict(_ops(trt).get(node.op_type, {}).get("initializer_inputs", {}))


def shape_inputs(node: Node, trt: str = trt_matrix.DEFAULT) -> dict[int, str]:
    """Inputs TensorRT `trt` takes as run-time shape tensors (or must fold at build time)."""
    if not node.is_standard:
        return {}
    op = _ops(trt).get(node.op_type, {})
    names = {**op.get("runtime_ok_inputs", {}), **op.get("build_time_inputs", {})}
    shape = {i: str(names[i]).split(" (")[0] for i in SHAPE_INPUTS.get(node.op_type, ()) if i in names}
    return {**shape, **op.get("build_time_inputs", {})}


def build_time_inputs(node: Node, trt: str = trt_matrix.DEFAULT) -> tuple[int, ...]:
    """Input positions TensorRT `trt` needs as constants at build time, or that cost speed at run
    time: promotion should make all of them initializers where it can."""
    return tuple(sorted(set(initializer_inputs(node, trt)) | set(shape_inputs(node, trt))))


def _table(trt: str) -> dict[str, tuple[int, ...]]:
    table: dict[str, set[int]] = {}
    for name, op in trt_matrix.TRT[trt_matrix.resolve(trt)]["ops"].items():
        idx = set(op["initializer_inputs"]) | set(op["build_time_inputs"])
        idx |= {i for i in SHAPE_INPUTS.get(name, ()) if i in op["runtime_ok_inputs"]}
        if idx:
            table[name] = idx
    return {name: tuple(sorted(idx)) for name, idx in sorted(table.items())}


# op type -> the positions build_time_inputs gives for the default TensorRT version (10); the
# union with 8.6's (InstanceNormalization scale/B), so a model promoted once suits both
BUILD_TIME_INPUTS: dict[str, tuple[int, ...]] = {
    op: tuple(sorted(set(_table(trt_matrix.DEFAULT).get(op, ())) | set(_table("8.6").get(op, ()))))
    for op in sorted(set(_table(trt_matrix.DEFAULT)) | set(_table("8.6")))}
