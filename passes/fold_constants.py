"""fold-constants: replace nodes whose inputs are all constant by their results.

Shape arithmetic runs in numpy, the rest in one onnxruntime session per graph. `Shape` and `Size`
of values whose shape is fully static fold too. A result much larger than its inputs (Expand,
Tile, ConstantOfShape, Range of constants) is left alone above `max_bytes`, so folding never
bloats the file. Nodes with subgraphs and random ops are never folded; a subgraph folds what it
computes from outer constants, but never from loop-carried values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphopt.analysis.constants import (
    NON_DETERMINISTIC,
    numpy_eval,
    ort_eval,
    predicted_nbytes,
)
from graphopt.analysis.shapes import infer_shapes, static_shape
from graphopt.ir import Graph, Node
from graphopt.ir.dtypes import NO_NUMPY_ARITHMETIC, np_dtype
from graphopt.pipeline.base import Pass, PassContext, PassResult

# Quantization is the point of these: folding a DequantizeLinear of an INT8 weight would turn a
# quantized model back into a float one.
NEVER_FOLD = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
MAX_SWEEPS = 8  # folding, then shape inference, then folding what became static, ...


@dataclass
class FoldConstantsOptions:
    max_bytes: int = field(default=1 << 20, metadata={"help": "largest folded result that may exceed twice its inputs"})
    constant_nodes: bool = field(default=True, metadata={"help": "turn Constant nodes into initializers"})


class FoldConstants(Pass):
    name = "fold-constants"
    summary = "evaluate nodes whose inputs are constant (numpy for shapes, onnxruntime otherwise)"
    Options = FoldConstantsOptions

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        stats = {"folded": 0, "constant_nodes": 0, "skipped_large": 0}
        for sweep in range(MAX_SWEEPS):
            # folding makes shapes static (a Reshape's shape, a Loop body's inputs), and a Shape
            # of a static shape folds: sweep again after inference rather than leave it to the
            # next round of the whole fold group
            if infer_shapes(ctx.model) == 0 and sweep > 0:
                break  # inference learnt nothing new from the last sweep's results
            before = stats["folded"]
            for g in list(graph.walk()):
                self._fold_graph(g, ctx, stats)
            if stats["folded"] == before or not any(
                    n.op_type in ("Shape", "Size") and n.inputs and static_shape(n.inputs[0]) is None
                    for g in graph.walk() for n in g.nodes):
                break  # nothing folded, or no shape read left that inference could make static
        return PassResult(stats["folded"] + stats["constant_nodes"] > 0, stats)

    def _fold_graph(self, g: Graph, ctx: PassContext, stats: dict) -> None:
        known: dict[int, np.ndarray] = {}  # value id -> data, for this graph's constants and results
        results: dict[int, np.ndarray] = {}
        pending: list[Node] = []  # for onnxruntime
        pending_out: set[int] = set()

        def data(v):
            if v is None:
                return None
            if v.id not in known:
                c = g.const_value(v)
                if c is not None:
                    known[v.id] = c
            return known.get(v.id)

        for node in g.toposort():
            if node.op_type == "Constant" and node.is_standard or not ctx.in_scope(node):
                continue
            if not self._foldable(node):
                continue
            ins = node.inputs
            if node.op_type == "CastLike" and len(ins) == 2 and ins[1] is not None and ins[1].dtype:
                x = data(ins[0])  # only the type of the second input matters
                if x is not None:
                    self._record(node, [x.astype(np_dtype(ins[1].dtype))], known, results)
                continue
            if node.op_type in ("Shape", "Size") and ins and static_shape(ins[0]) is not None:
                arr = np.zeros(static_shape(ins[0]), np.uint8)  # only its shape is read
                out = numpy_eval(node, [arr], ctx.opset)
                self._record(node, out, known, results)
                continue
            if any(v is not None and v.id in pending_out for v in ins):
                # only with every other input constant: one run-time input in the batch fails it
                # all (then every node runs alone, slowly)
                if all(v is None or v.id in pending_out or data(v) is not None for v in ins):
                    self._defer(node, pending, pending_out)
                continue
            vals = [data(v) for v in ins]
            if any(v is not None and x is None for v, x in zip(ins, vals)):
                continue
            if self._too_large(node, vals):
                stats["skipped_large"] += 1
                continue
            out = numpy_eval(node, vals, ctx.opset)
            if out is None:
                self._defer(node, pending, pending_out)
            else:
                self._record(node, out, known, results)
        if pending:
            ran = ort_eval(g, pending, known, ctx.model.opset_imports)
            for node in pending:
                outs = [ran.get(v.id) if v is not None else None for v in node.outputs]
                if all(o is not None for o, v in zip(outs, node.outputs) if v is not None):
                    self._record(node, outs, known, results)
        stats["skipped_large"] += self._replace(g, results, stats)
        if self.options.constant_nodes:
            self._constant_nodes_to_initializers(g, stats)

    @staticmethod
    def _foldable(node: Node) -> bool:
        if node.op_type == "Identity" and node.outputs[0] is not None and node.outputs[0].is_graph_output:
            return False  # it carries a graph output's name for a constant: nothing left to fold
        if "broadcast" in node.attrs:
            return False  # pre-opset-7 broadcasting by attributes: numpy would broadcast differently
        if node.attr("to") in NO_NUMPY_ARITHMETIC or any(
                v is not None and v.dtype in NO_NUMPY_ARITHMETIC for v in node.inputs + node.outputs):
            return False  # float8 / 4-bit arithmetic is left to the runtime that defines it
        return (node.is_standard and node.op_type not in NON_DETERMINISTIC and node.op_type not in NEVER_FOLD
                and not any(True for _ in node.subgraphs()) and node.n_outputs > 0)

    @staticmethod
    def _defer(node: Node, pending: list, pending_out: set) -> None:
        pending.append(node)
        pending_out.update(v.id for v in node.outputs if v is not None)

    def _too_large(self, node: Node, vals) -> bool:
        in_bytes = sum(x.nbytes for x in vals if x is not None)
        limit = max(self.options.max_bytes, 2 * in_bytes)
        for v in node.outputs:
            n = predicted_nbytes(v) if v is not None else None
            if n is not None and n > limit:
                return True
        if node.op_type in ("ConstantOfShape", "Expand", "Tile", "Range"):
            try:  # the result's size follows from its (constant) inputs; do not build it to find out
                if node.op_type == "ConstantOfShape":
                    n = int(np.prod(vals[0], dtype=np.int64)) * 8
                elif node.op_type == "Expand":
                    n = int(np.prod(np.broadcast_shapes(vals[0].shape, tuple(int(d) for d in vals[1])), dtype=np.int64)) * vals[0].itemsize
                elif node.op_type == "Tile":
                    n = vals[0].nbytes * int(np.prod(vals[1], dtype=np.int64))
                else:
                    n = int(abs((vals[1] - vals[0]) / vals[2]) + 1) * vals[0].itemsize
            except (TypeError, ValueError, ZeroDivisionError, IndexError):
                return True
            return n > limit
        return False

    @staticmethod
    def _record(node: Node, outs, known: dict, results: dict) -> None:
        if outs is None:
            return
        for v, arr in zip(node.outputs, outs):
            if v is not None and arr is not None:
                known[v.id] = results[v.id] = np.asarray(arr)

    def _replace(self, g: Graph, results: dict[int, np.ndarray], stats: dict) -> int:
        """Turn results into initializers; keep only those some non-folded reader needs."""
        skipped = 0
        by_id = {v.id: v for v in g.values}
        for vid, arr in results.items():
            v = by_id.get(vid)
            if v is None:
                continue
            node = v.producer
            in_bytes = sum((g.const_value(x).nbytes if g.const_value(x) is not None else 0) for x in node.inputs if x is not None)
            if arr.nbytes > max(self.options.max_bytes, 2 * in_bytes) and node.op_type not in ("Shape", "Size"):
                skipped += 1
                continue
            if v.dtype is not None and arr.dtype != np_dtype(v.dtype):
                continue  # a kernel disagreed with the declared type: leave the node alone
            if v.dtype in NO_NUMPY_ARITHMETIC or arr.dtype.kind == "V":
                continue  # float8 / 4-bit constants do not round-trip through numpy exactly
            const = g.add_constant(arr, v.name + "_folded" if not v.is_graph_output else v.name + "_value")
            g.replace_all_uses(v, const)
        for node in reversed(g.toposort()):
            if node.op_type != "Constant" and all(v is None or v.id in results for v in node.outputs) \
                    and not any(v is not None and g.has_uses(v) for v in node.outputs):
                g.remove_node(node)
                stats["folded"] += 1
        for v in g.initializers:
            if not g.has_uses(v) and not v.is_graph_input:
                g.remove_value(v)
        return skipped

    @staticmethod
    def _constant_nodes_to_initializers(g: Graph, stats: dict) -> None:
        for node in g.nodes:
            if node.op_type != "Constant" or not node.is_standard:
                continue
            (out,) = node.outputs
            if not g.has_uses(out):  # left dead by folding its readers
                g.remove_node(node)
                stats["constant_nodes"] += 1
                continue
            arr = g.const_value(out)
            if arr is None or arr.dtype == object or out.is_graph_output:
                continue
            const = g.add_constant(arr, out.name)
            g.replace_all_uses(out, const)
            g.remove_node(node)
            g.rename(const, out.name)
            stats["constant_nodes"] += 1
