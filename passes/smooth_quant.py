"""smooth-quant: SmoothQuant-style migration of activation outliers into the weights (Xiao et al. 2023).

Where a LayerNormalization (or its decomposed ReduceMean ... Mul(gamma) [Add(beta)] form) is read
only by MatMul/Gemm layers with constant weights, each input channel j gets the factor
s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) (X: the normalized activation over the calibration
data, W_j: row j of the consumers' weights, all of them together): the LayerNorm's scale and
bias are divided by s, row j of every consumer's weight multiplied by s_j. The float outputs are
unchanged; the activation's channels become even, so its per-tensor INT8 scale fits them all.
A LayerNorm read by anything else is left alone. Needs calibration data (--calib, the run's
calibration settings); the statistics come from the first `samples` calibration samples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from graphopt.analysis.shapes import infer_shapes
from graphopt.ir import Graph
from graphopt.pipeline.base import Pass, PassContext, PassResult, require_at_least, require_fraction
from graphopt.quant import calibration, equalize

log = logging.getLogger("graphopt")


@dataclass
class SmoothQuantOptions:
    alpha: float = field(default=0.5, metadata={"help": "migration strength: 0 leaves the activation alone, 1 moves "
                                                        "its whole range into the weights"})
    samples: int = field(default=equalize.STATS_SAMPLES, metadata={"help": "calibration samples the activation "
                                                                           "statistics are taken on"})
    tolerance: float = field(default=0.01, metadata={"help": "a LayerNorm whose factors are all within this of 1 is "
                                                             "left alone"})

    def __post_init__(self):
        require_fraction(self, "alpha")
        require_at_least(self, "samples", 1)
        require_fraction(self, "tolerance")


class SmoothQuant(Pass):
    name = "smooth-quant"
    summary = "move activation outliers after a LayerNorm into the MatMul/Gemm weights that read it (exact; --calib)"
    Options = SmoothQuantOptions
    needs_calibration = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        o = self.options
        infer_shapes(ctx.model)  # ranks and element types the checks read
        sites, skipped = equalize.smooth_sites(graph, ctx.in_scope)
        report: dict = {"sites": [], "skipped": skipped, "alpha": o.alpha}
        ctx.reports[self.name] = report
        if not sites:
            return PassResult(False, {"layernorms": 0})
        settings = ctx.calibration or calibration.CalibrationSettings()
        if settings.data is None:
            raise calibration.CalibrationRequired(equalize.calibration_required(self.name))
        calib = calibration.split_samples(settings, ctx.model)[0]
        stats = equalize.channel_stats(ctx.model, {s.tensor: -1 for s in sites}, calib, settings.batch_size, o.samples)
        edits, done = equalize.smooth_plan(graph, sites, {k: v[0] for k, v in stats.items()}, o.alpha, o.tolerance)
        report["sites"] = done
        report["samples"] = min(o.samples, calib.size)
        if not edits:
            return PassResult(False, {"layernorms": 0})
        equalize.apply_edits(graph, edits)
        return PassResult(True, {"layernorms": len(done)})
