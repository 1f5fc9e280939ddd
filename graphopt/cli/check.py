"""`graphopt check FILE.gopt`: resolve a pipeline file without a model.
"""

from __future__ import annotations

from graphopt.cli.common import Parser


def command(argv: list[str]) -> int:
    from graphopt.driver import default_registry
    from graphopt.dsl.lower import load_pipeline

    p = Parser(prog="graphopt check", description="Parse a pipeline file and resolve every pass, option, "
                "setting and rule, without a model.")
    p.add_argument("pipeline", metavar="FILE.gopt")
    args = p.parse_args(argv)
    cfg = load_pipeline(args.pipeline, default_registry())
    print(f"{args.pipeline}: ok ({_count_steps(cfg.steps)} steps, {len(cfg.rules)} rules, "
          f"{len(cfg.sources)} files)")
    return 0


def _count_steps(steps) -> int:
    return sum(len(s.flatten()) for s in steps)
