"""The pass manager: a pass whose run runs its passes in order, once or to a fixed point.

The pipeline is one pass manager; a fixed-point group inside it (`fixpoint N { ... }`, the
`fold` alias) is another, nested like any pass. Every pass, group or not, is invoked through
one method, `PassManager._invoke`, of the manager running the pipeline: it sets the step's
scope, runs, verifies and records the invocation in the trace, and rolls the invocation back
when a lossless pass raises.

Rolling back (docs/ARCHITECTURE.md, "Passes and the pass manager"): a pipeline of lossless
passes copies the model once, at the start; when a pass raises, the run starts again from that
copy, replays the invocations before the failure (passes are deterministic, so they rebuild the
same model) and skips the failed one. From then on, and in pipelines with a lossy pass or one
that calibrates (neither is run twice), a snapshot is taken before each lossless invocation that
may change the model. Copying a large graph before every pass cost more than a rare replay does.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from dataclasses import dataclass, field
from numbers import Number
from typing import Any, Iterable, Optional, Sequence

from graphopt.errors import GraphoptError, PipelineError, UserInputError
from graphopt.ir import Model
from graphopt.pipeline.base import (
    VERIFY_ENV,
    NodeScope,
    NoOptions,
    Pass,
    PassContext,
    PassResult,
    log,
)

# The rounds a fixed-point group runs at most unless its definition says otherwise
# (`fixpoint N { }`, an alias's max_iterations).
DEFAULT_MAX_ITERATIONS = 8


@dataclass
class PassRecord:
    """One invocation of one pass (kind "pass") or of a nested pass manager (kind "group")."""

    index: int  # position in the trace
    name: str
    label: str
    group: Optional[str]  # the group that invoked it, None at the top of the pipeline
    iteration: int  # the round of that group
    kind: str = "pass"
    step: Optional[int] = None  # which pass of the pipeline (position in PassManager.flatten())
    modified: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    nodes_before: int = 0
    nodes_after: int = 0
    error: Optional[str] = None
    rolled_back: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["node_delta"] = self.nodes_after - self.nodes_before
        return d


class PassFailed(GraphoptError):
    """A pass raised (reported as an error under --strict)."""


class _Stop(BaseException):
    """Ends a run early, at the invocation limit (a prefix of the pipeline, for bisection)."""


class _Failed(Exception):
    """Raised in place of running an invocation that a replayed run leaves out."""

    def __init__(self, error: str):
        super().__init__(error)
        self.error = error


class _Rewind(BaseException):
    """A lossless pass raised while no snapshot was kept: the run restarts from its start copy."""

    def __init__(self, invocation: int, error: str):
        super().__init__(error)
        self.invocation, self.error = invocation, error


@dataclass
class _Snapshot:
    """The model and the run's reports as they were before an invocation."""

    model: Model
    reports: dict
    near_misses: int


class PassManager(Pass):
    """Runs `passes` in order; with `fixed_point`, again until no pass changes the graph, at most
    `max_iterations` rounds (reaching the cap is a warning naming the passes still changing it).

    A PassManager is a pass: nested in another one it is invoked like any pass, and its members
    are invoked by the outermost manager, whose settings (strict, verify, disabled) apply."""

    name = "pipeline"
    summary = "runs passes in order, once or to a fixed point"
    is_group = True

    def __init__(self, passes: Sequence[Pass], *, name: str = "pipeline", fixed_point: bool = False,
                 max_iterations: int = DEFAULT_MAX_ITERATIONS, strict: bool = False, verify: bool = False,
                 disabled: Iterable = (), scope: Optional[NodeScope] = None):
        super().__init__(NoOptions(), scope)
        self.name = name
        self.passes = list(passes)
        self.fixed_point = fixed_point
        self.max_iterations = max_iterations
        self.strict = strict
        self.verify = verify or os.environ.get(VERIFY_ENV) == "1"
        self.disabled = set(disabled)
        self.trace: list[tuple[Pass, PassRecord]] = []
        self.warnings: list[str] = []

    @property
    def lossless(self) -> bool:  # type: ignore[override]
        return all(p.lossless for p in self.passes)

    def flatten(self) -> list[Pass]:
        return [leaf for p in self.passes for leaf in p.flatten()]

    def label(self) -> str:
        return self.name

    # -- as a pass ---------------------------------------------------------------------------

    def run(self, graph, ctx: PassContext) -> PassResult:
        """Run the rounds. Nested, the running manager invokes the members; at the top, this
        manager runs the pipeline on `ctx.model` (its records are in `trace`)."""
        if ctx.runner is None:
            records = self.execute(ctx.model, ctx)
            return PassResult(any(r.modified for r in records), {}, list(self.warnings))
        return self._rounds(ctx.runner, ctx)

    def _rounds(self, runner: "PassManager", ctx: PassContext) -> PassResult:
        rounds = self.max_iterations if self.fixed_point else 1
        changed_any, start = False, len(runner.trace)  # start: where the last round's records begin
        for it in range(rounds):
            start = len(runner.trace)
            changed = False
            for p in self.passes:
                changed |= runner._invoke(p, ctx, self, it)
            changed_any |= changed
            if not changed:
                return PassResult(changed_any, {"rounds": it + 1})
        if not self.fixed_point:
            return PassResult(changed_any, {"rounds": 1})
        still = [rec.label for _, rec in runner.trace[start:] if rec.kind == "pass" and rec.modified]
        warning = (f"fixed-point group {self.name} stopped at its cap of {rounds} rounds; still changing the "
                   f"graph in the last round: {', '.join(dict.fromkeys(still))}")
        return PassResult(changed_any, {"rounds": rounds}, [warning])

    # -- running a pipeline ------------------------------------------------------------------

    def execute(self, model: Model, ctx: PassContext, *, limit: Optional[int] = None,
                quiet: bool = False) -> list[PassRecord]:
        """Run the pipeline on `model` (which must be `ctx.model`); the records of its passes.
        `limit`: stop before the pass invocation that would be the limit-th record (a prefix of
        the run, for bisection). `quiet`: log nothing."""
        assert ctx.model is model, "the context must carry the model it runs on"
        self._limit, self._quiet = limit, quiet
        self._steps: dict[int, int] = {}
        for i, p in enumerate(self.flatten()):
            self._steps.setdefault(id(p), i)
        # lossless passes that do not calibrate: one copy now, replayed from if a pass raises
        # (module docstring); a pass that calibrates is slow to run twice
        start = _Snapshot(model.clone(), copy.deepcopy(ctx.reports), len(ctx.near_misses)) \
            if all(p.lossless and not p.needs_calibration for p in self.flatten()) else None
        self._failed: dict[int, str] = {}  # leaf invocation number -> the error it raised
        self._logged = 0  # records a run that was rewound had logged: a replay does not log them again
        outer, ctx.runner = ctx.runner, self
        try:
            while True:
                self.trace, self.warnings = [], []
                self._passes_recorded, self._leaves = 0, 0
                self._clean: Optional[Model] = None  # a copy of the model as it is now, until a pass changes it
                self._replay_mode = start is not None and not self._failed  # no snapshots until a failure
                try:
                    self.warnings += self._rounds(self, ctx).warnings
                    break
                except _Stop:
                    break
                except _Rewind as r:
                    self._failed[r.invocation] = r.error
                    self._logged = max(self._logged, len(self.trace))
                    self._restore(start, ctx)
        finally:
            ctx.runner, self._clean = outer, None
        # once each: a group nested in a fixed point may reach its cap in several rounds
        self.warnings = list(dict.fromkeys([w for _, rec in self.trace for w in rec.warnings] + self.warnings))
        return self.records()

    def records(self) -> list[PassRecord]:
        """The invocations of passes (not of groups) of the last run, in order."""
        return [rec for _, rec in self.trace if rec.kind == "pass"]

    def _invoke(self, p: Pass, ctx: PassContext, group: Optional[Pass], iteration: int) -> bool:
        """Invoke one pass or group: the only place a pass runs. Whether it changed the graph."""
        model = ctx.model
        kind = "group" if p.is_group else "pass"
        step = self._steps.get(id(p))
        group_name = group.name if group is not None and group is not self else None
        if p.name in self.disabled or (step, p.name) in self.disabled:  # a name, or one step's invocations
            if not any(rec.step == step and rec.name == p.name for _, rec in self.trace):  # report it once
                self._check_limit(kind)
                rec = PassRecord(len(self.trace), p.name, p.label(), group_name, iteration, kind, step,
                                 error="rolled back: it broke the checker or validation", rolled_back=True)
                rec.nodes_before = rec.nodes_after = model.graph.count_nodes()
                self._record(p, rec)
            return False
        self._check_limit(kind)
        rec = PassRecord(-1, p.name, p.label(), group_name, iteration, kind, step)
        rec.nodes_before = model.graph.count_nodes()
        leaf = None if p.is_group else self._leaves
        self._leaves += not p.is_group
        # A lossy pass is never rolled back; a group's members are, one by one: neither needs a snapshot.
        # Before a failure a replayed run needs none either; after it, the invocations that follow take one.
        replayed = leaf is not None and leaf <= max(self._failed, default=-1)
        snapshot = self._take_snapshot(ctx) if p.lossless and not p.is_group and not self._replay_mode \
            and not replayed else None
        outer_scope = ctx.scope
        ctx.scope = p.scope if p.scope is not None else outer_scope
        start = time.perf_counter()
        try:
            if leaf in self._failed:  # the replay reached the invocation that raised: left out
                raise _Failed(self._failed[leaf])
            result = p.run(model.graph, ctx)
            if not isinstance(result, PassResult):
                raise TypeError(f"pass {p.name} returned {type(result).__name__}, not PassResult")
            if self.verify or ctx.verify:
                model.graph.verify()
            rec.modified, rec.stats, rec.warnings = bool(result.modified), dict(result.stats), list(result.warnings)
        except _Failed as e:
            rec.error, rec.rolled_back = e.error, True
        except GraphoptError as e:
            if isinstance(e, (PipelineError, UserInputError, PassFailed)):
                raise
            self._roll_back(p, leaf, snapshot, ctx, str(e), f"pass {p.name} failed: {e}")
            rec.error, rec.rolled_back = str(e), True
        except Exception as e:  # a bug in a pass must not take the user's model down with it
            if ctx.debug:
                raise
            error = f"{type(e).__name__}: {e}"
            self._roll_back(p, leaf, snapshot, ctx, error, f"pass {p.name} failed: {error}")
            rec.error, rec.rolled_back = error, True
        finally:
            ctx.scope = outer_scope
        rec.seconds = time.perf_counter() - start
        rec.nodes_after = model.graph.count_nodes()
        if rec.modified or rec.nodes_after != rec.nodes_before:
            self._clean = None  # the model changed: the next lossless invocation copies it again
        self._record(p, rec)
        if rec.error:
            msg = f"pass {p.name} failed and was rolled back: {rec.error}"
            if self.strict:
                raise PassFailed(msg)
            if not self._quiet:  # a pass left out changes what the result is: -q does not hide it
                log.getChild("meaning").warning("%s", msg)
        elif not self._quiet and rec.index >= self._logged:  # a replayed record was logged before the rewind
            where = f" [{rec.group} round {rec.iteration + 1}]" if rec.group else ""
            log.info("%-28s %s %5d -> %5d nodes  %.3fs  %s", rec.label + where,
                     "modified " if rec.modified else "unchanged", rec.nodes_before, rec.nodes_after, rec.seconds,
                     _stats_text(rec.stats))
        return rec.modified

    def _roll_back(self, p: Pass, leaf: Optional[int], snapshot: Optional[_Snapshot], ctx: PassContext,
                   error: str, lossy_message: str) -> None:
        """Undo a failed invocation: from its snapshot, or by replaying the run without it."""
        if snapshot is not None:
            self._restore(snapshot, ctx)
        elif p.lossless and leaf is not None:
            raise _Rewind(leaf, error)  # under --strict too: the model is put back before the error
        else:  # lossy: the user asked for this change; never hand back the model without it
            raise PassFailed(lossy_message) from None

    def _check_limit(self, kind: str) -> None:
        if kind == "pass" and self._limit is not None and self._passes_recorded >= self._limit:
            raise _Stop

    def _record(self, p: Pass, rec: PassRecord) -> None:
        rec.index = len(self.trace)
        self.trace.append((p, rec))
        self._passes_recorded += rec.kind == "pass"

    def _take_snapshot(self, ctx: PassContext) -> _Snapshot:
        """The model, reports and near misses as they are now. Cloning shares tensor data, and
        an invocation that leaves the graph unchanged keeps the model copy taken before it, so a
        round of passes that change nothing copies nothing."""
        if self._clean is None:
            self._clean = ctx.model.clone()
        # the reports are taken every time: a pass may report without changing the graph
        return _Snapshot(self._clean, copy.deepcopy(ctx.reports), len(ctx.near_misses))

    def _restore(self, snapshot: _Snapshot, ctx: PassContext) -> None:
        """Put the model, the reports and the near misses back as they were in `snapshot`."""
        restored = snapshot.model.clone()  # the copy stays valid for the invocations after this one
        for k in ctx.model.__dataclass_fields__:
            setattr(ctx.model, k, getattr(restored, k))
        ctx.reports.clear()
        ctx.reports.update(snapshot.reports)
        del ctx.near_misses[snapshot.near_misses:]
        self._clean = snapshot.model


def pass_table(records: Iterable[PassRecord]) -> list[dict]:
    """One row per pass of the pipeline (per step): its rounds, total time and node delta, whether
    any round changed the graph, numeric stats summed (others: the last value), every round."""
    rows: dict[int, dict] = {}
    for rec in records:
        if rec.kind != "pass":
            continue
        key = rec.step if rec.step is not None else -1 - rec.index
        row = rows.get(key)
        if row is None:
            row = rows[key] = {"step": rec.step, "name": rec.name, "label": rec.label, "group": rec.group,
                               "modified": False, "seconds": 0.0, "node_delta": 0, "nodes_before": rec.nodes_before,
                               "nodes_after": rec.nodes_after, "stats": {}, "error": None, "rolled_back": False,
                               "rounds": []}
        row["rounds"].append(rec.to_dict())
        row["modified"] |= rec.modified
        row["seconds"] += rec.seconds
        row["node_delta"] += rec.nodes_after - rec.nodes_before
        row["nodes_after"] = rec.nodes_after
        row["rolled_back"] |= rec.rolled_back
        row["error"] = rec.error or row["error"]
        for k, v in rec.stats.items():
            old = row["stats"].get(k)
            numeric = isinstance(v, Number) and not isinstance(v, bool)
            row["stats"][k] = old + v if numeric and isinstance(old, Number) and not isinstance(old, bool) else v
    return list(rows.values())


def _stats_text(stats: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in stats.items())
