"""Accuracy control shared by the lossy passes (int8, prune): run candidate versions of a model
on held-out samples against the unchanged model, and find the fewest units (layers) to leave
unchanged so the loss stays within a budget.

A unit is anything with a `.node_id` (the IR id of the node it changes: ids survive
Model.clone(), names may be empty or shared) and a `.label` for reports (Node.label); a pass
describes a candidate by the units it changes and gives a function that applies those changes to
a copy of the model, finding the nodes there by id (Graph.node_by_id).

Sensitivity (each unit's loss when it alone is changed) is incremental: the FP32 model runs once
more with the activations the units read exposed (kept for all held-out samples, at most
CACHE_MB at a time); each unit then re-runs only the nodes downstream of what it changed (found
by comparing the changed copy with the reference: new nodes, other inputs, constants or
attributes), their other inputs fed from that cache, and the outputs it cannot reach are the
reference's. Units are measured in parallel, several onnxruntime sessions at once.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from graphopt.errors import GraphoptError, UserInputError
from graphopt.ir import Model
from graphopt.onnx_io import emit as backend
from graphopt.runtime.metrics import AccuracyReport, Prepared, compare
from graphopt.runtime.session import Session, usable_cores

log = logging.getLogger("graphopt")

Apply = Callable[[Model, list], None]  # change `model` (a copy) by these units
Floor = Callable[[AccuracyReport], list]  # what in a report is below the accuracy floor ([] when none)
SENSITIVITY_SECONDS = 300.0  # measuring every unit alone stops here; the rest count as least sensitive
CACHE_MB = 1024  # FP32 activations kept for incremental sensitivity at a time (more: in several rounds)
MAX_WORKERS = 8  # onnxruntime sessions measuring units at once, at most (and at most the usable cores)


class BelowFloor(UserInputError):
    """A lossy pass cannot reach the accuracy floor even with its most sensitive layers unchanged."""

    exit_code = 3


@dataclass
class _Cut:
    """What re-running one unit takes: the nodes downstream of its changes (ids in the changed
    copy), the values they read from outside (the cache), and the graph outputs they compute.
    `nodes` None: measure the whole model (a graph this cannot cut)."""

    unit: object
    nodes: Optional[set] = None
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    first: int = 0  # topological position of the first changed node (the cache rounds go in this order)


class Evaluator:
    """The reference model's outputs on the held-out samples, and candidates measured against them."""

    def __init__(self, reference: Model, held, batch_size: int, apply: Apply, cache_mb: int = CACHE_MB,
                 workers: Optional[int] = None):
        self.reference_model, self.held, self.batch_size, self.apply = reference, held, batch_size, apply
        self.cache_mb = cache_mb
        self.workers = workers
        self.reference, self.counts, self.labels = [], [], []
        self.stats: dict = {}
        self._lock = threading.Lock()  # cloning and emitting: Python work, one thread at a time
        with Session(backend.ort_view(reference), optimized=True) as sess:
            for feed, n, labels in held.batches(batch_size):
                self.reference.append(sess.run(feed))
                self.counts.append(n)
                self.labels.append(labels)
        self.prepared = Prepared(self.reference, self.counts)  # the reference's side of every comparison

    def measure(self, units: list, intra_threads: int = 0) -> AccuracyReport:
        """Accuracy of the reference changed by `units` (the whole model runs)."""
        with self._lock:
            m = self.reference_model.clone()
            self.apply(m, units)
            view = backend.ort_view(m)
            del m
            self.stats["whole_model_runs"] = self.stats.get("whole_model_runs", 0) + 1
        outs = []
        with Session(view, optimized=True, intra_threads=intra_threads) as sess:
            for feed, _, _ in self.held.batches(self.batch_size):
                outs.append(sess.run(feed))
        return compare(self.reference, outs, self.counts, self.labels, self.prepared)

    def sensitivity(self, units: Sequence, seconds: float = SENSITIVITY_SECONDS) -> dict[int, float]:
        """Each unit's loss when it alone is changed, by node id; units not measured within
        `seconds` get 0 (least sensitive), with a warning."""
        start = time.perf_counter()
        deadline = start + seconds
        reports = self.sensitivity_reports(units, deadline)
        out = {}
        for u in units:
            rep = reports.get(u.node_id)
            if rep is None:
                continue
            # the loss max_drop budgets; where it is 0 (no top-1 flips on few samples), a small score
            # by the channel-normalized cosine still orders the layers for the accuracy floor
            drop = rep.drop()
            out[u.node_id] = drop if drop > 0 else (1.0 - rep.norm_cosine) * 0.01
        if len(out) < len(units):
            log.warning("sensitivity: measured %d of %d layers in %.0fs; the rest count as least sensitive",
                        len(out), len(units), seconds)
        self.stats["sensitivity_seconds"] = round(time.perf_counter() - start, 3)
        self.stats["sensitivity_measured"] = len(out)
        log.info("sensitivity: %d of %d layers in %.1fs (%s)", len(out), len(units),
                 self.stats["sensitivity_seconds"],
                 ", ".join(f"{k} {v}" for k, v in self.stats.items() if not k.startswith("sensitivity_")))
        return {u.node_id: out.get(u.node_id, 0.0) for u in units}

    def sensitivity_reports(self, units: Sequence, deadline: float) -> dict[int, AccuracyReport]:
        """Each unit's accuracy report when it alone is changed, for the units measured before
        `deadline` (time.perf_counter())."""
        cuts = self._cuts(units)
        reports: dict[int, AccuracyReport] = {}
        whole = [c for c in cuts if c.nodes is None]
        cut = sorted((c for c in cuts if c.nodes is not None), key=lambda c: c.first)
        cores = usable_cores()
        workers = max(1, min(self.workers or cores, MAX_WORKERS, len(units)))
        threads = max(1, cores // workers)
        self.stats.update(workers=workers, threads_per_session=threads,
                          incremental=len(cut), whole_model=len(whole))
        nodes_total = max(1, len(self.reference_model.graph))
        if cut:
            self.stats["rerun_nodes_share"] = round(sum(len(c.nodes) for c in cut) / (len(cut) * nodes_total), 3)
        with ThreadPoolExecutor(workers) as pool:
            for group, cache in self._cached_activations(cut):
                jobs = [(c, pool.submit(self._measure_cut, c, cache, deadline, threads)) for c in group]
                for c, job in jobs:
                    rep = job.result()
                    if rep is not None:
                        reports[c.unit.node_id] = rep
                del cache, jobs
            jobs = [(c, pool.submit(self._measure_whole, c.unit, deadline, threads)) for c in whole]
            for c, job in jobs:
                rep = job.result()
                if rep is not None:
                    reports[c.unit.node_id] = rep
        return reports

    # ------------------------------------------------------------------ incremental measurement
    def _cuts(self, units: Sequence) -> list[_Cut]:
        ref = self.reference_model.graph
        if not self.counts or any(node.attrs and next(node.subgraphs(), None) is not None for node in ref.nodes):
            return [_Cut(u) for u in units]  # subgraphs read outer values: measure whole models
        self._order = {n.id: i for i, n in enumerate(ref.toposort())}
        self._ref_nodes = {n.id: n for n in ref.nodes}
        cuts = []
        for u in units:
            m = self.reference_model.clone()
            self.apply(m, [u])
            cuts.append(self._cut(u, m))
        return cuts

    def _cut(self, unit, m: Model) -> _Cut:
        """The nodes of `m` (the reference changed by `unit`) that differ from the reference's, and
        everything downstream of them."""
        ref, g = self.reference_model.graph, m.graph
        if [v.id for v in g.inputs] != [v.id for v in ref.inputs] or \
                [v.id for v in g.outputs] != [v.id for v in ref.outputs]:
            return _Cut(unit)
        changed = [n for n in g.nodes if _differs(self._ref_nodes.get(n.id), n)]
        down, stack = {n.id for n in changed}, list(changed)
        while stack:
            node = stack.pop()
            for v in node.outputs:
                if v is None:
                    continue
                for user, _ in g.uses(v):
                    if user.id not in down:
                        down.add(user.id)
                        stack.append(user)
        inputs: dict[str, None] = {}
        for nid in sorted(down):
            for v in g.node_by_id(nid).inputs:
                if v is None or v.const is not None:
                    continue
                producer = g.producer(v)
                if producer is None or producer.id not in down:
                    inputs[v.name] = None
        outputs = [v.name for v in g.outputs if g.producer(v) is not None and g.producer(v).id in down]
        first = min((self._order.get(n.id, len(self._order)) for n in changed), default=len(self._order))
        return _Cut(unit, down, sorted(inputs), outputs, first)

    def _cached_activations(self, cuts: list[_Cut]):
        """(cuts, {value name: its FP32 value per held-out batch}) in rounds whose values fit
        `cache_mb`, in the order the cuts' first changes come in the graph."""
        if not cuts:
            return
        names = sorted({n for c in cuts for n in c.inputs})
        m = self.reference_model.clone()
        g = m.graph
        graph_inputs = {v.name for v in g.inputs}
        outputs = {v.name for v in g.outputs}
        g.outputs.extend(g.value(n) for n in names if n not in graph_inputs and n not in outputs)
        fetch = [n for n in names if n not in graph_inputs]
        view = backend.ort_view(m)
        del m
        cap = self.cache_mb * (1 << 20)
        with Session(view, optimized=True) as sess:
            def run(feed: dict, keep) -> dict:
                got = sess.run(feed, [n for n in fetch if n in keep]) if any(n in keep for n in fetch) else {}
                return {n: (feed[n] if n in graph_inputs else got[n]) for n in keep}

            batches = self.held.batches(self.batch_size)
            first = run(next(batches)[0], set(names))
            # bytes of all held-out samples of each value, from the first batch's
            scale = sum(self.counts) / max(self.counts[0], 1)
            size = {n: int(a.nbytes * scale) for n, a in first.items()}
            rounds: list[tuple[list[_Cut], set]] = []
            group, keep, used = [], set(), 0
            for c in cuts:
                more = sum(size[n] for n in set(c.inputs) - keep)
                if group and used + more > cap:
                    rounds.append((group, keep))
                    group, keep, used = [], set(), 0
                    more = sum(size[n] for n in c.inputs)
                group.append(c)
                keep |= set(c.inputs)
                used += more
            rounds.append((group, keep))
            self.stats["cache_mb"] = round(max(sum(size[n] for n in k) for _, k in rounds) / (1 << 20), 1)
            self.stats["cache_rounds"] = len(rounds)
            for i, (group, keep) in enumerate(rounds):
                if i == 0:  # the first batch, computed already, and the rest of that run
                    cache, rest = {n: [first[n]] for n in keep}, batches
                    first = None
                else:
                    cache, rest = {n: [] for n in keep}, self.held.batches(self.batch_size)
                for feed, _, _ in rest:
                    for n, a in run(feed, keep).items():
                        cache[n].append(a)
                yield group, cache
                del cache

    def _measure_whole(self, unit, deadline: float, threads: int) -> Optional[AccuracyReport]:
        if time.perf_counter() > deadline:
            return None
        return self.measure([unit], threads)

    def _measure_cut(self, c: _Cut, cache: dict, deadline: float, threads: int) -> Optional[AccuracyReport]:
        if time.perf_counter() > deadline:
            return None
        if not c.outputs:  # nothing it changes reaches an output: the outputs are the reference's
            return compare(self.reference, self.reference, self.counts, self.labels, self.prepared)
        with self._lock:
            m = self.reference_model.clone()
            self.apply(m, [c.unit])
            again = self._cut(c.unit, m)
            try:
                view = _submodel(m, again.nodes, again.inputs, again.outputs, cache) \
                    if again.nodes is not None and again.inputs == c.inputs and again.outputs == c.outputs else None
            except Exception as e:  # noqa: BLE001 - a cut that cannot be written: measure it whole
                log.debug("sensitivity: cutting %s failed (%s)", getattr(c.unit, "label", c.unit), e)
                view = None
            del m
        if view is None:  # apply did something else the second time: measure it whole
            return self.measure([c.unit], threads)
        try:
            with Session(view, optimized=True, intra_threads=threads, arena=True) as sess:
                outs = []
                for b, ref in enumerate(self.reference):
                    got = sess.run({n: cache[n][b] for n in c.inputs}, c.outputs)
                    outs.append({**ref, **got})
        except (GraphoptError, KeyError, ValueError) as e:  # a part onnxruntime cannot run alone
            log.debug("sensitivity: %s re-run from its inputs failed (%s); measuring the whole model",
                      getattr(c.unit, "label", c.unit), e)
            with self._lock:
                self.stats["whole_model_fallbacks"] = self.stats.get("whole_model_fallbacks", 0) + 1
            return self.measure([c.unit], threads)
        return compare(self.reference, outs, self.counts, self.labels, self.prepared)


def _differs(old, new) -> bool:
    """Whether node `new` (of a changed copy) computes something else than `old` (the
    reference's node with its id; None when it is new)."""
    if old is None or old.op_type != new.op_type or old.domain != new.domain:
        return True
    if old.attrs.keys() != new.attrs.keys() or any(new.attrs[k] is not a for k, a in old.attrs.items()):
        return True  # clone() shares attribute objects; set_attr replaces them
    for a, b in ((old.inputs, new.inputs), (old.outputs, new.outputs)):
        if len(a) != len(b):
            return True
        for x, y in zip(a, b):
            if (x is None) != (y is None) or (x is not None and (x.id != y.id or x.const is not y.const)):
                return True
    return False


def _submodel(m: Model, nodes: set, inputs: list, outputs: list, cache: dict):
    """`m` cut to `nodes`: `inputs` become graph inputs (typed as their cached values), only
    `outputs` are outputs, and only the constants those nodes read stay."""
    import onnx
    from onnx import helper

    view = backend.ort_view(m)
    proto = onnx.ModelProto.FromString(view.data)
    g = m.graph
    keep = {v.name for nid in nodes for v in g.node_by_id(nid).outputs if v is not None}
    old = proto.graph
    new = onnx.GraphProto(name=old.name, doc_string=old.doc_string)
    new.node.extend(n for n in old.node if any(o in keep for o in n.output))
    used = {i for n in new.node for i in n.input}
    new.initializer.extend(t for t in old.initializer if t.name in used)
    new.sparse_initializer.extend(t for t in old.sparse_initializer if t.values.name in used)
    typed = {vi.name: vi for vi in list(old.value_info) + list(old.input) + list(old.output)}
    for name in inputs:
        if name in typed and typed[name].type.HasField("tensor_type"):
            new.input.append(typed[name])
        else:
            new.input.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(cache[name][0].dtype), None))
    wanted = set(outputs)
    new.output.extend(o for o in old.output if o.name in wanted)
    taken = set(inputs) | wanted
    new.value_info.extend(vi for vi in old.value_info if vi.name in used and vi.name not in taken)
    proto.graph.CopyFrom(new)
    proto.ir_version = max(proto.ir_version, 4)  # initializers need not be graph inputs
    return backend.OrtModel(data=proto.SerializeToString(), folder=view.folder, path=view.path)


def within_budget(model: Model, held, batch_size: int, units: list, apply: Apply, max_drop: float, what: str,
                  sensitivity: bool = False, floor: Optional[Floor] = None, max_fallback: float = 1.0,
                  stats: Optional[dict] = None) -> tuple[list, Optional[AccuracyReport], list[str], dict[int, float]]:
    """Measure `units` applied to `model` on the held-out samples; with a budget (`max_drop` >= 0)
    that the loss exceeds, or an accuracy `floor` the result is below, leave the most sensitive
    units out (at most `max_fallback` of them, a share). Returns (units to apply, their accuracy,
    labels of the units left out, per-unit sensitivity by node id when it was measured).
    BelowFloor when even that cannot reach the floor. `stats`, when given, gets the time spent
    (sensitivity_seconds, search_seconds, ...) and how sensitivity ran."""
    if held is None:
        if max_drop >= 0:
            log.warning("%s: max_drop needs held-out samples (--calib data with at least 2 samples); not applied", what)
        return units, None, [], {}
    ev = Evaluator(model.clone(), held, batch_size, apply)
    if stats is not None:
        ev.stats = stats
    accuracy = ev.measure(units)
    floor = floor or (lambda rep: [])

    def good(rep: AccuracyReport) -> bool:
        return not (max_drop >= 0 and rep.drop() > max_drop) and not floor(rep)

    over = not good(accuracy)
    scores = ev.sensitivity(units) if over or sensitivity else {}
    if not over:
        return units, accuracy, [], scores
    start = time.perf_counter()
    kept, best, left_out = hold_budget(ev, units, scores, max_drop, accuracy, what, good=good,
                                       limit=int(len(units) * max_fallback))
    ev.stats["search_seconds"] = round(time.perf_counter() - start, 3)
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
    monotonically as units are left out, so their count is searched: 1, 2, 4, ... until one is
    good (a budget is usually held by a few units, found in a few measurements), then bisected.
    Returns (units to apply, their accuracy, labels left out, most sensitive first); when even
    `limit` units left out is not good, that result (the caller checks it)."""
    good = good or (lambda rep: rep.drop() <= budget)
    order = sorted(units, key=lambda u: -sensitivity[u.node_id])
    limit = len(order) if limit is None else min(limit, len(order))

    def without(k: int) -> AccuracyReport:
        out = {u.node_id for u in order[:k]}
        return ev.measure([u for u in units if u.node_id not in out])

    lo, hi = 0, limit  # leaving out `lo` units is not enough; `hi` is assumed to be until measured
    best: Optional[AccuracyReport] = None
    k = 1
    while k < limit:
        rep = without(k)
        if good(rep):
            hi, best = k, rep
            break
        lo, k = k, k * 2
    if best is None and limit < len(order):
        rep = without(limit)
        if not good(rep):
            return units, rep, [u.label for u in order[:limit]]
        best = rep
    while hi - lo > 1:
        mid = (lo + hi) // 2
        rep = without(mid)
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
