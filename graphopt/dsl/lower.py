"""Name resolution and lowering: AST → pass-manager steps and run settings, checked against a
registry. Nothing here needs a model, so `graphopt check` can run it alone."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Optional

from graphopt.dsl import ast
from graphopt.dsl.parser import DslError, error_at, parse_file, parse_inline
from graphopt.errors import PipelineError
from graphopt.pipeline.base import NodeScope
from graphopt.pipeline.manager import DEFAULT_MAX_ITERATIONS, PassManager
from graphopt.pipeline.registry import Alias, Registry, make_options
from graphopt.quant import calibration

# setting block -> key -> type (a tuple lists the allowed words)
SETTINGS: dict[str, dict[str, object]] = {
    "validate": {"enabled": bool, "data": str, "rtol": float, "atol": float, "draws": int, "seed": int,
                 "min_cosine": float, "min_norm_cosine": float, "min_snr_db": float, "min_top1": float},
    "calibrate": calibration.USER_SETTINGS,
    "output": {"external_data": bool, "keep_initializer_inputs": bool, "initializers_as_constants": bool},
}


@dataclass
class PipelineConfig:
    """Everything a pipeline file says: steps, input shapes and settings."""

    steps: list = field(default_factory=list)
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    settings: dict[str, dict[str, object]] = field(default_factory=lambda: {k: {} for k in SETTINGS})
    rules: dict[str, list] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def setting(self, block: str, key: str, default=None):
        return self.settings[block].get(key, default)


def lower(pipeline: ast.Pipeline, registry: Registry, rules: Optional[dict] = None,
          text: Optional[str] = None) -> list:
    """The steps of an inline pipeline (what -p says)."""
    return _Lowering(registry, rules or {}, {pipeline.steps[0].pos.source: text} if pipeline.steps else {}).steps(pipeline.steps)


def shipped_pipelines() -> dict[str, str]:
    """Pipelines that ship with graphopt: name -> text."""
    folder = resources.files("graphopt.dsl").joinpath("pipelines")
    return {p.name[:-5]: p.read_text() for p in folder.iterdir() if p.name.endswith(".gopt")}


def resolve_pipeline_source(name_or_path: str) -> tuple[str, str]:
    """(source label, text) of a pipeline file, or of a shipped pipeline named without .gopt."""
    if os.path.isfile(name_or_path):
        with open(name_or_path) as f:
            return name_or_path, f.read()
    shipped = shipped_pipelines()
    if name_or_path in shipped:
        return f"<{name_or_path}>", shipped[name_or_path]
    close = difflib.get_close_matches(name_or_path, list(shipped), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; shipped pipelines are {', '.join(sorted(shipped))}"
    raise PipelineError(f"{name_or_path}: no such pipeline file or shipped pipeline{hint}")


def load_pipeline(name_or_path: str, registry: Registry) -> PipelineConfig:
    """Parse a pipeline file (with its includes), resolve every name, compile its rules."""
    source, text = resolve_pipeline_source(name_or_path)
    config = PipelineConfig()
    texts: dict[str, str] = {}
    files = _read_with_includes(source, text, texts, [])
    from graphopt.dsl.rules import RuleError, compile_rule

    for f in files:  # rules first: pipeline steps may name rules defined later
        for st in f.statements:
            if isinstance(st, ast.Rule):
                # rule blocks sharing a name are alternative spellings of one rewrite
                if st.name in registry.passes or st.name in registry.aliases:
                    raise error_at(st.pos, f"rule name {st.name!r} is already a pass or alias", texts[st.pos.source])
                try:
                    config.rules.setdefault(st.name, []).append(compile_rule(st))
                except RuleError as e:
                    raise error_at(e.pos, str(e), texts.get(e.pos.source)) from None
    low = _Lowering(registry, config.rules, texts)
    for f in files:
        config.sources.append(f.source)
        for st in f.statements:
            if isinstance(st, ast.PipelineBlock):
                config.steps.extend(low.steps(st.steps))
            elif isinstance(st, ast.InputShape):
                config.input_shapes[st.name] = st.dims
            elif isinstance(st, ast.Settings):
                for opt in st.options:
                    value = low.setting(st.kind, opt)
                    if st.kind in ("calibrate", "validate") and opt.name in PATH_SETTINGS:
                        value = _relative_to(f.source, value)
                    config.settings[st.kind][opt.name] = value
    return config


PATH_SETTINGS = ("data", "cache")  # paths in a pipeline file are relative to the file


def _relative_to(source: str, path: str) -> str:
    if source.startswith("<") or os.path.isabs(path):
        return path
    return os.path.join(os.path.dirname(source), path)


def _read_with_includes(source: str, text: str, texts: dict, stack: list) -> list[ast.File]:
    """This file and everything it includes, in include order (an include comes where it is)."""
    if source in stack:
        raise PipelineError(f"{source}: includes itself ({' -> '.join(stack + [source])})")
    texts[source] = text
    f = parse_file(text, source=source)
    out: list[ast.File] = []
    base = os.path.dirname(source) if not source.startswith("<") else ""
    mine = ast.File(tuple(s for s in f.statements if not isinstance(s, ast.Include)), source, f.comments)
    for st in f.statements:
        if isinstance(st, ast.Include):
            path = os.path.join(base, st.path) if base and not os.path.isabs(st.path) else st.path
            try:
                inc_source, inc_text = resolve_pipeline_source(path if os.path.isfile(path) else st.path)
            except PipelineError as e:
                raise error_at(st.pos, f"cannot include {st.path!r}: {str(e).split(': ', 1)[-1]}", text) from None
            out.extend(_read_with_includes(inc_source, inc_text, texts, stack + [source]))
    out.append(mine)
    return out


class _Lowering:
    def __init__(self, registry: Registry, rules: dict, texts: dict):
        self.registry, self.rules, self.texts = registry, rules, texts

    def fail(self, pos: ast.Pos, message: str) -> DslError:
        return error_at(pos, message, self.texts.get(pos.source))

    def steps(self, steps) -> list:
        out = []
        for st in steps:
            if isinstance(st, ast.FixPoint):
                cap = st.max_iterations if st.max_iterations is not None else DEFAULT_MAX_ITERATIONS
                if cap < 1:
                    raise self.fail(st.pos, "a fixpoint needs at least 1 iteration")
                out.append(PassManager(self.steps(st.steps), name="fixpoint", fixed_point=True, max_iterations=cap))
            else:
                out.extend(self.step(st))
        return out

    def step(self, st: ast.Step) -> list:
        options: dict = {}
        for opt in st.options:
            if opt.name in options:
                raise self.fail(opt.pos, f"option {opt.name!r} of {st.name!r} is given twice")
            options[opt.name] = opt.value
        scope = self.scope(st)
        if st.name in self.rules:
            if options:
                raise self.fail(st.options[0].pos, f"rule {st.name!r} takes no options")
            from graphopt.dsl.rules import UserRulesPass

            return [UserRulesPass(st.name, self.rules[st.name], scope)]
        try:
            target = self.registry.lookup(st.name)
        except PipelineError:
            names = self.registry.names() + list(self.rules)
            close = difflib.get_close_matches(st.name, names, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else "; `graphopt passes` lists them"
            failed = f" ({'; '.join(self.registry.plugin_errors)})" if self.registry.plugin_errors else ""
            raise self.fail(st.pos, f"unknown pass {st.name!r}{hint}{failed}") from None
        try:
            if isinstance(target, Alias):
                expanded = self.registry.expand_alias(target, options)
                steps = expanded if isinstance(expanded, list) else [expanded]
            else:
                steps = [target(make_options(target, options))]
        except PipelineError as e:
            pos = next((o.pos for o in st.options if f"'{o.name}'" in str(e)), st.pos)
            raise self.fail(pos, str(e)) from None
        if scope is not None:
            _apply_scope(steps, scope)
        return steps

    def scope(self, st: ast.Step) -> Optional[NodeScope]:
        if not st.scopes:
            return None
        fields = {"ops": [], "except_ops": [], "nodes": [], "except_nodes": []}
        for sc in st.scopes:
            key = sc.kind if sc.mode == "on" else f"except_{sc.kind}"
            fields[key].extend(sc.items)
        return NodeScope(**{k: tuple(v) for k, v in fields.items()})

    def setting(self, block: str, opt: ast.Option):
        known = SETTINGS[block]
        if opt.name not in known:
            close = difflib.get_close_matches(opt.name, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; it has {', '.join(known)}"
            raise self.fail(opt.pos, f"{block} has no setting {opt.name!r}{hint}")
        typ, value = known[opt.name], opt.value
        if isinstance(typ, tuple):
            if value not in typ:
                raise self.fail(opt.pos, f"{block}.{opt.name} must be one of {', '.join(typ)}, got {value!r}")
            return value
        if typ is bool:
            if str(value).lower() not in ("true", "false"):
                raise self.fail(opt.pos, f"{block}.{opt.name} expects true or false, got {value!r}")
            return str(value).lower() == "true"
        if typ in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                    or typ is int and isinstance(value, float)):
            raise self.fail(opt.pos, f"{block}.{opt.name} expects {typ.__name__}, got {value!r}")
        if block == "calibrate":
            from graphopt.quant.calibration import SETTING_RANGES

            for name, ok, what in SETTING_RANGES:
                if name == opt.name and not ok(value):
                    raise self.fail(opt.pos, f"calibrate.{opt.name} must be {what}, got {value!r}")
        return typ(value)


def _apply_scope(steps: list, scope: NodeScope) -> None:
    for s in steps:
        for p in s.flatten():
            p.scope = scope


def parse_and_lower(text: str, registry: Registry) -> list:
    """A -p string to steps."""
    return lower(parse_inline(text), registry, text=text)
