"""correct-bias: bias correction of the expected INT8 weight-quantization error (Nagel et al. 2019).

For each Conv, Gemm and MatMul that quantize-int8 quantizes with its default placement and a
bias that can take it (a Conv without one gets one; a MatMul needs an Add of one constant per
channel after it), bias -= (W_q - W) E[x]: W_q the weight as INT8 stores it
(quantize_int8.dequantized_weight, per channel unless per_channel=false) and E[x] the mean of each
input channel of the layer's input over the calibration data. For a Conv, (W_q - W) E[x] is
measured rather than computed from per-channel means: a copy of the conv with W_q - W as its
weight runs on the calibration samples and its output is averaged over samples and positions.
In the interior that equals E[x] of each channel times the weight error summed over the kernel's
taps; at a padded border the taps on the padding read 0, not E[x], which the per-channel formula
would miss (it overshoots there by those taps' share, a large share on small feature maps) and
the measurement includes. The correction is one bias per
channel, so at borders it is the average over positions, not exact per position.

Lossy on purpose: it changes the float model so that the INT8 one computes, on average, what the
float model did; it is meant to run right before quantize-int8 with the same options
(quantize-int8's `equalize` option applies it only to the layers that end in INT8).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphopt.analysis.shapes import infer_shapes
from graphopt.ir import Graph
from graphopt.pipeline.base import Pass, PassContext, PassResult, require_at_least
from graphopt.quant import calibration, equalize
from graphopt.quant.layer_options import words
from graphopt.quant.placement import PlacementRules, default_skip, plan


@dataclass
class CorrectBiasOptions:
    per_channel: bool = field(default=True, metadata={"help": "the weights will be quantized per channel (as int8's "
                                                              "per_channel)"})
    min_channels: int = field(default=4, metadata={"help": "as int8's min_channels: smaller convs stay FP32 and "
                                                           "are not corrected"})
    exclude_ops: str = field(default="", metadata={"help": "op types left unchanged (comma list)"})
    exclude_nodes: str = field(default="", metadata={"help": "node-name globs left unchanged (comma list)"})
    samples: int = field(default=equalize.STATS_SAMPLES, metadata={"help": "calibration samples the input means are "
                                                                           "taken on"})

    def __post_init__(self):
        require_at_least(self, "samples", 1)


class CorrectBias(Pass):
    name = "correct-bias"
    summary = "subtract each layer's expected INT8 weight error from its bias (lossy; --calib; run right before int8)"
    Options = CorrectBiasOptions
    lossless = False
    needs_calibration = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        from graphopt.passes.quantize_int8 import dequantized_weight

        o = self.options
        settings = ctx.calibration or calibration.CalibrationSettings()
        rules = PlacementRules(skip=default_skip(settings.method),  # the layers int8 quantizes by default min_channels=o.min_channels, per_channel=o.per_channel,
                               exclude_ops=words(o.exclude_ops), exclude_nodes=words(o.exclude_nodes))
        infer_shapes(ctx.model)  # ranks and element types the checks read
        layers, _ = plan(graph, rules, ctx.in_scope)
        sites, skipped = equalize.bias_sites(graph, layers)
        report: dict = {"layers": [], "skipped": skipped}
        ctx.reports[self.name] = report
        if not sites:
            return PassResult(False, {"layers": 0})
        if settings.data is None:
            raise calibration.CalibrationRequired(equalize.calibration_required(self.name))
        calib = calibration.split_samples(settings, ctx.model)[0]
        means, measured = equalize.bias_statistics(ctx.model, sites, dequantized_weight, calib, settings.batch_size,
                                                   o.samples)
        edits, done = equalize.bias_plan(graph, sites, means, dequantized_weight, measured)
        report["layers"] = done
        report["samples"] = min(o.samples, calib.size)
        if not edits:
            return PassResult(False, {"layers": 0})
        equalize.apply_edits(graph, edits)
        return PassResult(True, {"layers": len(done)})
