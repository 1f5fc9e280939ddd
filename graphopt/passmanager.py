"""Passes, fixed-point groups and the manager that runs them.

Every pass invocation is recorded (time, node-count delta, stats) in a trace. A lossless pass
that raises is rolled back (the passes before it are replayed on a copy of the input); a lossy
one (int8, ...) fails the run instead, since the model without it is not what was asked for. The trace can be replayed on a fresh
copy of the input, which is how the driver bisects a validation failure to its first pass.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Optional, Sequence, Union

from graphopt.errors import GraphoptError, PipelineError, UserInputError
from graphopt.ir import Graph, Model

log = logging.getLogger("graphopt")

# Set by the test suite: verify the IR after every pass, in every test.
VERIFY_ENV = "GRAPHOPT_VERIFY"

KEBAB = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass
class PassResult:
    modified: bool
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class NoOptions:
    """This pass has no options."""


@dataclass(frozen=True)
class NodeScope:
    """Which nodes a pass may rewrite: op types and node-name globs to include or exclude."""

    ops: tuple[str, ...] = ()
    except_ops: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    except_nodes: tuple[str, ...] = ()

    def __contains__(self, node) -> bool:
        from fnmatch import fnmatchcase

        if self.ops and node.op_type not in self.ops:
            return False
        if node.op_type in self.except_ops:
            return False
        if self.nodes and not any(fnmatchcase(node.name, g) for g in self.nodes):
            return False
        return not any(fnmatchcase(node.name, g) for g in self.except_nodes)


@dataclass
class PassContext:
    model: Model
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    debug: bool = False
    verify: bool = False  # IR verify() after every pass (tests and --debug)
    scope: Optional[NodeScope] = None  # set while a scoped pipeline step runs
    explain: set[str] = field(default_factory=set)  # rule names whose near misses are recorded
    near_misses: list = field(default_factory=list)
    calibration: Any = None  # graphopt.calibration.CalibrationSettings for passes that calibrate
    reports: dict[str, Any] = field(default_factory=dict)  # pass name -> details for --report

    @property
    def opset(self) -> int:
        return self.model.opset

    def in_scope(self, node) -> bool:
        """Whether the running pass may rewrite `node` (always, unless the step is scoped)."""
        return self.scope is None or node in self.scope


class Pass:
    """A graph transformation. Subclasses set `name`, `summary`, `Options` and `run`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    lossless: ClassVar[bool] = True

    def __init__(self, options: Any = None, scope: Optional[NodeScope] = None):
        self.options = options if options is not None else self.Options()
        self.scope = scope  # from a pipeline step's `on ops [...]` / `except nodes [...]`

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        raise NotImplementedError

    def label(self) -> str:
        opts = options_text(self.options)
        return f"{self.name}{{{opts}}}" if opts else self.name


def options_text(options: Any) -> str:
    """Non-default options as the pipeline language writes them: `a=1,b=x`."""
    if not dataclasses.is_dataclass(options):
        return ""
    parts = []
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if value != default:
            parts.append(f"{f.name}={_fmt(value)}")
    return ",".join(parts)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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
