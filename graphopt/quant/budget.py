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
import time
from typing import Callable, Optional, Sequence

from graphopt.errors import UserInputError
from graphopt.ir import Model
from graphopt.onnx_io import emit as backend
from graphopt.runtime.metrics import AccuracyReport, compare
from graphopt.runtime.session import Session

log = logging.getLogger("graphopt")

Apply = Callable[[Model, list], None]  # change `model` (a copy) by these units
Floor = Callable[[AccuracyReport], list]  # what in a report is below the accuracy floor ([] when none)
SENSITIVITY_SECONDS = 300.0  # measuring every unit alone stops here; the rest count as least sensitive


class BelowFloor(UserInputError):
    """A lossy pass cannot reach the accuracy floor even with its most sensitive layers unchanged."""

    exit_code = 3


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

    def sensitivity(self, units: Sequence, seconds: float = SENSITIVITY_SECONDS) -> dict[int, float]:
        """Each unit's loss when it alone is changed, by node id; units not measured within
        `seconds` get 0 (least sensitive), with a warning."""
        start, out = time.perf_counter(), {}
        for u in units:
            if time.perf_counter() - start > seconds:
                log.warning("sensitivity: measured %d of %d layers in %.0fs; the rest count as least sensitive",
                            len(out), len(units), seconds)
                break
            rep = self.measure([u])
            # the loss max_drop budgets; where it is 0 (no top-1 flips on few samples), a small score
            # by the channel-normalized cosine still orders the layers for the accuracy floor
            drop = rep.drop()
            out[u.node_id] = drop if drop > 0 else (1.0 - rep.norm_cosine) * 0.01
        return {u.node_id: out.get(u.node_id, 0.0) for u in units}


def within_budget(model: Model, held, batch_size: int, units: list, apply: Apply, max_drop: float, what: str,
                  sensitivity: bool = False, floor: Optional[Floor] = None, max_fallback: float = 1.0
                  ) -> tuple[list, Optional[AccuracyReport], list[str], dict[int, float]]:
    """Measure `units` applied to `model` on the held-out samples; with a budget (`max_drop` >= 0)
    that the loss exceeds, or an accuracy `floor` the result is below, leave the most sensitive
    units out (at most `max_fallback` of them, a share). Returns (units to apply, their accuracy,
    labels of the units left out, per-unit sensitivity by node id when it was measured).
    BelowFloor when even that cannot reach the floor."""
    if held is None:
        if max_drop >= 0:
            log.warning("%s: max_drop needs held-out samples (--calib data with at least 2 samples); not applied", what)
        return units, None, [], {}
    ev = Evaluator(model.clone(), held, batch_size, apply)
    accuracy = ev.measure(units)
    floor = floor or (lambda rep: [])

    def good(rep: AccuracyReport) -> bool:
        return not (max_drop >= 0 and rep.drop() > max_drop) and not floor(rep)

    over = not good(accuracy)
    scores = ev.sensitivity(units) if over or sensitivity else {}
    if not over:
        return units, accuracy, [], scores
    kept, best, left_out = hold_budget(ev, units, scores, max_drop, accuracy, what, good=good,
                                       limit=int(len(units) * max_fallback))
    if floor(best):
        worst = sorted(units, key=lambda u: -scores[u.node_id])[:3]
        problem = "; ".join(floor(best))
        raise BelowFloor(f"{what}: {problem} on {best.samples} held-out samples even with the {len(left_out)} most "
                         f"sensitive of {len(units)} layers unchanged; most sensitive: "
                         + ", ".join(f"{u.label} ({scores[u.node_id]:.3g})" for u in worst)
                         + "; give more representative --calib data, raise max_fallback, or lower the floor "
                         "(validate { min_cosine / min_norm_cosine / min_top1 })")
    return kept, best, left_out, scores


def budget_for_run(ctx, units: list, apply: Apply, max_drop: float, what: str):
    """within_budget on the run's held-out calibration samples (--calib): for the passes that
    need data only to measure (pruning). Returns (units to apply, accuracy, labels left out)."""
    from graphopt.quant.calibration import CalibrationSettings, split_samples

    settings = ctx.calibration or CalibrationSettings()
    held = split_samples(settings, ctx.model)[1]
    kept, accuracy, left_out, _ = within_budget(ctx.model, held, settings.batch_size, units, apply, max_drop, what)
    return kept, accuracy, left_out


def hold_budget(ev: Evaluator, units: list, sensitivity: dict[int, float], budget: float, full: AccuracyReport,
                what: str, good: Optional[Callable[[AccuracyReport], bool]] = None,
                limit: Optional[int] = None) -> tuple[list, AccuracyReport, list[str]]:
    """Leave the most sensitive units unchanged, as few as possible (at most `limit`), until the
    result is `good` (default: the loss is within `budget`). The loss shrinks (nearly)
    monotonically as units are left out, so their count is binary-searched. Returns (units to
    apply, their accuracy, labels left out, most sensitive first); when even `limit` units left
    out is not good, that result (the caller checks it)."""
    good = good or (lambda rep: rep.drop() <= budget)
    order = sorted(units, key=lambda u: -sensitivity[u.node_id])
    limit = len(order) if limit is None else min(limit, len(order))
    lo, hi = 0, limit  # leaving out `lo` units is not enough; `hi` is assumed to be until measured
    best: Optional[AccuracyReport] = None
    if limit < len(order):
        rep = ev.measure([u for u in units if u.node_id not in {x.node_id for x in order[:limit]}])
        if not good(rep):
            return units, rep, [u.label for u in order[:limit]]
        best = rep
    while hi - lo > 1:
        mid = (lo + hi) // 2
        out = {u.node_id for u in order[:mid]}
        rep = ev.measure([u for u in units if u.node_id not in out])
        if good(rep):
            hi, best = mid, rep
        else:
            lo = mid
    out = {u.node_id for u in order[:hi]}
    kept = [u for u in units if u.node_id not in out]
    if best is None:
        best = ev.measure(kept)
    names = [u.label for u in order[:hi]]
    log.warning("%s: %d layer(s) left unchanged to hold %s (loss %.3g -> %.3g): %s", what, len(names),
                f"max_drop={budget:g}" if budget >= 0 else "the accuracy floor", full.drop(), best.drop(),
                ", ".join(names))
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
