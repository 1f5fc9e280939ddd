"""fp16 / bf16: run a float32 model's weights and compute in half precision, keeping numerically
sensitive ops in float32.

- Kept in float32: the op types in `keep_ops` (reductions, exponentials, normalizations, Softmax,
  random ops, ... by default), node-name globs in `keep_nodes`, and every op that reads or writes a
  tensor whose magnitude on the calibration data (--calib, else seeded random inputs) exceeds
  `max_abs` (default: half of float16's 65504), so nothing overflows to inf.
- Everything else that computes in float32 converts: its float32 constants are stored in the new
  type, and a Cast is inserted only where a value crosses between the two regions (one per value).
  Cast pairs that round-trip a half value through float32 are removed.
- With `keep_io=true` (the default) graph inputs and outputs stay float32 (a Cast at each edge).

Validation reports the error against the float32 model (cosine, SNR).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from graphopt.analysis.shapes import infer_shapes
from graphopt.errors import GraphoptError
from graphopt.ir import Graph, Node, Tensor, Value
from graphopt.ir.dtypes import HALF_TYPES, DataType, from_numpy, np_dtype
from graphopt.lint.sparsity import (
    LAYER_OPS,  # the layers whose per-layer error the report charts
)
from graphopt.onnx_io import opset
from graphopt.pipeline.base import Pass, PassContext, PassResult, require_at_least
from graphopt.quant import budget as lossy
from graphopt.quant import calibration
from graphopt.quant.layer_options import matching_glob, words

log = logging.getLogger("graphopt")

FLOAT = DataType.FLOAT
FP16_MAX = 65504.0
TYPE_ATTRS = ("value_float", "value_floats", "dtype")  # Constant / EyeLike / Random*: the type is an attribute
KEEP_OPS = ("ReduceMean,ReduceSum,ReduceSumSquare,ReduceL2,ReduceLogSumExp,ReduceProd,Exp,Log,Pow,Sqrt,Reciprocal,"
            "Softmax,LogSoftmax,LayerNormalization,InstanceNormalization,GroupNormalization,Erf,CumSum,Range,TopK,"
            "NonMaxSuppression,RandomNormal,RandomUniform,RandomNormalLike,RandomUniformLike,Multinomial,Bernoulli,"
            "Einsum,Loop,If,Scan")
# Inputs an op takes as float32 whatever its data type (ONNX type constraints)
FLOAT32_INPUTS = {("Resize", 1), ("Resize", 2), ("Upsample", 1), ("RoiAlign", 1)}


@dataclass
class PrecisionOptions:
    keep_ops: str = field(default=KEEP_OPS, metadata={"help": "op types kept in float32 (comma list)"})
    keep_nodes: str = field(default="", metadata={"help": "node-name globs kept in float32 (comma list)"})
    keep_io: bool = field(default=True, metadata={"help": "graph inputs and outputs stay float32"})
    max_abs: float = field(default=FP16_MAX / 2, metadata={"help": "ops touching larger magnitudes on calibration "
                                                                    "data stay float32 (0: do not measure)"})

    def __post_init__(self):
        require_at_least(self, "max_abs", 0)


class _ConvertPrecision(Pass):
    Options = PrecisionOptions
    lossless = False
    target: ClassVar[np.dtype]

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        o = self.options
        half = from_numpy(self.target)
        if any(v.dtype in HALF_TYPES for g in graph.walk() for v in g.values):
            return PassResult(False, {"note": "the model already has half-precision tensors"})
        infer_shapes(ctx.model)
        keep_ops, keep_globs = set(words(o.keep_ops)), words(o.keep_nodes)
        type_str = f"tensor({self.target.name})"
        hot = self._out_of_range(ctx) if o.max_abs > 0 and self.target == np.float16 else set()
        order = graph.toposort()
        from_ints = _integer_derived(graph, order)
        convert: list[Node] = []
        kept: dict[str, str] = {}
        for node in order:
            floats = [v for v in node.inputs + node.outputs if v is not None and v.dtype == FLOAT]
            if not floats or not node.is_standard:
                continue
            reason = None
            if node.op_type in keep_ops:
                reason = "op type kept in float32"
            elif matching_glob(node, keep_globs):
                reason = "kept by keep_nodes"
            elif any(v.name in hot for v in floats):
                reason = f"|values| above {o.max_abs:g} on the calibration data"
            elif any(not isinstance(k, int) for v in node.outputs if v is not None for _, k in graph.uses(v)):
                reason = "its output is read inside a subgraph (If/Loop/Scan bodies stay float32)"
            elif not ctx.in_scope(node):
                reason = "outside the pass's scope"
            elif not opset.takes_type(node.op_type, ctx.opset, type_str):
                reason = f"its ONNX schema at opset {ctx.opset} has no {self.target.name} version"
            elif any(k in node.attrs for k in TYPE_ATTRS):
                reason = "an attribute sets its output type"
            elif node.outputs and node.outputs[0] is not None and node.outputs[0].id in from_ints:
                reason = "it computes on sizes cast from integers (shape arithmetic)"
            elif self._constant_out_of_range(graph, node):
                reason = f"a constant it reads does not fit {self.target.name}"
            if reason:
                kept[node.label] = reason
            else:
                convert.append(node)
        if not convert:
            ctx.reports[self.name] = {"converted": 0, "kept_float32": kept, "casts": 0}
            return PassResult(False, {"converted": 0})
        reference = ctx.model.clone()
        layers = {n.outputs[0].name: n.label for n in convert if n.op_type in LAYER_OPS and n.outputs[0] is not None}
        casts = self._convert(graph, convert, half)
        removed = _drop_round_trips(graph, half)
        report = {"converted": len(convert), "kept_float32": kept, "casts": casts - removed}
        if layers and self.target == np.float16:  # onnxruntime's CPU runs float16 (bfloat16 it cannot)
            try:
                errors = lossy.layer_errors(reference, ctx.model, self._feeds(ctx), list(layers))
                report["layer_error"] = {layers[t]: e for t, e in errors.items()}
                report["layer_error_note"] = ("measured with onnxruntime's CPU kernels, which compute some float16 "
                                              "ops in float32: the target's error can be larger")
            except GraphoptError as e:  # a report, not the conversion: say so and go on
                log.warning("fp16: per-layer error not measured: %s", e)
        ctx.reports[self.name] = report
        return PassResult(True, {"converted": len(convert), "kept_float32": len(kept), "casts": casts - removed})

    def _constant_out_of_range(self, graph: Graph, node: Node) -> bool:
        """A float constant input that overflows, or has non-zero values that vanish, in half."""
        for v in node.inputs:
            data = graph.const_value(v) if v is not None and v.dtype == FLOAT else None
            if data is None or data.size == 0:
                continue
            with np.errstate(over="ignore"):  # overflow is what we are looking for
                half = data.astype(self.target)
            if not np.all(np.isfinite(half.astype(np.float32))[np.isfinite(data)]) or np.any((half == 0) & (data != 0)):
                return True
        return False

    def _feeds(self, ctx: PassContext) -> list[dict]:
        """A few feeds to measure per-layer error on: calibration data if given, else random."""
        settings = ctx.calibration or calibration.CalibrationSettings()
        if settings.data is not None:
            samples = calibration.split_samples(settings, ctx.model)[0]
        else:
            samples = calibration.random_samples(ctx.model, dataclasses.replace(settings, random_samples=4))
        return [feed for feed, _, _ in samples.batches(settings.batch_size)][:4]

    def _out_of_range(self, ctx: PassContext) -> set[str]:
        """Float tensors whose magnitude on calibration (or random) data exceeds max_abs."""
        settings = ctx.calibration or calibration.CalibrationSettings()
        g = ctx.model.graph
        tensors = [v.name for v in g.values if v.dtype == FLOAT and v.const is None and g.producer(v) is not None]
        if not tensors:
            return set()
        if settings.data is not None:
            samples = calibration.split_samples(settings, ctx.model)[0]
        else:  # a few seeded random inputs: catches what overflows on any input, not real-data peaks
            samples = calibration.random_samples(ctx.model, dataclasses.replace(settings, random_samples=8))
        ranges = calibration.collect_ranges(ctx.model, tensors, samples, settings, "minmax")
        hot = {name for name, amax in ranges.amax.items() if amax > self.options.max_abs}
        hot |= set(ranges.nonfinite)
        return hot

    def _convert(self, graph: Graph, convert: list[Node], half: int) -> int:
        """Retype the nodes in `convert`; Casts where values cross regions. Returns Casts added."""
        inside = {n.id for n in convert}
        cast_cache: dict[tuple[int, int], Value] = {}
        half_consts: dict[int, Value] = {}
        added = 0

        def cast(v: Value, to: int) -> Value:
            nonlocal added
            key = (v.id, to)
            if key not in cast_cache:
                node = graph.add_node("Cast", [v], [f"{v.name}_{'half' if to == half else 'float'}"], {"to": to},
                                      name=f"{v.name}/Cast")
                node.doc_string = f"created by graphopt pass {self.name}"
                out = node.outputs[0]
                out.dtype, out.shape = to, v.shape
                cast_cache[key] = out
                added += 1
            return cast_cache[key]

        # 1. outputs of converted nodes (and, without keep_io, graph inputs) become half; their
        #    float32 readers get a Cast back
        retyped = [v for v in graph.inputs if v.dtype == FLOAT and v.const is None
                   and all(isinstance(k, int) for _, k in graph.uses(v))] if not self.options.keep_io else []
        for v in retyped:
            v.dtype = half
            for user, index in graph.uses(v):
                if user.id not in inside or (user.op_type, index) in FLOAT32_INPUTS:
                    graph.set_input(user, index, cast(v, FLOAT))
        for node in convert:
            for v in node.outputs:
                if v is None or v.dtype != FLOAT:
                    continue
                v.dtype = half
                if v.is_graph_output and self.options.keep_io:  # its float32 copy also serves float32 readers
                    out = graph.insert_after_output(v, "Cast", {"to": FLOAT}).outputs[0]
                    out.dtype = FLOAT
                    cast_cache[(v.id, FLOAT)] = out
                    added += 1
                outside = [(u, i) for u, i in graph.uses(v) if (u.id not in inside or (u.op_type, i) in FLOAT32_INPUTS)
                           and not (u.op_type == "Cast" and u.outputs[0] is cast_cache.get((v.id, FLOAT)))]
                for user, index in outside:
                    graph.set_input(user, index, cast(v, FLOAT))
            if node.op_type == "Cast" and node.attr("to") == FLOAT:
                graph.set_attr(node, "to", half)
            for name in ("value",):  # ConstantOfShape / Constant float payloads
                a = node.attrs.get(name)
                if a is not None and isinstance(a.value, Tensor) and a.value.dtype == FLOAT:
                    graph.set_attr(node, name, Tensor.from_numpy(a.value.numpy().astype(self.target)))
        # 2. float32 inputs of converted nodes: constants stored in half, the rest Cast
        for node in convert:
            for index, v in enumerate(node.inputs):
                if v is None or v.dtype != FLOAT or (node.op_type, index) in FLOAT32_INPUTS:
                    continue
                data = graph.const_value(v)
                if data is not None and not v.is_graph_input:
                    if v.id not in half_consts:
                        half_consts[v.id] = graph.add_constant(data.astype(self.target), f"{v.name}_{self.target.name}")
                    graph.set_input(node, index, half_consts[v.id])
                    if v.const is not None and not graph.has_uses(v) and not v.is_graph_output:
                        graph.remove_value(v)  # the float32 initializer nothing reads any more
                else:
                    graph.set_input(node, index, cast(v, half))
        return added


def _integer_derived(graph: Graph, order: list[Node]) -> set[int]:
    """Float values computed only from integers cast to float (sizes, indices): Shape -> Cast ->
    Mul -> Floor -> Cast. In half precision such sizes round wrong past 2048."""
    derived: set[int] = set()
    for node in order:
        outs = [v for v in node.outputs if v is not None and v.dtype == FLOAT]
        if not outs:
            continue
        ins = [v for v in node.inputs if v is not None and graph.const_value(v) is None]
        if node.op_type == "Cast":
            src = ins[0] if ins else None
            if src is not None and src.dtype is not None and np.dtype(np_dtype(src.dtype)).kind in "iub":
                derived.update(v.id for v in outs)
        elif ins and all(v.id in derived for v in ins):
            derived.update(v.id for v in outs)
    return derived


def _drop_round_trips(graph: Graph, half: int) -> int:
    """Cast(half -> float) -> Cast(float -> half) gives back the half value exactly: read it."""
    removed = 0
    for node in graph.toposort():
        if node.op_type != "Cast" or node.attr("to") != half:
            continue
        src = node.inputs[0]
        p = graph.producer(src) if src is not None else None
        if p is None or p.op_type != "Cast" or p.attr("to") != FLOAT:
            continue
        original = p.inputs[0]
        if original is None or original.dtype != half or node.outputs[0].is_graph_output:
            continue
        graph.replace_all_uses(node.outputs[0], original)
        graph.remove_node(node)
        removed += 1
        if not graph.has_uses(p.outputs[0]) and not p.outputs[0].is_graph_output:
            graph.remove_node(p)
            removed += 1
    return removed


class Fp16(_ConvertPrecision):
    name = "fp16"
    summary = "float16 weights and compute; sensitive and out-of-range ops stay float32, Casts at the borders"
    target = np.dtype(np.float16)


class Bf16(_ConvertPrecision):
    name = "bf16"
    summary = "bfloat16 weights and compute (float32 range); sensitive ops stay float32, Casts at the borders"
    target = np.dtype(np_dtype(DataType.BFLOAT16))