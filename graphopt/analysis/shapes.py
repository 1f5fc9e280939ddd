"""Shape and type inference for the IR, by onnx's shape inference on a light copy of the model
(large weights as stubs: their bytes are never needed)."""

from __future__ import annotations

import re

import onnx

from graphopt.ir import Model
from graphopt.onnx_io.load import declared_dims

# onnx's data propagation sizes some buffers by declared dims (Gather by its indices' length):
# a damaged file declaring a dim of 2**63-1 would have it allocate until the process is killed.
MAX_PROPAGATED_DIM = 1 << 24


def _absurd_dims(model: Model) -> bool:
    return any(isinstance(d, int) and d > MAX_PROPAGATED_DIM
               for g in model.graph.walk() for v in g.values if v.shape for d in v.shape)


# How onnx's inference runs on a model (Model.inference_mode). A model with subgraphs starts
# strict: one declared shape inside a subgraph that does not hold (Paddle2ONNX declares rank-1
# loop states as scalars) fails inference of the whole If or Loop around it, so nothing in it
# would be inferred or corrected. When strict inference fails there, shapes inside subgraphs are
# left to inference from then on (element types only are declared; what the declarations knew
# stays: inference never erases a dim); when it fails elsewhere, or the model has no subgraphs,
# inference is lenient, with every declaration.
STRICT, LENIENT, SUBGRAPH_TYPES_ONLY = "strict", "lenient", "subgraph types only"

# A declared intermediate shape the nodes contradict (jax2onnx declares an NCHW Relu's output with
# NHWC dims) would stay: lenient inference keeps a declaration it disagrees with and infers what
# follows from it, and the output would fail the checker the way the input does. So the first
# inference of every model is strict; when that fails outside subgraphs, the main graph is
# inferred once more with its intermediate values declared by element type only, and each
# declared shape that inference contradicts (another rank, another size) is replaced and
# remembered (Model.corrected_declarations). Where inference knows less than a declaration (a
# custom op's output), the declaration stays. A model that passes strict inference pays nothing;
# a run whose passes never infer shapes (-p none) keeps the declarations as they are, and so does a
# model with an op onnx has no schema for (a custom domain): strict inference reports nothing there.


def infer_shapes(model: Model) -> int:
    """Fill in dtype and shape of every value onnx can infer; returns how many values changed.
    Existing information is kept where inference knows less (it never erases a dim)."""
    from graphopt.onnx_io.emit import light_proto

    if model.shapes_inferred_at == (id(model.graph), model.graph.typing_changes):
        return 0  # nothing it could learn from changed since the last inference (only removals, say)
    data_prop = not _absurd_dims(model)
    owners = {n.op_type for g in model.graph.walk() for n in g.nodes if any(True for _ in n.subgraphs())}
    mode = model.inference_mode if owners else LENIENT
    first, model.declarations_checked = not model.declarations_checked, True
    corrected = 0
    inferred = None
    if mode == STRICT or first:
        try:
            inferred = onnx.shape_inference.infer_shapes(light_proto(model), strict_mode=True, data_prop=data_prop)
        except onnx.shape_inference.InferenceError as e:
            failed = set(re.findall(r"op_type:(\w+)", str(e)))
            mode = model.inference_mode = SUBGRAPH_TYPES_ONLY if failed & owners else LENIENT
            if first and mode == LENIENT:
                try:
                    corrected = _correct_declarations(model, data_prop)
                except Exception:  # best effort, like inference itself: the declarations stay
                    pass
        except Exception:  # not a finding about the model (a proto too large, say): lenient inference below
            pass
    try:
        if inferred is None:
            inferred = onnx.shape_inference.infer_shapes(
                light_proto(model, subgraph_shapes=mode != SUBGRAPH_TYPES_ONLY), data_prop=data_prop)
    except Exception:  # inference is best effort: passes work without it, just less
        return 0
    types: dict[str, onnx.TypeProto] = {}
    _collect(inferred.graph, types)
    changed = corrected
    for g in model.graph.walk():
        for v in g.values:
            if v.is_capture or v.const is not None:
                continue
            tp = types.get(v.name)
            if tp is None or tp.WhichOneof("value") != "tensor_type":
                continue
            tt = tp.tensor_type
            dtype = tt.elem_type or v.dtype
            shape = v.shape
            if tt.HasField("shape"):
                shape = _merge(v.shape, declared_dims(tt))
            if (dtype, shape) != (v.dtype, v.shape):
                v.dtype, v.shape = dtype, shape
                changed += 1
    if mode == SUBGRAPH_TYPES_ONLY:
        changed += _unsay_loop_state_ranks(model)
    model.shapes_inferred_at = (id(model.graph), model.graph.typing_changes)
    return changed


def _correct_declarations(model: Model, data_prop: bool) -> int:
    """Replace each declared shape of a main-graph intermediate value that inference, without
    those declarations, contradicts; returns how many."""
    from graphopt.onnx_io.emit import light_proto

    types: dict[str, onnx.TypeProto] = {}
    _collect(onnx.shape_inference.infer_shapes(light_proto(model, value_shapes=False), data_prop=data_prop).graph, types)
    interface = {v.id for v in model.graph.inputs + model.graph.outputs}
    corrected = []
    for v in model.graph.values:
        tp = types.get(v.name)
        if v.id in interface or v.const is not None or tp is None or tp.WhichOneof("value") != "tensor_type" \
                or not tp.tensor_type.HasField("shape"):
            continue
        computed = declared_dims(tp.tensor_type)
        if shapes_contradict(v.shape, computed):
            # replaced whole: a declaration wrong in one dim (NHWC dims on an NCHW value) is not
            # trusted in the others
            corrected.append((v.name, v.shape, computed))
            v.shape = computed
    if corrected:  # subgraphs' captures copied the outer shapes when they were made
        fixed = {model.graph.value(name).id for name, _, _ in corrected}
        for g in model.graph.walk():
            for c in g.captures():
                source = g.capture_source(c)
                if source.id in fixed:
                    c.shape = source.shape
                    fixed.add(c.id)
    model.corrected_declarations = tuple(corrected)
    return len(corrected)


def _unsay_loop_state_ranks(model: Model) -> int:
    """Forget the declared shape of a Loop body's carried input whose rank its initial value
    contradicts (inference leaves carried inputs alone: they may change shape between
    iterations, but not on the first)."""
    forgotten = 0
    for g in model.graph.walk():
        for node in g.nodes:
            body = node.attr("body") if node.op_type == "Loop" else None
            if body is None:
                continue
            for start, carried in zip(node.inputs[2:], body.inputs[2:]):
                if start is not None and start.shape is not None and carried.shape is not None \
                        and len(start.shape) != len(carried.shape):
                    carried.shape = None
                    forgotten += 1
    return forgotten


def shapes_contradict(declared, computed) -> bool:
    """Whether one shape rules out the other: another rank, or two sizes that differ (None, a
    symbol or an unknown rank rules nothing out)."""
    if declared is None or computed is None:
        return False
    if len(declared) != len(computed):
        return True
    return any(isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(declared, computed))


def _merge(old, new):
    """Prefer known ints, then named symbols, over what is less specific."""
    if old is None or len(old) != len(new):
        return new
    out = []
    for a, b in zip(old, new):
        if isinstance(a, int):
            out.append(a)
        elif isinstance(b, int):
            out.append(b)
        elif isinstance(a, str) and not a.startswith("unk__"):
            out.append(a)
        else:
            out.append(b if b is not None else a)
    return tuple(out)


def inferred_types(model: Model) -> dict[str, onnx.TypeProto]:
    """Value name -> the type onnx's inference gives it on a light copy of `model`, subgraphs
    included; the model itself is not touched. {} when inference fails."""
    from graphopt.onnx_io.emit import light_proto

    types: dict[str, onnx.TypeProto] = {}
    try:
        _collect(onnx.shape_inference.infer_shapes(light_proto(model)).graph, types)
    except Exception:  # inference is best effort
        pass
    return types


def _collect(gp: onnx.GraphProto, types: dict) -> None:
    for vi in list(gp.input) + list(gp.value_info) + list(gp.output):
        if vi.HasField("type"):
            types[vi.name] = vi.type
    for n in gp.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _collect(a.g, types)
            for sub in a.graphs:
                _collect(sub, types)


def static_shape(value) -> tuple[int, ...] | None:
    """The value's shape if every dim is a known int."""
    if value is None or value.shape is None or not all(isinstance(d, int) for d in value.shape):
        return None
    return tuple(value.shape)
