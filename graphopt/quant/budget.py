"""Accuracy control shared by the lossy passes (int8, prune): run candidate versions of a model
on held-out samples against the unchanged model, and find the fewest units (layers) to leave
unchanged so the loss stays within a budget.

A unit is anything with a `.node_id` (the IR id of the node it changes: ids survive
Model.clone(), names may be empty or shared) and a `.label` for reports (Node.label); a pass
describes a candidate by the units it changes and gives a function that applies those changes to
a copy of the model, finding the nodes there by id (Graph.node_by_id).
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

from graphopt.ir import Model
from graphopt.onnx_io import emit as backend
from graphopt.runtime.metrics import AccuracyReport, compare
from graphopt.runtime.session import Session

log = logging.getLogger("graphopt")

Apply = Callable[[Model, list], None]  # change `model` (a copy) by these units


class Evaluator:
    """The reference model's outputs on the held-out samples, and candidates measured against them."""

    def __init__(self, reference: Model, held, batch_size: int, apply: Apply):
        self.reference_model, self.held, self.batch_size, self.apply = reference, held, batch_size, apply
        self.reference, self.counts, self.labels = [], [], []
        with Session(backend.ort_view(reference), optimized=True) as sess:
            for feed, n, labels in held.batches(batch_size):
                self.reference.append(sess.run(feed))
                self.counts.append(n)
                self.labels.append(labels)

    def measure(self, units: list) -> AccuracyReport:
        """Accuracy of the reference changed by `units`."""
        m = self.reference_model.clone()
        self.apply(m, units)
        outs = []
        with Session(backend.ort_view(m), optimized=True) as sess:
            for feed, _, _ in self.held.batches(self.batch_size):
                outs.append(sess.run(feed))
        return compare(self.reference, outs, self.counts, self.labels)

    def sensitivity(self, units: Sequence) -> dict[int, float]:
        """Each unit's loss when it alone is changed, by node id."""
        return {u.node_id: self.measure([u]).drop() for u in units}


def within_budget(model: Model, held, batch_size: int, units: list, apply: Apply, max_drop: float, what: str,
                  sensitivity: bool = False) -> tuple[list, Optional[AccuracyReport], list[str], dict[int, float]]:
    """Measure `units` applied to `model` on the held-out samples; with a budget (`max_drop` >= 0)
    that the loss exceeds, leave the most sensitive units out. Returns (units to apply, their
    accuracy, labels of the units left out, per-unit sensitivity by node id when it was measured)."""
    if held is None:
        if max_drop >= 0:
            log.warning("%s: max_drop needs held-out samples (--calib data with at least 2 samples); not applied", what)
        return units, None, [], {}
    ev = Evaluator(model.clone(), held, batch_size, apply)
    accuracy = ev.measure(units)
    over = max_drop >= 0 and accuracy.drop() > max_drop
    scores = ev.sensitivity(units) if over or sensitivity else {}
    if not over:
        return units, accuracy, [], scores
    kept, accuracy, left_out = hold_budget(ev, units, scores, max_drop, accuracy, what)
    return kept, accuracy, left_out, scores


def budget_for_run(ctx, units: list, apply: Apply, max_drop: float, what: str):
    """within_budget on the run's held-out calibration samples (--calib): for the passes that
    need data only to measure (pruning). Returns (units to apply, accuracy, labels left out)."""
    from graphopt.quant.calibration import CalibrationSettings, split_samples

    settings = ctx.calibration or CalibrationSettings()
    held = split_samples(settings, ctx.model)[1]
    kept, accuracy, left_out, _ = within_budget(ctx.model, held, settings.batch_size, units, apply, max_drop, what)
    return kept, accuracy, left_out


def hold_budget(ev: Evaluator, units: list, sensitivity: dict[int, float], budget: float, full: AccuracyReport,
                what: str) -> tuple[list, AccuracyReport, list[str]]:
    """Leave the most sensitive units unchanged, as few as possible, until the loss is within
    `budget`. The loss shrinks (nearly) monotonically as units are left out, so their count is
    binary-searched. Returns (units to apply, their accuracy, labels left out, most sensitive first)."""
    order = sorted(units, key=lambda u: -sensitivity[u.node_id])
    lo, hi = 0, len(order)  # leaving out `lo` units is not enough; `hi` (all of them) is
    best: Optional[AccuracyReport] = None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        out = {u.node_id for u in order[:mid]}
        rep = ev.measure([u for u in units if u.node_id not in out])
        if rep.drop() <= budget:
            hi, best = mid, rep
        else:
            lo = mid
    out = {u.node_id for u in order[:hi]}
    kept = [u for u in units if u.node_id not in out]
    if best is None:
        best = ev.measure(kept)
    names = [u.label for u in order[:hi]]
    log.warning("%s: %d layer(s) left unchanged to hold max_drop=%g (loss %.3g -> %.3g): %s", what, len(names),
                budget, full.drop(), best.drop(), ", ".join(names))
    return kept, best, names


def layer_errors(reference: Model, changed: Model, feeds: list[dict], tensors: list[str]) -> dict[str, float]:
    """Relative L2 error (||changed - reference|| / ||reference||) of each named tensor that both
    models compute, over `feeds`: where along the graph a lossy change loses accuracy."""
    import numpy as np

    def run(model: Model) -> dict[str, list]:
        m = model.clone()
        names = [t for t in tensors if m.graph.value(t) is not None and m.graph.producer(m.graph.value(t)) is not None]
        outputs = {v.name for v in m.graph.outputs}
        m.graph.outputs.extend(m.graph.value(t) for t in names if t not in outputs)
        with Session(backend.ort_view(m), optimized=True) as sess:
            got = [sess.run(feed, names) for feed in feeds]
        return {t: [g[t] for g in got] for t in names}

    ref, new = run(reference), run(changed)
    errors = {}
    for t in tensors:
        if t in ref and t in new:
            num = sum(float(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)) for a, b in zip(ref[t], new[t]))
            den = sum(float(np.sum(np.asarray(a, np.float64) ** 2)) for a in ref[t])
            errors[t] = (num / den) ** 0.5 if den > 0 else 0.0
    return errors
