"""Evaluating nodes on constant inputs, for folding.

Shape arithmetic and pure data movement run in numpy (exact, and far cheaper than a session).
Everything else runs in onnxruntime, all pending nodes in one session, with graph optimizations
off so results match what the model computed before folding.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import onnx
from onnx import helper

from graphopt.ir import Graph, Node, Value

# Ops whose results numpy computes bit-exactly for any dtype (they only move data).
_MOVE = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Gather",
         "Slice", "Expand", "Shape", "Size", "ConstantOfShape", "Tile"}
# Arithmetic numpy computes exactly on integers and booleans.
_INT_ARITH = {"Add", "Sub", "Mul", "Div", "Neg", "Abs", "Min", "Max", "Equal", "Less", "Greater",
              "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "Where", "Range", "Cast", "Mod",
              "ReduceProd", "ReduceSum", "ReduceMin", "ReduceMax"}
NON_DETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                     "Bernoulli", "Multinomial"}


def numpy_eval(node: Node, ins: Sequence[Optional[np.ndarray]], opset: int) -> Optional[list[np.ndarray]]:
    """Outputs of `node` on constant inputs, or None when numpy should not compute it."""
    op = node.op_type
    present = [x for x in ins if x is not None]
    if op not in _MOVE:
        if op not in _INT_ARITH or any(x.dtype.kind not in "iub" for x in present):
            if not (op == "Cast" and present and present[0].dtype.kind in "iub"):
                return None
    try:
        out = _KERNELS[op](node, ins, opset)
    except (KeyError, IndexError, ValueError, TypeError):
        return None
    return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]


def _axes(node: Node, ins, opset: int, idx: int = 1):
    if len(ins) > idx and ins[idx] is not None:
        return [int(a) for a in np.asarray(ins[idx]).ravel()]
    a = node.attr("axes")
    return None if a is None else list(a)


def _reshape(node, ins, opset):
    x, shape = ins[0], [int(d) for d in ins[1]]
    if not node.attr("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _squeeze(node, ins, opset):
    axes = _axes(node, ins, opset)
    return np.squeeze(ins[0], axis=None if axes is None else tuple(axes))


def _unsqueeze(node, ins, opset):
    x = ins[0]
    axes = sorted(a % (x.ndim + len(_axes(node, ins, opset))) for a in _axes(node, ins, opset))
    for a in axes:
        x = np.expand_dims(x, a)
    return x


def _slice(node, ins, opset):
    x = ins[0]
    if opset < 10:
        starts, ends = node.attr("starts"), node.attr("ends")
        axes = node.attr("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = [int(v) for v in ins[1]], [int(v) for v in ins[2]]
        axes = [int(v) for v in ins[3]] if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
        steps = [int(v) for v in ins[4]] if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        sl[a] = onnx_slice(s, e, st, x.shape[a])
    return x[tuple(sl)]


# the end exporters write for "to the end" (torch's x[:, 1:]); a Slice clamps it to any dim
INT64_MAX = int(np.iinfo(np.int64).max)


def onnx_slice(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX Slice's clamping as a Python slice (Python clamps differently for negative steps)."""
    if step == 0:
        raise ValueError("slice step 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    return slice(start, None if end < 0 else end, step)


def _shape(node, ins, opset):
    shape = np.array(ins[0].shape, np.int64)
    start, end = node.attr("start", 0), node.attr("end", None)
    return shape[start:end]


# Cast targets numpy does not convert the way ONNX does (string formatting, float8 saturation, packed
# 4-bit): left to onnxruntime.
_CAST_TO_ORT = {8} | {getattr(onnx.TensorProto, n) for n in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
                                                              "FLOAT8E5M2FNUZ", "UINT4", "INT4", "FLOAT4E2M1")
                      if hasattr(onnx.TensorProto, n)}


def _cast(node, ins, opset):
    if node.attr("to") in _CAST_TO_ORT:
        raise TypeError("cast target left to onnxruntime")
    return ins[0].astype(helper.tensor_dtype_to_np_dtype(node.attr("to")))


def _range(node, ins, opset):
    return np.arange(ins[0], ins[1], ins[2]).astype(ins[0].dtype)


def _constant_of_shape(node, ins, opset):
    value = node.attr("value")
    fill = value.numpy().reshape(-1)[0] if value is not None else np.float32(0)
    return np.full([int(d) for d in ins[0]], fill, dtype=np.asarray(fill).dtype)


def _expand(node, ins, opset):
    shape = np.broadcast_shapes(ins[0].shape, tuple(int(d) for d in ins[1]))
    return np.broadcast_to(ins[0], shape).copy()


def _div(node, ins, opset):
    a, b = ins
    if a.dtype.kind in "iu":  # ONNX integer division truncates toward zero; stay in integers
        q = np.abs(a) // np.abs(b)
        return np.where((a < 0) != (b < 0), -q, q).astype(np.result_type(a, b))
    return a / b


def _mod(node, ins, opset):
    a, b = ins
    return np.fmod(a, b) if node.attr("fmod", 0) else np.mod(a, b)


def _reduce(fn):
    def k(node, ins, opset):
        axes = _axes(node, ins, opset)
        keep = bool(node.attr("keepdims", 1))
        if not axes:  # absent or empty
            if node.attr("noop_with_empty_axes", 0):
                return ins[0]
            axes = None
        return fn(ins[0], axis=None if axes is None else tuple(axes), keepdims=keep)
    return k


def _gather(node, ins, opset):
    return np.take(ins[0], ins[1], axis=node.attr("axis", 0))


def _concat(node, ins, opset):
    return np.concatenate([x for x in ins if x is not None], axis=node.attr("axis"))


def _flatten(node, ins, opset):
    x = ins[0]
    axis = node.attr("axis", 1)
    if axis < 0:
        axis += x.ndim  # valid axes are [-r, r]: r itself flattens everything into the first dim
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis:], dtype=np.int64))
    return x.reshape(outer, inner)


def _variadic(fn):
    def k(node, ins, opset):
        out = ins[0]
        for x in ins[1:]:
            out = fn(out, x)
        return out
    return k


_KERNELS = {
    "Identity": lambda n, i, o: i[0],
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": lambda n, i, o: np.transpose(i[0], n.attr("perm")),
    "Concat": _concat,
    "Gather": _gather,
    "Slice": _slice,
    "Expand": _expand,
    "Tile": lambda n, i, o: np.tile(i[0], [int(r) for r in i[1]]),
    "Shape": _shape,
    "Size": lambda n, i, o: np.array(i[0].size, np.int64),
    "ConstantOfShape": _constant_of_shape,
    "Cast": _cast,
    "Range": _range,
    "Add": lambda n, i, o: i[0] + i[1],
    "Sub": lambda n, i, o: i[0] - i[1],
    "Mul": lambda n, i, o: i[0] * i[1],
    "Div": _div,
    "Mod": _mod,
    "Neg": lambda n, i, o: -i[0],
    "Abs": lambda n, i, o: np.abs(i[0]),
    "Min": _variadic(np.minimum),
    "Max": _variadic(np.maximum),
    "Equal": lambda n, i, o: np.equal(i[0], i[1]),
    "Less": lambda n, i, o: np.less(i[0], i[1]),
    "Greater": lambda n, i, o: np.greater(i[0], i[1]),
    "LessOrEqual": lambda n, i, o: np.less_equal(i[0], i[1]),
    "GreaterOrEqual": lambda n, i, o: np.greater_equal(i[0], i[1]),
    "Not": lambda n, i, o: np.logical_not(i[0]),
    "And": lambda n, i, o: np.logical_and(i[0], i[1]),
    "Or": lambda n, i, o: np.logical_or(i[0], i[1]),
    "Xor": lambda n, i, o: np.logical_xor(i[0], i[1]),
    "Where": lambda n, i, o: np.where(i[0], i[1], i[2]),
    "ReduceProd": _reduce(np.prod),
    "ReduceSum": _reduce(np.sum),
    "ReduceMin": _reduce(np.min),
    "ReduceMax": _reduce(np.max),
}


def ort_eval(graph: Graph, nodes: list[Node], known: dict[int, np.ndarray],
             opsets: dict[str, int]) -> dict[int, np.ndarray]:
    """Run `nodes` (in order) in one onnxruntime session; their inputs are in `known` (value id
    → array) or produced by earlier nodes in the list. Returns value id → array for what ran;
    nodes onnxruntime cannot run are left out (one by one, if the batch fails)."""
    if not nodes:
        return {}
    try:
        return _run_batch(graph, nodes, known, opsets)
    except Exception:
        if len(nodes) == 1:
            return {}
    out: dict[int, np.ndarray] = {}
    for n in nodes:
        ready = all(v is None or v.id in known or v.id in out for v in n.inputs)
        if ready:
            try:
                out.update(_run_batch(graph, [n], {**known, **out}, opsets))
            except Exception:
                pass
    return out


def _run_batch(graph: Graph, nodes: list[Node], known: dict[int, np.ndarray], opsets) -> dict[int, np.ndarray]:
    import onnxruntime as ort

    from graphopt.onnx_io.emit import _Emitter

    emitter = _Emitter(None)
    produced = {v.id for n in nodes for v in n.outputs if v is not None}
    inits, protos, outputs = {}, [], []
    for n in nodes:
        for v in n.inputs:
            if v is not None and v.id not in produced and v.id not in inits:
                inits[v.id] = onnx.numpy_helper.from_array(np.asarray(known[v.id]), v.name)
        protos.append(emitter.node(n))
        outputs.extend(v for v in n.outputs if v is not None)
    g = helper.make_graph(protos, "fold", [], [helper.make_value_info(v.name, onnx.TypeProto()) for v in outputs],
                          list(inits.values()))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type for vi in list(model.graph.value_info) + list(model.graph.output)}
    del model.graph.output[:]
    for v in outputs:
        tp = types.get(v.name)
        if tp is None or not tp.tensor_type.elem_type:
            if v.dtype is None:
                raise ValueError(f"unknown type for {v.name}")
            tp = helper.make_tensor_type_proto(v.dtype, None)
        model.graph.output.append(helper.make_value_info(v.name, tp))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    results = sess.run([v.name for v in outputs], {})
    return {v.id: r for v, r in zip(outputs, results)}


def predicted_nbytes(value: Value) -> Optional[int]:
    """Bytes of a value whose shape and dtype are statically known."""
    if value.dtype is None or value.shape is None or not all(isinstance(d, int) for d in value.shape):
        return None
    try:
        item = helper.tensor_dtype_to_np_dtype(value.dtype).itemsize
    except Exception:
        return None
    return int(np.prod(value.shape, dtype=np.int64)) * item


def fold_value(graph: Graph, value: Optional[Value], opset: int, depth: int = 0) -> Optional[np.ndarray]:
    """The value's data if it is a constant or computed from constants by ops numpy evaluates
    exactly (through CastLike and Shape, which read only their input's type or static shape).
    None when it depends on run-time data."""
    if value is None or depth > 16:
        return None
    data = graph.const_value(value)
    if data is not None:
        return data
    node = graph.producer(value)
    if node is None or not node.is_standard or node.n_outputs != 1:
        return None
    ins = node.inputs
    if node.op_type == "CastLike" and len(ins) == 2 and ins[1] is not None and ins[1].dtype:
        x = fold_value(graph, ins[0], opset, depth + 1)
        return None if x is None else x.astype(helper.tensor_dtype_to_np_dtype(ins[1].dtype))
    if node.op_type in ("Shape", "Size") and ins[0] is not None and ins[0].shape is not None \
            and all(isinstance(d, int) for d in ins[0].shape):
        out = numpy_eval(node, [np.zeros(ins[0].shape, np.uint8)], opset)
        return None if out is None else out[0]
    vals = []
    for v in ins:  # stop at the first input that is not constant: an activation's ancestry is large
        x = fold_value(graph, v, opset, depth + 1) if v is not None else None
        if v is not None and x is None:
            return None
        vals.append(x)
    out = numpy_eval(node, vals, opset)
    return None if out is None else out[0]
