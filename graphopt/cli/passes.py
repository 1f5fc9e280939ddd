"""`graphopt passes`: every pass and alias with its options.
"""

from __future__ import annotations

import dataclasses

from graphopt.cli.common import Parser


def command(argv: list[str]) -> int:
    from graphopt.driver import default_registry
    from graphopt.rewrite import RulePass

    p = Parser(prog="graphopt passes", description="List every pass and alias with its options.")
    p.parse_args(argv)
    reg = default_registry()
    reg.load_plugins()
    out = ["Passes:"]
    long_defaults: dict = {}  # (option, default) -> the pass it was first printed for
    for name in sorted(reg.passes):
        cls = reg.passes[name]
        out.append(f"  {name:24s} {cls.summary}")
        if issubclass(cls, RulePass) and cls.rules:
            out.append(f"  {'':24s}   rules (--explain RULE): {', '.join(dict.fromkeys(r.name for r in cls.rules))}")
        for f in dataclasses.fields(cls.Options):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            help_ = f.metadata.get("help", "")
            shown = _short(default, f.name)
            if shown != repr(default):  # a long default: shortened, and printed once
                first = long_defaults.setdefault((f.name, repr(default)), name)
                shown = shown if first == name else f"(the same as {first}'s)"
            out.append(f"  {'':24s}   {f.name}={shown} ({getattr(f.type, '__name__', f.type)}) {help_}".rstrip())
    out.append("")
    out.append("Aliases:")
    for name in sorted(reg.aliases):
        a = reg.aliases[name]
        how = f"fixed point, at most {a.max_iterations} rounds" if a.fixed_point else "in order"
        out.append(f"  {name:24s} {a.summary} [{', '.join(a.members)}; {how}]")
    out.append("")
    out.append(f"  {'none':24s} run no pass (a lossless round trip)")
    print("\n".join(out))
    return 0


LONG_DEFAULT = 60  # characters of a default shown in full


def _short(default, option: str) -> str:
    """A default as `graphopt passes` shows it: a long comma list as its first items and a count."""
    text = repr(default)
    if len(text) <= LONG_DEFAULT:
        return text
    if isinstance(default, str) and "," in default:
        items = default.split(",")
        head = ",".join(items[:4])
        return f"'{head},…' ({len(items)} {'ops' if option.endswith('ops') else 'items'})"
    return text[:LONG_DEFAULT - 1] + "…"
