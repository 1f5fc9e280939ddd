"""The pass manager: runs passes and fixed-point groups, records every invocation in a trace,
rolls back a lossless pass that raises.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence, Union

from graphopt.errors import GraphoptError, PipelineError, UserInputError
from graphopt.ir import Model
from graphopt.pipeline.base import VERIFY_ENV, Pass, PassContext, PassResult, log


@dataclass
class FixedPoint:
    """Run `steps` repeatedly until none of them changes the graph, at most `max_iterations` times."""

    name: str
    steps: list
    max_iterations: int = 8

    def label(self) -> str:
        return self.name


Step = Union[Pass, FixedPoint]


@dataclass
class PassRecord:
    """One invocation of one pass."""

    index: int  # position in the trace
    name: str
    label: str
    group: Optional[str]
    iteration: int
    modified: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    nodes_before: int = 0
    nodes_after: int = 0
    error: Optional[str] = None
    rolled_back: bool = False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["node_delta"] = self.nodes_after - self.nodes_before
        return d


class PassFailed(GraphoptError):
    """A pass raised (reported as an error under --strict)."""


class PassManager:
    def __init__(self, steps: Sequence[Step], *, strict: bool = False, verify: bool = False,
                 disabled: Iterable[str] = ()):
        self.steps = list(steps)
        self.strict = strict
        self.verify = verify or os.environ.get(VERIFY_ENV) == "1"
        self.disabled = set(disabled)
        self.trace: list[tuple[Pass, PassRecord]] = []

    def run(self, model: Model, ctx: PassContext, initial: Optional[Model] = None) -> list[PassRecord]:
        """Run the steps on `model`. `initial` is an untouched copy of it, if the caller keeps one."""
        self.trace = []
        # One copy of the input, not one per pass: a failed pass is rolled back by replaying the
        # passes before it on a clone of this copy (passes are deterministic).
        self._initial = initial if initial is not None else model.clone()
        for step in self.steps:
            self._run_step(step, model, ctx, group=None, iteration=0)
        return [rec for _, rec in self.trace]

    def _run_step(self, step: Step, model: Model, ctx: PassContext, group, iteration) -> bool:
        if isinstance(step, FixedPoint):
            changed_any = False
            for it in range(step.max_iterations):
                changed = False
                for sub in step.steps:
                    changed |= self._run_step(sub, model, ctx, step.name, it)
                changed_any |= changed
                if not changed:
                    break
            else:
                log.info("fixed-point group %s stopped at its cap of %d iterations", step.name, step.max_iterations)
            return changed_any
        if step.name in self.disabled:
            if not any(rec.name == step.name for _, rec in self.trace):  # report it once
                rec = PassRecord(len(self.trace), step.name, step.label(), group, iteration,
                                 error="rolled back: it broke the checker or validation", rolled_back=True)
                rec.nodes_before = rec.nodes_after = model.graph.count_nodes()
                self.trace.append((step, rec))
            return False
        return self._run_pass(step, model, ctx, group, iteration)

    def _run_pass(self, p: Pass, model: Model, ctx: PassContext, group, iteration) -> bool:
        rec = PassRecord(len(self.trace), p.name, p.label(), group, iteration)
        rec.nodes_before = model.graph.count_nodes()
        start = time.perf_counter()
        ctx.scope = p.scope
        try:
            result = p.run(model.graph, ctx)
            if not isinstance(result, PassResult):
                raise TypeError(f"pass {p.name} returned {type(result).__name__}, not PassResult")
            if self.verify or ctx.verify:
                model.graph.verify()
            rec.modified, rec.stats = bool(result.modified), dict(result.stats)
        except GraphoptError as e:
            if isinstance(e, (PipelineError, UserInputError)):
                raise
            if not p.lossless:  # the user asked for this lossy change: never hand back the model without it
                raise PassFailed(f"pass {p.name} failed: {e}") from None
            self._rollback(model, ctx)
            rec.error, rec.rolled_back = str(e), True
        except Exception as e:  # a bug in a pass must not take the user's model down with it
            if ctx.debug:
                raise
            if not p.lossless:
                raise PassFailed(f"pass {p.name} failed: {type(e).__name__}: {e}") from None
            self._rollback(model, ctx)
            rec.error, rec.rolled_back = f"{type(e).__name__}: {e}", True
        finally:
            ctx.scope = None
        rec.seconds = time.perf_counter() - start
        rec.nodes_after = model.graph.count_nodes()
        self.trace.append((p, rec))
        if rec.error:
            msg = f"pass {p.name} failed and was rolled back: {rec.error}"
            if self.strict:
                raise PassFailed(msg)
            log.warning("%s", msg)
        else:
            log.info("%-28s %s %5d -> %5d nodes  %.3fs  %s", rec.label, "modified " if rec.modified else "unchanged",
                     rec.nodes_before, rec.nodes_after, rec.seconds, _stats_text(rec.stats))
        return rec.modified

    def _rollback(self, model: Model, ctx: PassContext) -> None:
        """Put `model` back as it was before the pass that just failed."""
        restored = self._initial.clone()
        self.replay(restored, PassContext(restored, ctx.input_shapes), len(self.trace))
        for k in model.__dataclass_fields__:
            setattr(model, k, getattr(restored, k))

    def replay(self, model: Model, ctx: PassContext, upto: int) -> None:
        """Re-run the first `upto` invocations of the last trace, in order, on `model`."""
        for p, rec in self.trace[:upto]:
            if rec.rolled_back:
                continue
            p.run(model.graph, ctx)


def _stats_text(stats: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in stats.items())
