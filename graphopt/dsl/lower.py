"""Name resolution and lowering: AST → pass-manager steps, checked against a registry."""

from __future__ import annotations

from graphopt.dsl import ast
from graphopt.errors import PipelineError
from graphopt.registry import Alias, Registry, make_options


def lower(pipeline: ast.Pipeline, registry: Registry) -> list:
    steps = []
    for step in pipeline.steps:
        options = {}
        for opt in step.options:
            if opt.name in options:
                raise PipelineError(f"option {opt.name!r} of {step.name!r} is given twice")
            options[opt.name] = opt.value
        target = registry.lookup(step.name)
        if isinstance(target, Alias):
            expanded = registry.expand_alias(target, options)
            steps.extend(expanded if isinstance(expanded, list) else [expanded])
        else:
            steps.append(target(make_options(target, options)))
    return steps
