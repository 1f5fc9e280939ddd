"""`graphopt fmt FILE.gopt`: print a pipeline file in canonical form.
"""

from __future__ import annotations

import sys

from graphopt.cli.common import Parser, write_text_atomically
from graphopt.errors import GraphoptError


def command(argv: list[str]) -> int:
    from graphopt.dsl.format import format_file
    from graphopt.dsl.parser import parse_file

    p = Parser(prog="graphopt fmt", description="Print a pipeline file in canonical form.")
    p.add_argument("pipeline", metavar="FILE.gopt")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the file in place")
    mode.add_argument("--check", action="store_true", help="exit 1 if the file is not in canonical form")
    args = p.parse_args(argv)
    try:
        with open(args.pipeline) as f:
            text = f.read()
    except OSError as e:
        raise GraphoptError(f"{args.pipeline}: {e.strerror}") from None
    canonical = format_file(parse_file(text, source=args.pipeline))
    if args.check:
        if canonical != text:
            print(f"{args.pipeline}: not in canonical form (run graphopt fmt --write)", file=sys.stderr)
            return 1
        return 0
    if args.write:
        if canonical != text:
            write_text_atomically(args.pipeline, canonical)
        return 0
    sys.stdout.write(canonical)
    return 0
