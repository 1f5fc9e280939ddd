"""Command line: `graphopt MODEL -p PASSES -o OUT` and `graphopt passes`.

Errors are one line on stderr and a non-zero exit code; a traceback only with --debug.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
from typing import Optional, Sequence

from graphopt.errors import GraphoptError

EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_FINDINGS = 4  # trt-check found errors


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other usage error
        self.exit(2, f"graphopt: error: {message} (see graphopt --help)\n")


def _main_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="graphopt", description="Rewrite an ONNX graph with a pipeline of passes, "
                "check and validate the result, and write it. Also: `graphopt passes` lists passes.")
    p.add_argument("model", help="input .onnx file (never modified)")
    p.add_argument("-p", "--passes", help="comma-separated passes or aliases, each optionally with "
                   "options in braces, e.g. 'cleanup,dce'; 'none' runs no pass (a lossless round trip)")
    p.add_argument("--pipeline", metavar="FILE.gopt|NAME",
                   help="a pipeline file, or the name of a shipped one (trt-fp32, ort-cpu, ...)")
    p.add_argument("--explain", action="append", default=[], metavar="RULE",
                   help="say where RULE (a user rule or a built-in rule) fired and why it declined elsewhere")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:DIMS",
                   help="pin an input's shape, e.g. input:1x3x224x224 (repeatable)")
    p.add_argument("--report", metavar="FILE.json|FILE.md", help="write per-pass stats, timings, validation and "
                   "what changed (inspect diff); .md writes Markdown with per-layer error charts (SVG) beside it")
    p.add_argument("--no-validate", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--calib", metavar="DATA.npz|FOLDER",
                   help="calibration data for int8: an .npz keyed by input name (first axis = samples) or a folder of them")
    p.add_argument("--calib-method", choices=("minmax", "percentile", "entropy", "mse"),
                   help="how activation ranges are chosen (default entropy)")
    p.add_argument("--calib-cache", metavar="FILE.json",
                   help="calibration cache: ranges are read from it when it matches, written to it otherwise")
    p.add_argument("--rtol", type=float, help="validation tolerance, relative to each output's max |value| (default 1e-5)")
    p.add_argument("--atol", type=float, help="validation absolute tolerance (default 1e-6)")
    p.add_argument("--strict", action="store_true", help="a pass that fails or breaks validation is an error, not rolled back")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--external-data", action="store_true",
                   help="store weights in OUT.data beside the output (automatic past 2 GiB)")
    p.add_argument("--initializers-as-constants", action="store_true",
                   help="treat initializers that are also graph inputs (IR v3 models) as constants")
    p.add_argument("--debug", action="store_true", help="verify the IR after every pass; show tracebacks")
    p.add_argument("-v", "--verbose", action="store_true", help="log every pass")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        command = SUBCOMMANDS.get(argv[0]) if argv else None
        return command(argv[1:]) if command else _optimize_command(argv)
    except GraphoptError as e:
        if debug:
            raise
        print(f"graphopt: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("graphopt: interrupted; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:  # the environment, not a bug: unwritable folder, disk full, ...
        if debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"graphopt: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except MemoryError:
        print("graphopt: error: out of memory", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: still one line unless --debug
        if debug:
            raise
        msg = " ".join(str(e).split())[:300]
        print(f"graphopt: internal error: {type(e).__name__}: {msg} (run with --debug for a traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


def _optimize_command(argv: list[str]) -> int:
    from graphopt import api
    from graphopt.validate import Tolerance

    args = _main_parser().parse_args(argv)
    _setup_logging(args)
    if args.passes is None and args.pipeline is None:
        raise GraphoptError("give passes with -p (e.g. -p fuse,fold) or --pipeline FILE.gopt; -p none for a plain round trip")
    if args.passes is not None and args.pipeline is not None:
        raise GraphoptError("give -p or --pipeline, not both")
    if args.report:
        _check_report_path(args.report, args)
    passes, cfg = args.passes, None
    if args.pipeline is not None:
        from graphopt.dsl.lower import load_pipeline

        cfg = load_pipeline(args.pipeline, api.default_registry())
        passes = cfg.steps

    def setting(block, key, flag, default):
        """An explicit command-line flag wins over the pipeline file, which wins over the default."""
        if flag is not None:
            return flag
        return cfg.setting(block, key, default) if cfg else default

    shapes = {**(cfg.input_shapes if cfg else {}), **api.parse_input_shapes(args.input_shape)}
    validate = not args.no_validate and setting("validate", "enabled", None, True)
    from graphopt.calibration import CalibrationSettings
    from graphopt.validate import LossyThresholds

    defaults = CalibrationSettings()
    calib = CalibrationSettings(
        data=setting("calibrate", "data", args.calib, None), method=setting("calibrate", "method", args.calib_method, defaults.method),
        cache=setting("calibrate", "cache", args.calib_cache, None), progress=not args.quiet,
        **{k: setting("calibrate", k, None, getattr(defaults, k))
           for k in ("samples", "percentile", "batch_size", "holdout", "memory_mb")})
    thresholds = LossyThresholds(**{k: setting("validate", k, None, None) for k in ("min_cosine", "min_snr_db", "min_top1")})
    result = api.optimize(
        args.model, passes, output=args.output, input_shapes=shapes,
        validate=validate, strict=args.strict, force=args.force, debug=args.debug,
        external_data=True if args.external_data or setting("output", "external_data", None, False) else None,
        initializers_as_constants=args.initializers_as_constants or setting("output", "initializers_as_constants", None, False),
        tolerance=Tolerance(rtol=setting("validate", "rtol", args.rtol, 1e-5), atol=setting("validate", "atol", args.atol, 1e-6)),
        draws=setting("validate", "draws", None, 3), seed=setting("validate", "seed", None, 0),
        explain=set(args.explain), calibration=calib, thresholds=thresholds)
    for name in args.explain:
        _print_explain(name, result.near_misses)
    if args.report:
        _write_report(args, result, shapes)
    if not args.quiet:
        q = result.pass_reports.get("quantize-int8")
        if q and q.get("layers"):
            n8 = sum(L["precision"] == "int8" for L in q["layers"])
            acc = q.get("accuracy")
            held = (f"; held-out vs FP32: cosine {acc['cosine']:.5f}" +
                    (f", top-1 agreement {acc['top1_agreement']:.2f}%" if acc.get("top1_agreement") is not None else "")
                    if acc else "")
            print(f"graphopt: int8: {n8} layers INT8, {len(q['layers']) - n8} fallen back to FP32, "
                  f"{len(q['skipped'])} left FP32 by placement{held}", file=sys.stderr)
        _print_pruning(result.pass_reports)
        val = (result.validation.summary() if result.validation
               else "skipped (--no-validate)" if not validate else "skipped (onnxruntime cannot run the result)")
        rolled = f"; rolled back: {', '.join(result.rolled_back)}" if result.rolled_back else ""
        print(f"graphopt: wrote {args.output}: {result.nodes_before} -> {result.nodes_after} nodes in "
              f"{result.seconds:.2f}s; validation: {val}{rolled}", file=sys.stderr)
    return 0


def _write_report(args, result, shapes: dict) -> None:
    """--report FILE.json (everything) or FILE.md (Markdown, per-layer error charts beside it)."""
    from graphopt import frontend
    from graphopt.api import pin_input_shapes
    from graphopt.inspection import diff, inspect
    from graphopt.trt_check import trt_check

    source = frontend.load(args.model)
    pin_input_shapes(source, shapes)  # compare like with like: both pinned as the run was
    report = {"input": os.path.abspath(args.model), "pipeline": args.passes or args.pipeline, **result.report(),
              "trt_check": [f.to_dict() for f in trt_check(result.model)],
              "inspect_diff": diff(inspect(source), inspect(result.model))}
    if not args.report.lower().endswith(".md"):
        _write_text_atomically(args.report, json.dumps(report, indent=2, default=str) + "\n")
        return
    from graphopt.report_md import markdown

    stem = os.path.splitext(args.report)[0]
    text, charts = markdown(report, stem)
    for name, svg in charts.items():
        _write_text_atomically(os.path.join(os.path.dirname(os.path.abspath(args.report)), name), svg)
    _write_text_atomically(args.report, text)


def _print_pruning(reports: dict) -> None:
    w = reports.get("prune-weights")
    if w and w.get("layers"):
        params = sum(L["params"] for L in w["layers"])
        zeros = sum(L["params"] * L["sparsity"] / 100 for L in w["layers"])
        print(f"graphopt: prune-weights ({w['method']}): {100 * zeros / max(params, 1):.1f}% of {params} weights zero "
              f"in {len(w['layers'])} layers; {len(w['skipped'])} layers skipped", file=sys.stderr)
    c = reports.get("prune-channels")
    if c and c.get("layers"):
        b, a = c["before"], c["after"]
        print(f"graphopt: prune-channels: {len(c['layers'])} layers thinned, {len(c['skipped'])} kept whole; params "
              f"{b['params']} -> {a['params']}, FLOPs {b['flops']} -> {a['flops']} "
              f"(-{100 * (1 - a['flops'] / max(b['flops'], 1)):.1f}%)", file=sys.stderr)


def _print_explain(rule: str, near_misses) -> None:
    mine = [nm for nm in near_misses if nm.rule == rule]
    if not mine:
        print(f"explain {rule}: no node matched its pattern", file=sys.stderr)
        return
    fired = [nm for nm in mine if nm.reason == "fired"]
    print(f"explain {rule}: fired {len(fired)} times, declined {len(mine) - len(fired)} matches", file=sys.stderr)
    for nm in mine:
        what = "fired" if nm.reason == "fired" else f"declined: {nm.reason}"
        print(f"  {nm.node}: {what}", file=sys.stderr)


def _check_command(argv: list[str]) -> int:
    from graphopt.api import default_registry
    from graphopt.dsl.lower import load_pipeline

    p = _Parser(prog="graphopt check", description="Parse a pipeline file and resolve every pass, option, "
                "setting and rule, without a model.")
    p.add_argument("pipeline", metavar="FILE.gopt")
    args = p.parse_args(argv)
    cfg = load_pipeline(args.pipeline, default_registry())
    print(f"{args.pipeline}: ok ({_count_steps(cfg.steps)} steps, {len(cfg.rules)} rules, "
          f"{len(cfg.sources)} files)")
    return 0


def _count_steps(steps) -> int:
    from graphopt.passmanager import FixedPoint

    return sum(_count_steps(s.steps) if isinstance(s, FixedPoint) else 1 for s in steps)


def _fmt_command(argv: list[str]) -> int:
    from graphopt.dsl.format import format_file
    from graphopt.dsl.parser import parse_file

    p = _Parser(prog="graphopt fmt", description="Print a pipeline file in canonical form.")
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
            _write_text_atomically(args.pipeline, canonical)
        return 0
    sys.stdout.write(canonical)
    return 0


def _check_report_path(path: str, args) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise GraphoptError(f"--report folder {folder!r} does not exist")
    if os.path.isdir(path) or path.endswith(os.sep):
        raise GraphoptError(f"--report {path!r} names a folder, not a file")
    if os.path.realpath(path) in (os.path.realpath(args.model), os.path.realpath(args.output)):
        raise GraphoptError(f"--report {path!r} would overwrite the input or the output model")


def _write_text_atomically(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".graphopt-report-", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a report is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _setup_logging(args) -> None:
    level = logging.ERROR if args.quiet else (logging.INFO if args.verbose or args.debug else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("graphopt: %(message)s"))
    logger = logging.getLogger("graphopt")
    logger.handlers = [handler]
    logger.setLevel(level)
    logger.propagate = False


def _trt_check_command(argv: list[str]) -> int:
    from graphopt.trt_check import trt_check

    return _findings_command(argv, "trt-check", trt_check, "List what TensorRT's ONNX parser is known to reject "
                             "in a model, with the node and the reason. Exit code 4 when there are errors.")


def _qdq_lint_command(argv: list[str]) -> int:
    from graphopt.qdq_lint import qdq_lint

    return _findings_command(argv, "qdq-lint", qdq_lint, "List Q/DQ placements TensorRT's explicit quantization "
                             "rejects (zero points, scales, axes, quantized bias, residual Adds, unpaired Q/DQ). "
                             "Exit code 4 when there are errors.")


def _inspect_command(argv: list[str]) -> int:
    from graphopt import api, frontend
    from graphopt.inspection import diff, inspect

    p = _Parser(prog="graphopt inspect", description="Params, MACs and FLOPs per node and per op type (formulas "
                "in the symbolic dims unless --input-shape pins them), weight bytes by dtype, peak activation "
                "memory, op histogram, opsets, dynamic dims. With --diff, what changed from MODEL to B.")
    p.add_argument("model")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:DIMS", help="pin an input's shape")
    p.add_argument("--diff", metavar="B.onnx", help="compare with another model (e.g. after a pipeline)")
    p.add_argument("--json", action="store_true", help="print JSON (top level: params, flops, macs, weight_bytes, "
                   "peak_activation_bytes, ops, ...)")
    args = p.parse_args(argv)
    shapes = api.parse_input_shapes(args.input_shape)

    def load(path):
        m = frontend.load(path)
        api.pin_input_shapes(m, shapes)
        return inspect(m)

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
        print(f"params {a['params']:,}  MACs {a['macs']}  FLOPs {a['flops']}  peak activations "
              f"{a['peak_activation_bytes']:,} B  weights {a['weight_bytes']}")
        print(f"opsets {a['opsets']}  dynamic dims {a['dynamic_dims'] or 'none'}")
        print(f"{'op type':24s} {'count':>6s} {'params':>12s}  FLOPs")
        for op, e in a["by_op_type"].items():
            print(f"{op:24s} {e['count']:6d} {e['params']:12,d}  {e['flops']}")
    return 0


def _sparsity_command(argv: list[str]) -> int:
    from graphopt import frontend
    from graphopt.sparsity import layer_sparsity

    p = _Parser(prog="graphopt sparsity", description="Per layer (Conv, ConvTranspose, Gemm, MatMul with constant "
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


def _findings_command(argv: list[str], name: str, check, description: str) -> int:
    """A checker subcommand: load MODEL, print its findings (or --json), exit 4 on errors."""
    from graphopt import frontend
    from graphopt.shapes import infer_shapes

    p = _Parser(prog=f"graphopt {name}", description=description)
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


def _passes_command(argv: list[str]) -> int:
    from graphopt.api import default_registry

    p = _Parser(prog="graphopt passes", description="List every pass and alias with its options.")
    p.parse_args(argv)
    reg = default_registry()
    out = ["Passes:"]
    for name in sorted(reg.passes):
        cls = reg.passes[name]
        out.append(f"  {name:24s} {cls.summary}")
        for f in dataclasses.fields(cls.Options):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            help_ = f.metadata.get("help", "")
            out.append(f"  {'':24s}   {f.name}={default!r} ({getattr(f.type, '__name__', f.type)}) {help_}".rstrip())
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


SUBCOMMANDS = {"passes": _passes_command, "trt-check": _trt_check_command, "qdq-lint": _qdq_lint_command,
               "sparsity": _sparsity_command, "inspect": _inspect_command, "check": _check_command,
               "fmt": _fmt_command}


def entry() -> None:
    """Console-script entry: run, flush, and exit without tearing the interpreter down module by
    module (every file and temporary folder is closed by then; teardown only costs time)."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
