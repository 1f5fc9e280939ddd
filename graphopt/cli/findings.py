"""`graphopt trt-check` and `graphopt qdq-lint`: print a checker's findings, exit 4 on errors.
"""

from __future__ import annotations

import json

from graphopt.cli.common import EXIT_FINDINGS, Parser


def trt_check_command(argv: list[str]) -> int:
    from graphopt.lint.trt_check import trt_check

    return _findings_command(argv, "trt-check", trt_check, "List what TensorRT's ONNX parser is known to reject "
                             "in a model, with the node and the reason. Exit code 4 when there are errors.")


def qdq_lint_command(argv: list[str]) -> int:
    from graphopt.lint.qdq_lint import qdq_lint

    return _findings_command(argv, "qdq-lint", qdq_lint, "List Q/DQ placements TensorRT's explicit quantization "
                             "rejects (zero points, scales, axes, quantized bias, residual Adds, unpaired Q/DQ). "
                             "Exit code 4 when there are errors.")


def _findings_command(argv: list[str], name: str, check, description: str) -> int:
    """A checker subcommand: load MODEL, print its findings (or --json), exit 4 on errors."""
    from graphopt.analysis.shapes import infer_shapes
    from graphopt.onnx_io import load as frontend

    p = Parser(prog=f"graphopt {name}", description=description)
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    args = p.parse_args(argv)
    model = frontend.load(args.model)
    infer_shapes(model)
    findings = check(model)
    errors = sum(f.severity == "error" for f in findings)
    if args.json:
        print(json.dumps([f.to_dict() for f in findings], indent=2))
    else:
        for f in findings:
            print(f)
        print(f"graphopt {name}: {errors} errors, {len(findings) - errors} warnings")
    return EXIT_FINDINGS if errors else 0
