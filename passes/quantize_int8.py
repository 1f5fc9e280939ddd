"""quantize-int8: insert QuantizeLinear/DequantizeLinear the way TensorRT's explicit
quantization expects (docs/ARCHITECTURE.md, TensorRT facts), with calibrated activation ranges.

- Weights: per-channel symmetric INT8 along the output axis, written with an explicit `axis`,
  stored as INT8 initializers + DequantizeLinear (weights=float: float + Q/DQ). Never a bias.
- Activations: per-tensor symmetric INT8, zero point 0, scale = range / 127 (strictly positive).
- Placement and default exclusions: see _int8_placement.py.
- Equalization (option `equalize`, default auto: cross-layer equalization, SmoothQuant, bias
  correction, each kept only if it lowers the held-out error): the section at the end of this file.
- Ranges come from calibration (graphopt.quant.calibration); part of the data is held out to report
  accuracy against FP32. With `max_drop`, the most sensitive layers fall back to FP32 until
  the loss on held-out data is within budget.

The model must be opset >= 13 (per-channel DequantizeLinear); the `int8` alias raises it and
folds BatchNorm into the convs first, so weight scales are computed on the folded weights.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from graphopt.analysis.shapes import infer_shapes
from graphopt.errors import PipelineError, UserInputError
from graphopt.ir import Graph, Model, Tensor
from graphopt.ir.dtypes import DataType
from graphopt.pipeline.base import Pass, PassContext, PassResult, require_fraction
from graphopt.quant import budget as lossy
from graphopt.quant import calibration, equalize
from graphopt.quant.layer_options import LossyLayerOptions, words
from graphopt.runtime.validate import LossyThresholds, check_thresholds
from graphopt.quant.placement import (
    SKIP_RULES,
    Layer,
    PlacementRules,
    Skipped,
    concat_ties,
    default_skip,
    plan,
)

log = logging.getLogger("graphopt")

QMAX = 127  # symmetric narrow range [-127, 127], as TensorRT quantizes
MIN_SCALE = 1e-30  # scales stay strictly positive, and normal float32 numbers
MIN_OPSET = 13
WEIGHT_MODES = ("int8", "float")
# A model with any of these is quantized already: quantizing it again would stack scales.
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                 "ConvInteger", "MatMulInteger"}
FLOAT, INT8 = DataType.FLOAT, DataType.INT8
DEFAULT_SKIP = ",".join(SKIP_RULES)
EQUALIZATIONS = ("cle", "smoothquant", "bias")  # the equalize option's words, in the order they are applied


@dataclass
class QuantizeInt8Options(LossyLayerOptions):
    method: str = field(default="", metadata={"help": "calibration method: auto (per tensor, the candidate range "
                                                      "with the least error in its layer's output), minmax, "
                                                      "percentile, entropy or mse (default: the run's, auto unless set)"})
    weights: str = field(default="int8", metadata={"help": "int8: INT8 initializers + DequantizeLinear; float: float + Q/DQ"})
    per_channel: bool = field(default=True, metadata={"help": "per-channel weight scales (per-tensor if false)"})
    residual: bool = field(default=True, metadata={"help": "Q/DQ on the skip input of residual Adds after a conv"})
    bmm: bool = field(default=False, metadata={"help": "also quantize MatMuls whose operands are both activations"})
    skip: str = field(default=",".join(SKIP_RULES), metadata={"help": "default exclusions to apply (comma list; '' for "
                                                                     "none); with method=auto the default omits gelu"})
    min_channels: int = field(default=4, metadata={"help": "convs with fewer output channels, or fewer products per "
                                                            "output (Cin/group x kernel), stay FP32 (tiny-conv)"})
    force_nodes: str = field(default="", metadata={"help": "node-name globs quantized despite a default exclusion"})
    sensitivity: bool = field(default=False, metadata={"help": "report every layer's sensitivity even without a budget"})
    max_fallback: float = field(default=0.5, metadata={"help": "share of the layers that may stay FP32 to reach the "
                                                                "accuracy floor; beyond it the run fails (exit 3)"})
    equalize: str = field(default="auto", metadata={"help": "auto (try cle, smoothquant, bias; keep each that lowers "
                                                            "the held-out error), none, or a comma list of them "
                                                            "(applied without measuring)"})
    smooth_alpha: float = field(default=0.5, metadata={"help": "SmoothQuant migration strength (0 to 1)"})

    def __post_init__(self):
        if self.method and self.method not in calibration.METHODS:
            raise PipelineError(f"option 'method' must be one of {', '.join(calibration.METHODS)}, got {self.method!r}")
        if self.weights not in WEIGHT_MODES:
            raise PipelineError(f"option 'weights' must be int8 or float, got {self.weights!r}")
        if not 0 <= self.max_fallback <= 1:
            raise PipelineError(f"option 'max_fallback' must be between 0 and 1, got {self.max_fallback!r}")
        if self.equalize not in ("auto", "none") and (not words(self.equalize) or any(
                k not in EQUALIZATIONS for k in words(self.equalize))):
            raise PipelineError(f"option 'equalize' must be auto, none or a comma list of {', '.join(EQUALIZATIONS)}, "
                                f"got {self.equalize!r}")
        require_fraction(self, "smooth_alpha")
        unknown = [s for s in words(self.skip) if s not in SKIP_RULES]
        if unknown:
            raise PipelineError(f"option 'skip' has unknown exclusion {unknown[0]!r}; known: {', '.join(SKIP_RULES)}")


class QuantizeInt8(Pass):
    name = "quantize-int8"
    summary = "INT8 Q/DQ for TensorRT: per-channel weights, calibrated per-tensor activations"
    Options = QuantizeInt8Options
    lossless = False
    needs_calibration = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        model, o = ctx.model, self.options
        if any(n.op_type in QUANTIZED_OPS for g in graph.walk() for n in g.nodes):
            return PassResult(False, {"note": "already quantized"})
        if model.opset < MIN_OPSET:
            raise UserInputError(f"quantize-int8 needs opset >= {MIN_OPSET} (per-channel DequantizeLinear); the model "
                                f"is opset {model.opset}: run raise-opset first (the int8 alias does)")
        infer_shapes(model)
        settings = ctx.calibration or calibration.CalibrationSettings()
        method = o.method or settings.method
        skip = default_skip(method) if o.skip == DEFAULT_SKIP else words(o.skip)
        rules = PlacementRules(skip=skip, min_channels=o.min_channels, residual=o.residual, bmm=o.bmm,
                               per_channel=o.per_channel, exclude_ops=words(o.exclude_ops),
                               exclude_nodes=words(o.exclude_nodes), force_nodes=words(o.force_nodes))
        layers, skipped = plan(graph, rules, ctx.in_scope)
        layers, unfolded = _drop_unfolded_bn(graph, layers)
        skipped += unfolded
        report: dict = {"skipped": [s.to_dict() for s in skipped]}
        ctx.reports[self.name] = report
        if not layers:
            return PassResult(False, {"layers": 0, "skipped": len(skipped)})

        calib, held = _samples(model, settings)
        tensors = _tensors_to_calibrate(graph, layers)
        amax, seconds, chosen = _ranges(model, tensors, calib, settings, method, layers, o)
        if chosen:
            report["ranges"] = chosen
        report["calibration"] = {"method": method, "data": calib.origin, "samples": calib.size,
                                 "held_out": held.size if held else 0, "seconds": seconds,
                                 "source": f"calibrated in {seconds:.3f}s" if seconds is not None
                                 else f"cache {settings.cache}"}

        edits: list = []
        if o.equalize != "none":  # see "equalization" below: edits of constants, not applied yet
            edits, amax, report["equalization"] = _equalize(model, layers, tensors, amax, calib, held, settings,
                                                            method, o, ctx.in_scope)

        floor = ctx.accuracy_floor or LossyThresholds()
        report["floor"] = asdict(floor.effective())
        active, accuracy, fallback, sensitivity = lossy.within_budget(
            model, held, settings.batch_size, layers, lambda m, units: _apply_equalized(m, units, edits, amax, o),
            o.max_drop, "quantize-int8 (kept in FP32)", sensitivity=o.sensitivity,
            floor=lambda rep: check_thresholds(rep, floor), max_fallback=o.max_fallback,
            stats=report.setdefault("budget", {}))

        reference = model.clone()
        if edits:
            _edit(graph, edits, active)
            layers, active = equalize.refresh(graph, layers), equalize.refresh(graph, active)
        stats = apply(graph, active, amax, o)
        report["layer_error"] = _layer_errors(reference, model, held or calib, settings, active)
        report["layers"] = _layer_report(graph, layers, active, amax, sensitivity)
        report["fallback"] = fallback
        report["accuracy"] = accuracy.to_dict() if accuracy else None
        report["fp32_reference"] = "the model before quantize-int8 (after the passes before it)"
        if accuracy:
            n8 = len(effective(active))
            log.info("quantize-int8: %d layers INT8, %d FP32; held-out %s", n8, len(layers) - n8,
                     accuracy.summary())
        kept = report.get("equalization", {}).get("kept")
        return PassResult(bool(active), {"layers": len(effective(active)), "fallback": len(fallback),
                                         "skipped": len(skipped), **stats,
                                         **({"equalized": "+".join(kept) or "none"} if kept is not None else {})})


def _drop_unfolded_bn(graph: Graph, layers: list[Layer]):
    """Convs still followed by a BatchNormalization would get scales of unfolded weights."""
    keep, skipped = [], []
    for L in layers:
        node = graph.node_by_id(L.node_id)
        uses = graph.uses(node.outputs[0]) if L.kind in ("conv", "gemm", "matmul") else []
        if uses and all(u.op_type == "BatchNormalization" for u, _ in uses):
            skipped.append(Skipped(L.node_id, L.label, L.op, "a BatchNormalization follows it: fold it first (fuse), "
                                                             "so the weight scales fit the folded weights"))
        else:
            keep.append(L)
    return keep, skipped


def _samples(model: Model, settings: calibration.CalibrationSettings):
    if settings.data is None:
        raise calibration.CalibrationRequired(calibration.CALIBRATION_REQUIRED)
    if isinstance(settings.data, str) and settings.data == calibration.RANDOM:
        log.warning("quantize-int8: calibrating on %d random samples (--calib random); INT8 ranges from random "
                    "inputs rarely fit real ones. Give representative data with --calib DATA.npz",
                    settings.random_samples)
    return calibration.split_samples(settings, model)


def _tensors_to_calibrate(graph: Graph, layers: list[Layer]) -> list[str]:
    names = {name for L in layers for _, name in L.activations}
    for _, inputs in concat_ties(graph, names):
        names.add(inputs[0][0].outputs[0].name)  # the Concat's output: its range covers its inputs
    return sorted(names)


def _bytes_per_sample(graph: Graph, tensors: list[str]) -> int:
    """Bytes of the requested activations for one sample (unknown dims counted as 32)."""
    total = 0
    for name in tensors:
        v = graph.value(name)
        dims = list(v.shape or ())[1:] if v is not None else []
        total += 4 * int(np.prod([d if isinstance(d, int) else 32 for d in dims], dtype=np.int64))
    return total


def _ranges(model: Model, tensors: list[str], calib, settings, method: str, layers: list[Layer],
            o: QuantizeInt8Options) -> tuple[dict[str, float], Optional[float], dict]:
    """(tensor -> range, seconds spent calibrating (None when the cache had them), per tensor the
    method=auto chose and its error)."""
    if settings.cache:
        calibration.check_cache_path(settings.cache)
        fingerprint = calibration.model_fingerprint(model)
        cached = calibration.read_cache(settings.cache, method, settings, calib.key, fingerprint, tensors)
        if cached is not None:
            log.info("quantize-int8: ranges from the calibration cache %s", settings.cache)
            return cached, None, {}
    result = calibration.collect_ranges(model, tensors, calib, settings, method,
                                        _bytes_per_sample(model.graph, tensors))
    for name, count in result.nonfinite.items():
        log.warning("quantize-int8: %s had %d non-finite values during calibration; they were ignored", name, count)
    chosen: dict = {}
    if method == "auto":
        import time

        from graphopt.quant import range_search

        start = time.perf_counter()
        result.amax, chosen = range_search.choose(
            model.graph, model.opset, layers, result.candidates, result.kept, dequantized_weight)
        result.seconds += time.perf_counter() - start
        counts: dict[str, int] = {}
        for c in chosen.values():
            counts[c["method"]] = counts.get(c["method"], 0) + 1
        log.info("quantize-int8: ranges chosen by their effect on each layer: %s",
                 ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
    if settings.cache:
        calibration.write_cache(settings.cache, method, settings, calib.key, fingerprint, result.amax)
    return result.amax, result.seconds, chosen


# ------------------------------------------------------------------------------ applying
def activation_scale(amax: float) -> float:
    return max(float(amax) / QMAX, MIN_SCALE) if amax > 0 else 1.0


def weight_scales(w: np.ndarray, axis: Optional[int]) -> np.ndarray:
    """Symmetric scales of a weight: one per slice along `axis`, or one for all (axis None).
    A channel of zeros gets scale 1 (any positive scale maps it to 0)."""
    a = np.abs(w)
    amax = a.max() if axis is None else a.max(axis=tuple(i for i in range(w.ndim) if i != axis))
    s = np.asarray(amax, np.float32) / np.float32(QMAX)
    s = np.where(s > 0, np.maximum(s, np.float32(MIN_SCALE)), np.float32(1.0))
    return s.astype(np.float32)


def quantize_weight(w: np.ndarray, scale: np.ndarray, axis: Optional[int]) -> np.ndarray:
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.rint(w / scale.reshape(shape) if axis is not None else w / scale)
    return np.clip(q, -QMAX, QMAX).astype(np.int8)


def dequantized_weight(w: np.ndarray, axis: Optional[int]) -> np.ndarray:
    """The float values a weight has after INT8 quantization and DequantizeLinear."""
    scale = weight_scales(w, axis)
    shape = [-1 if i == axis else 1 for i in range(w.ndim)] if axis is not None else []
    s = scale.reshape(shape) if axis is not None else scale
    return (quantize_weight(w, scale, axis).astype(np.float32) * s).astype(np.float32)


def apply(graph: Graph, layers: list[Layer], amax: dict[str, float], o: QuantizeInt8Options) -> dict:
    """Insert the Q/DQ pairs of `layers`. Activations quantized for several consumers share one
    pair; a Concat's inputs and output share one scale."""
    layers = effective(layers)
    sites: dict[str, list] = {}
    for L in layers:
        for idx, name in L.activations:
            sites.setdefault(name, []).append((graph.node_by_id(L.node_id), idx))
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for name, inputs in concat_ties(graph, set(sites)):
        root = find(name)
        parent[find(inputs[0][0].outputs[0].name)] = root
        for concat, idx, x in inputs:
            sites.setdefault(x, []).append((concat, idx))
            parent[find(x)] = root
    group_amax: dict[str, float] = {}
    for name in list(sites) + list(parent):
        r = find(name)
        const = graph.const_value(graph.value(name))  # a constant Concat input: its own range counts
        here = float(np.abs(const).max(initial=0.0)) if const is not None else amax.get(name, 0.0)
        group_amax[r] = max(group_amax.get(r, 0.0), here)

    for name, consumers in sites.items():
        v = graph.value(name)
        scale = np.float32(activation_scale(group_amax[find(name)]))
        s = graph.add_constant(scale, f"{name}_scale")
        zp = graph.add_constant(np.int8(0), f"{name}_zero_point")
        q = _node(graph, "QuantizeLinear", [v, s, zp], f"{name}_quantized", name)
        q.outputs[0].dtype, q.outputs[0].shape = INT8, v.shape
        dq = _node(graph, "DequantizeLinear", [q.outputs[0], s, zp], f"{name}_dequantized", name)
        dq.outputs[0].dtype, dq.outputs[0].shape = FLOAT, v.shape
        for node, idx in consumers:
            graph.set_input(node, idx, dq.outputs[0])

    done: dict[tuple, object] = {}
    for L in layers:
        if L.weight is None:
            continue
        idx, name, axis = L.weight
        key = (name, axis)
        if key not in done:
            done[key] = _quantized_weight(graph, graph.value(name), axis, o.weights)
        graph.set_input(graph.node_by_id(L.node_id), idx, done[key])
    return {"activation_qdq": len(sites), "weights": len(done)}


def effective(layers: list[Layer]) -> list[Layer]:
    """The layers that take effect: a residual Add's Q/DQ only with its conv quantized."""
    ids = {L.node_id for L in layers}
    return [L for L in layers if L.requires is None or L.requires in ids]


def _node(graph: Graph, op: str, inputs, out: str, base: str):
    node = graph.add_node(op, inputs, [out], name=f"{base}/{op}")
    node.doc_string = "created by graphopt pass quantize-int8"
    return node


def _quantized_weight(graph: Graph, w, axis: Optional[int], mode: str):
    data = graph.const_value(w)
    scale = weight_scales(data, axis)
    attrs = {"axis": axis} if axis is not None else None
    s = graph.add_constant(scale, f"{w.name}_scale")
    zp = graph.add_constant(np.zeros(scale.shape, np.int8), f"{w.name}_zero_point")
    if mode == "int8":
        src = graph.add_initializer(f"{w.name}_quantized", Tensor.from_numpy(quantize_weight(data, scale, axis)))
    else:
        q = graph.add_node("QuantizeLinear", [w, s, zp], [f"{w.name}_quantized"], attrs, name=f"{w.name}/QuantizeLinear")
        q.doc_string = "created by graphopt pass quantize-int8"
        src = q.outputs[0]
        src.dtype, src.shape = INT8, w.shape
    dq = graph.add_node("DequantizeLinear", [src, s, zp], [f"{w.name}_dequantized"], attrs,
                        name=f"{w.name}/DequantizeLinear")
    dq.doc_string = "created by graphopt pass quantize-int8"
    out = dq.outputs[0]
    out.dtype, out.shape = FLOAT, w.shape
    return out


def _layer_errors(reference: Model, model: Model, samples, settings, layers: list[Layer]) -> dict[str, float]:
    """Relative error of every quantized layer's output against the float model (a few batches)."""
    g = model.graph
    by_tensor = {g.node_by_id(L.node_id).outputs[0].name: L.label for L in effective(layers)
                 if L.kind in ("conv", "gemm", "matmul", "bmm")}
    feeds = [feed for feed, _, _ in samples.batches(settings.batch_size)][:4]
    errors = lossy.layer_errors(reference, model, feeds, list(by_tensor))
    return {by_tensor[t]: e for t, e in errors.items()}


def _layer_report(graph: Graph, layers: list[Layer], active: list[Layer], amax, sensitivity) -> list[dict]:
    on = {L.node_id for L in effective(active)}
    out = []
    for L in layers:
        entry = {"node": L.label, "op": L.op, "kind": L.kind, "precision": "int8" if L.node_id in on else "fp32",
                 "inputs": [{"tensor": name, "amax": amax.get(name), "scale": activation_scale(amax.get(name, 0.0))}
                            for _, name in L.activations]}
        if L.weight is not None:
            w = graph.const_value(graph.value(L.weight[1])) if graph.value(L.weight[1]) is not None else None
            if w is not None:
                s = weight_scales(w, L.weight[2])
                entry["weight"] = {"tensor": L.weight[1], "axis": L.weight[2], "channels": int(s.size),
                                   "scale_min": float(s.min()), "scale_max": float(s.max())}
        if L.node_id in sensitivity:
            entry["sensitivity"] = sensitivity[L.node_id]
        out.append(entry)
    return out


# ------------------------------------------------------------------------------ equalization
# The equalize option (issue 15): cross-layer equalization, SmoothQuant and bias correction
# (graphopt/quant/equalize.py; the passes equalize-cross-layer, smooth-quant, correct-bias) as
# edits of constants. With auto, each that applies is tried on top of those kept so far: its
# changed activations calibrated again, the whole model quantized, measured on the held-out
# samples against the model before this pass; kept when it lowers 1 - channel-normalized cosine
# by more than equalize.MARGIN. The edits are applied with the Q/DQ, bias corrections only for
# the layers that end in INT8.
def _equalize(model: Model, layers: list[Layer], tensors: list[str], amax: dict[str, float], calib, held, settings,
              method: str, o: QuantizeInt8Options, in_scope) -> tuple[list, dict[str, float], dict]:
    """(edits, ranges with the changed activations calibrated again, the report's "equalization")."""
    import time

    auto = o.equalize == "auto"
    wanted = EQUALIZATIONS if auto else tuple(k for k in EQUALIZATIONS if k in words(o.equalize))
    report: dict = {"mode": o.equalize, "tried": [], "kept": []}
    if auto and held is None:
        report["note"] = "not tried: measuring needs held-out samples (--calib data with at least 2 samples)"
        return [], amax, report
    g = model.graph
    calibrated = set(tensors)

    def edited(edits: list) -> Model:
        m = model.clone()
        equalize.apply_edits(m.graph, edits)
        return m

    def recalibrate(m: Model, names: list[str]) -> dict[str, float]:
        names = sorted(set(names) & calibrated)
        if not names:
            return {}
        result = calibration.collect_ranges(m, names, calib, settings, method, _bytes_per_sample(m.graph, names))
        if method == "auto":
            from graphopt.quant import range_search

            result.amax, _ = range_search.choose(m.graph, m.opset, equalize.refresh(m.graph, layers),
                                                 result.candidates, result.kept, dequantized_weight)
        return {k: v for k, v in result.amax.items() if k in names}

    def plan(kind: str, edits: list) -> equalize.Candidate:
        """The candidate `kind` on top of `edits`; structural checks first (they cost nothing)."""
        if kind == "cle":
            pairs, skipped = equalize.cle_pairs(g, in_scope)
            if not pairs:
                return equalize.Candidate(kind, False, {"reason": "no Conv/Gemm/MatMul chain to equalize",
                                                        "not_crossed": len(skipped)})
            m = edited(edits)
            new, done = equalize.cle_plan(m.graph, pairs)
            return equalize.Candidate(kind, bool(new), {"pairs": len(done), "not_crossed": len(skipped)}, new,
                                      [t for d in done for t in d["tensors"]])
        if kind == "smoothquant":
            sites, _ = equalize.smooth_sites(g, in_scope)
            if not sites:
                return equalize.Candidate(kind, False, {"reason": "no LayerNorm read only by MatMul/Gemm layers"})
            m = edited(edits)
            stats = equalize.channel_stats(m, {s.tensor: -1 for s in sites}, calib, settings.batch_size)
            new, done = equalize.smooth_plan(m.graph, sites, {k: v[0] for k, v in stats.items()}, o.smooth_alpha)
            return equalize.Candidate(kind, bool(new), {"layernorms": len(done)}, new,
                                      [t for s in sites for t in s.between])
        sites, _ = equalize.bias_sites(g, layers)
        if not sites:
            return equalize.Candidate(kind, False, {"reason": "no quantized layer with a bias to correct"})
        m = edited(edits)
        means, measured = equalize.bias_statistics(m, sites, dequantized_weight, calib, settings.batch_size)
        new, done = equalize.bias_plan(m.graph, sites, means, dequantized_weight, measured)
        return equalize.Candidate(kind, bool(new), {"layers": len(done)}, new, [])

    kept_edits: list = []
    if not auto:
        for kind in wanted:
            c = plan(kind, kept_edits)
            if c.applies:
                kept_edits += c.edits
                amax = {**amax, **recalibrate(edited(kept_edits), c.changed)}
                c.kept = True
                report["kept"].append(kind)
            report["tried"].append(c.to_dict())
        return kept_edits, amax, report

    measure = equalize.HeldOut(model, held, settings.batch_size)

    def error(edits: list, ranges: dict[str, float]) -> tuple[float, float]:
        m = edited(edits)
        apply(m.graph, equalize.refresh(m.graph, layers), ranges, o)
        rep = measure.measure(m)
        return equalize.error_of(rep), rep.norm_cosine

    start = time.perf_counter()
    best, report["baseline"] = error([], amax)
    for kind in wanted:
        t0 = time.perf_counter()
        if t0 - start > equalize.SECONDS:
            report["tried"].append({"name": kind, "applies": None,
                                    "note": f"not tried: equalization took over {equalize.SECONDS:.0f} s"})
            continue
        c = plan(kind, kept_edits)
        if c.applies:
            ranges = {**amax, **recalibrate(edited(kept_edits + c.edits), c.changed)}
            err, c.metric = error(kept_edits + c.edits, ranges)
            c.kept = err < best * (1.0 - equalize.MARGIN)
            if c.kept:
                best, amax, kept_edits = err, ranges, kept_edits + c.edits
                report["kept"].append(kind)
        c.seconds = time.perf_counter() - t0
        report["tried"].append(c.to_dict())
    report["norm_cosine"] = 1.0 - best
    report["held_out"] = held.size
    report["seconds"] = round(time.perf_counter() - start, 3)
    log.info("quantize-int8: equalization (held-out channel-normalized cosine, all layers INT8): baseline %.5f; %s",
             report["baseline"], "; ".join(f"{t['name']} " + (f"{t['norm_cosine']:.5f} {'kept' if t['kept'] else 'not kept'}"
                                                                if t.get("applies") else "does not apply")
                                          for t in report["tried"]))
    return kept_edits, amax, report


def _edit(graph: Graph, edits: list, layers: list[Layer]) -> None:
    equalize.apply_edits(graph, equalize.for_layers(edits, {L.node_id for L in effective(layers)}))


def _apply_equalized(model: Model, units: list[Layer], edits: list, amax: dict[str, float],
                     o: QuantizeInt8Options) -> None:
    """What within_budget measures: the edits (bias corrections of the INT8 layers only), then the Q/DQ."""
    if edits:
        _edit(model.graph, edits, units)
        units = equalize.refresh(model.graph, units)
    apply(model.graph, units, amax, o)
