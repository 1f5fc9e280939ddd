"""`graphopt sparsity`: zero weights per layer and whether 2:4 holds.
"""

from __future__ import annotations

import json

from graphopt.cli.common import EXIT_FINDINGS, Parser


def command(argv: list[str]) -> int:
    from graphopt.lint.sparsity import layer_sparsity
    from graphopt.onnx_io import load as frontend

    p = Parser(prog="graphopt sparsity", description="Per layer (Conv, ConvTranspose, Gemm, MatMul with constant "
                "weights, also behind DequantizeLinear): the share of zero weights and whether TensorRT's 2:4 "
                "pattern holds along the input channels.")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print the layers as JSON")
    p.add_argument("--require-2:4", dest="require", action="store_true",
                   help="exit 4 when an eligible layer (input channels a multiple of 4) breaks the 2:4 pattern")
    args = p.parse_args(argv)
    layers = layer_sparsity(frontend.load(args.model))
    eligible = [L for L in layers if L.eligible]
    failing = [L for L in eligible if not L.two_four]
    if args.json:
        print(json.dumps([L.to_dict() for L in layers], indent=2))
    else:
        for L in layers:
            pattern = ("2:4 holds" if L.two_four else "2:4 broken") if L.eligible else \
                f"2:4 n/a (axis {L.axis} has {L.shape[L.axis]} entries, not a multiple of 4)"
            print(f"{L.op} {L.node!r} {L.shape}: {L.sparsity:.1f}% zeros, {pattern}")
        params = sum(L.params for L in layers)
        zeros = sum(L.params * L.sparsity / 100 for L in layers)
        print(f"graphopt sparsity: {len(layers)} layers, {100 * zeros / max(params, 1):.1f}% of {params} weights zero; "
              f"2:4 holds on {len(eligible) - len(failing)} of {len(eligible)} eligible layers")
    return EXIT_FINDINGS if args.require and failing else 0
