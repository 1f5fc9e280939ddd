"""`graphopt trt-check` and `graphopt qdq-lint`: print a checker's findings, exit 4 on errors.
"""

from __future__ import annotations

import json

from graphopt.cli.common import EXIT_FINDINGS, Parser


def trt_check_command(argv: list[str]) -> int:
    from graphopt.lint import trt_matrix
    from graphopt.lint.trt_check import trt_check

    def options(p: Parser) -> None:
        versions = sorted(set(trt_matrix.VERSIONS) | set(trt_matrix.ALIASES),
                          key=lambda v: [int(x) for x in v.split(".")])
        p.add_argument("--trt", default=trt_matrix.DEFAULT, choices=versions, metavar="VERSION",
                       help=f"the TensorRT version whose ONNX parser to check against: {', '.join(versions)} (default "
                       f"{trt_matrix.DEFAULT} = {trt_matrix.resolve(trt_matrix.DEFAULT)}, the newest 10.x checked "
                       "against the parser source; 10.15 is from its docs only)")

    return _findings_command(argv, "trt-check", lambda model, args: trt_check(model, args.trt),
                             "List what TensorRT's ONNX parser rejects in a model (errors) and what it accepts at a "
                             "cost (warnings), per TensorRT version, with the node, the reason and the rule. Exit "
                             "code 4 when there are errors.", options)


def qdq_lint_command(argv: list[str]) -> int:
    from graphopt.lint.qdq_lint import qdq_lint

    return _findings_command(argv, "qdq-lint", lambda model, args: qdq_lint(model),
                             "List Q/DQ placements TensorRT's explicit quantization rejects (zero points, scales, "
                             "axes, quantized bias, residual Adds, unpaired Q/DQ). Exit code 4 when there are errors.")


def _findings_command(argv: list[str], name: str, check, description: str, options=None) -> int:
    """A checker subcommand: load MODEL, print its findings (or --json), exit 4 on errors."""
    from graphopt.analysis.shapes import infer_shapes
    from graphopt.onnx_io import load as frontend

    p = Parser(prog=f"graphopt {name}", description=description)
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    if options is not None:
        options(p)
    args = p.parse_args(argv)
    model = frontend.load(args.model)
    infer_shapes(model)
    findings = check(model, args)
    errors = sum(f.severity == "error" for f in findings)
    if args.json:
        print(json.dumps([f.to_dict() for f in findings], indent=2))
    else:
        for f in findings:
            print(f)
        print(f"graphopt {name}: {errors} errors, {len(findings) - errors} warnings")
    return EXIT_FINDINGS if errors else 0
