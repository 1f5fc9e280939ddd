"""What a pass is: a name, an options dataclass, `run(graph, ctx) -> PassResult`; the context a
run hands every pass; the scope a pipeline step limits a pass to.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from graphopt.errors import PipelineError
from graphopt.ir import Graph, Model

log = logging.getLogger("graphopt")


VERIFY_ENV = "GRAPHOPT_VERIFY"


KEBAB = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass
class PassResult:
    modified: bool
    stats: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # shown in the run summary and the report


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
    calibration: Any = None  # graphopt.quant.calibration.CalibrationSettings for passes that calibrate
    accuracy_floor: Any = None  # graphopt.runtime.validate.LossyThresholds lossy passes climb back to
    reports: dict[str, Any] = field(default_factory=dict)  # pass name -> details for --report
    runner: Any = None  # the PassManager running the pipeline; groups invoke their members through it

    @property
    def opset(self) -> int:
        return self.model.opset

    def in_scope(self, node) -> bool:
        """Whether the running pass may rewrite `node` (always, unless the step is scoped)."""
        return self.scope is None or node in self.scope


def require_at_least(options: Any, name: str, low: float) -> None:
    """A pass option's range check (in its Options' __post_init__): a usage error naming it."""
    value = getattr(options, name)
    if value < low:
        raise PipelineError(f"option {name!r} must be at least {low}, got {value}")


def require_fraction(options: Any, name: str, *, zero: bool = False) -> None:
    """A pass option that must lie in (0, 1), or [0, 1) with `zero`."""
    value = getattr(options, name)
    if not (0 <= value < 1 if zero else 0 < value < 1):
        raise PipelineError(f"option {name!r} must be {'at least' if zero else 'above'} 0 and below 1, got {value}")


class Pass:
    """A graph transformation. Subclasses set `name`, `summary`, `Options` and `run`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    lossless: ClassVar[bool] = True
    is_group: ClassVar[bool] = False  # a pass manager: its run invokes other passes
    needs_calibration: ClassVar[bool] = False  # reads the run's calibration data (--calib): without it, a usage error

    def __init__(self, options: Any = None, scope: Optional[NodeScope] = None):
        self.options = options if options is not None else self.Options()
        self.scope = scope  # from a pipeline step's `on ops [...]` / `except nodes [...]`

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        raise NotImplementedError

    def label(self) -> str:
        opts = options_text(self.options)
        return f"{self.name}{{{opts}}}" if opts else self.name

    def flatten(self) -> list["Pass"]:
        """The passes this step runs, in pipeline order: itself, or a group's members, recursively."""
        return [self]


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
