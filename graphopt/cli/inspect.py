"""`graphopt inspect`: params, MACs and FLOPs, memory, ops; `--diff` compares two models.
"""

from __future__ import annotations

import json

from graphopt.cli.common import Parser, add_input_shape_options


def command(argv: list[str]) -> int:
    from graphopt import driver as api
    from graphopt.cli.common import inspect_model
    from graphopt.onnx_io import load as frontend
    from graphopt.report.inspect import diff

    p = Parser(prog="graphopt inspect", description="Params, MACs and FLOPs per node and per op type (formulas "
                "in the symbolic dims unless --input-shape pins them), weight bytes by dtype, peak activation "
                "memory, op histogram, opsets, dynamic dims. With --diff, what changed from MODEL to B.")
    p.add_argument("model")
    add_input_shape_options(p)
    p.add_argument("--diff", metavar="B.onnx", help="compare with another model (e.g. after a pipeline)")
    p.add_argument("--json", action="store_true", help="print JSON (top level: params, flops, macs, weight_bytes, "
                   "peak_activation_bytes, ops, inputs and outputs with dtype and shape, ...)")
    args = p.parse_args(argv)
    shapes = api.parse_input_shapes(args.input_shape)

    def load(path):
        m = frontend.load(path)
        api.pin_input_shapes(m, shapes)
        return inspect_model(m)

    a = load(args.model)
    result = diff(a, load(args.diff)) if args.diff else a
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.diff:
        for key, (x, y) in ((k, v) for k, v in result.items() if k not in ("ops", "outputs")):
            print(f"{key}: {x} -> {y}")
        for op, (x, y) in result["ops"].items():
            print(f"  {op}: {x} -> {y}")
        for name, (x, y) in result["outputs"].items():
            print(f"output {name}: {x} -> {y}")
    else:
        for kind in ("inputs", "outputs"):  # first, as `polygraphy inspect model` shows them
            print(f"{kind}:")
            for name, io in a[kind].items():
                print(f"  {name}: {io['dtype']} {_shape(io['shape'])}")
        print(f"params {a['params']:,}  MACs {a['macs']}  FLOPs {a['flops']}  peak activations "
              f"{a['peak_activation_bytes']:,} B  weights {a['weight_bytes']}")
        print(f"opsets {a['opsets']}  dynamic dims {a['dynamic_dims'] or 'none'}")
        print(f"{'op type':24s} {'count':>6s} {'params':>12s}  FLOPs")
        for op, e in a["by_op_type"].items():
            print(f"{op:24s} {e['count']:6d} {e['params']:12,d}  {e['flops']}")
    return 0


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]" if shape is not None else "(unknown shape)"
