"""`graphopt MODEL -p PASSES -o OUT`: run a pipeline on a model and write the result.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from graphopt.cli.common import (
    Parser,
    add_input_shape_options,
    version,
    write_text_atomically,
)
from graphopt.errors import GraphoptError, UsageError
from graphopt.quant import calibration

log = logging.getLogger("graphopt")


def main_parser() -> argparse.ArgumentParser:
    p = Parser(prog="graphopt", usage="graphopt MODEL [OUT] -p PASSES [-o OUT] [options]\n"
               "       graphopt {passes,inspect,trt-check,qdq-lint,sparsity,check,fmt} ... (each has --help)",
               description="Rewrite an ONNX graph with a pipeline of passes, check and validate the result, "
               "and write it.", epilog=SUBCOMMAND_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"graphopt {version()}")
    p.add_argument("model", help="input .onnx file (never modified)")
    p.add_argument("output_positional", nargs="?", metavar="OUT", help="output .onnx file (or -o OUT)")
    p.add_argument("-p", "--passes", help="comma-separated passes or aliases, each optionally with "
                   "options in braces, e.g. 'cleanup,dce'; 'none' runs no pass (a lossless round trip)")
    p.add_argument("--pipeline", metavar="FILE.gopt|NAME",
                   help="a pipeline file, or the name of a shipped one (trt-fp32, ort-cpu, ...)")
    p.add_argument("--explain", action="append", default=[], metavar="RULE",
                   help="say where RULE (a user rule or a built-in rule) fired and why it declined elsewhere")
    p.add_argument("-o", "--output", help="output .onnx file (or OUT after MODEL, onnxsim's form)")
    add_input_shape_options(p)
    p.add_argument("--report", metavar="FILE.json|FILE.md", help="write per-pass stats, timings, validation and "
                   "what changed (inspect diff); .md writes Markdown with per-layer error charts (SVG) beside it")
    p.add_argument("--compare", action="append", default=[], choices=("onnxsim", "onnxslim"), metavar="TOOL",
                   help="also run onnxsim or onnxslim (if installed) on the input, in a subprocess, and put its node "
                   "count and op histogram beside graphopt's in the summary and the --report (repeatable)")
    p.add_argument("--no-validate", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--validate-data", metavar="DATA.npz|FOLDER",
                   help="inputs to validate on: an .npz keyed by input name (first axis = samples) or a folder of "
                   "them (default: --calib data, else inputs generated from how the graph uses each input)")
    p.add_argument("--calib", metavar="DATA.npz|FOLDER",
                   help="calibration data for int8: an .npz keyed by input name (first axis = samples) or a folder of them; "
                   "'random': synthesized inputs (only when asked for: int8 without --calib is an error)")
    p.add_argument("--calib-method", choices=calibration.METHODS,
                   help="how activation ranges are chosen (default auto)")
    p.add_argument("--calib-cache", metavar="FILE.json",
                   help="calibration cache: ranges are read from it when it matches, written to it otherwise")
    p.add_argument("--rtol", type=float, help="validation tolerance, relative to each output's max |value| (default 1e-5; "
                   "2^-10 for an output the model computes in float16, 2^-7 in bfloat16)")
    p.add_argument("--atol", type=float, help="validation absolute tolerance (default 1e-6)")
    p.add_argument("--strict", action="store_true", help="a pass that fails or breaks validation is an error, not rolled back")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--external-data", action="store_true",
                   help="store weights in OUT.data beside the output (automatic past 2 GiB)")
    p.add_argument("--keep-initializer-inputs", action="store_true",
                   help="initializers that are also graph inputs (old IR v3 models) stay overridable inputs; by "
                   "default they are constants, as TensorRT's parser and onnxsim treat them")
    p.add_argument("--initializers-as-constants", action="store_true",
                   help="accepted for compatibility: it is the default now")
    return p


SUBCOMMAND_HELP = """subcommands (graphopt SUBCOMMAND --help for each):
  passes      every pass and alias with its options
  inspect     params, MACs/FLOPs, memory, inputs and outputs; --diff compares two models
  trt-check   what TensorRT's ONNX parser is known to reject
  qdq-lint    Q/DQ placements TensorRT's explicit quantization rejects
  sparsity    zero weights per layer and whether 2:4 holds
  check       resolve a pipeline file without a model
  fmt         print a pipeline file in canonical form

exit codes: 0 ok, 1 bad input, 2 usage, 3 accuracy or validation, 4 checker findings, 70 internal error"""


def command(argv: list[str]) -> int:
    from graphopt import driver as api
    from graphopt.runtime.validate import Tolerance

    parser = main_parser()
    args = parser.parse_args(argv)
    if args.output is not None and args.output_positional is not None:
        parser.error(f"give the output once: OUT after MODEL or -o, not both ({args.output_positional!r}, {args.output!r})")
    args.output = args.output if args.output is not None else args.output_positional
    if args.output is None:
        parser.error("the following arguments are required: -o/--output (or OUT after MODEL)")
    if args.initializers_as_constants:
        log.warning("note: --initializers-as-constants is the default now (initializers listed as inputs are "
                    "constants); --keep-initializer-inputs keeps them overridable")
    if args.passes is None and args.pipeline is None:
        raise UsageError("give passes with -p (e.g. -p fuse,fold) or --pipeline FILE.gopt; -p none for a plain round trip")
    if args.passes is not None and args.pipeline is not None:
        raise UsageError("give -p or --pipeline, not both")
    if args.report:
        _check_report_path(args.report, args)
    passes, cfg = args.passes, None
    if args.pipeline is not None:
        from graphopt.dsl.lower import load_pipeline

        cfg = load_pipeline(args.pipeline, api.default_registry())
        passes = cfg.steps

    _check_explain_names(args.explain, cfg)
    if args.compare:
        from graphopt.cli.compare import check_available

        check_available(args.compare)

    def setting(block, key, flag, default):
        """An explicit command-line flag wins over the pipeline file, which wins over the default."""
        if flag is not None:
            return flag
        return cfg.setting(block, key, default) if cfg else default

    shapes = {**(cfg.input_shapes if cfg else {}), **api.parse_input_shapes(args.input_shape)}
    validate = not args.no_validate and setting("validate", "enabled", None, True)
    from graphopt.runtime.validate import DEFAULT_FLOOR, LossyThresholds

    defaults = calibration.CalibrationSettings()
    flags = {k: getattr(args, f.lstrip("-").replace("-", "_")) for k, f in calibration.CLI_FLAGS.items()}
    calib = calibration.CalibrationSettings(progress=not args.quiet, **{
        k: setting("calibrate", k, flags.get(k), getattr(defaults, k)) for k in calibration.USER_SETTINGS})
    thresholds = LossyThresholds(**{k: setting("validate", k, None, None) for k in DEFAULT_FLOOR})
    result = api.optimize(
        args.model, passes, output=args.output, input_shapes=shapes,
        validate=validate, strict=args.strict, force=args.force, debug=args.debug,
        external_data=True if args.external_data or setting("output", "external_data", None, False) else None,
        keep_initializer_inputs=args.keep_initializer_inputs or setting("output", "keep_initializer_inputs", None, False),
        tolerance=Tolerance(rtol=setting("validate", "rtol", args.rtol, None), atol=setting("validate", "atol", args.atol, 1e-6)),
        draws=setting("validate", "draws", None, None), seed=setting("validate", "seed", None, 0),
        explain=set(args.explain), calibration=calib, thresholds=thresholds,
        validation_data=setting("validate", "data", args.validate_data, None))
    for name in args.explain:
        _print_explain(name, result.near_misses)
    comparison = None
    if args.compare:
        from graphopt.cli.compare import compare

        comparison = compare(dict.fromkeys(args.compare), args.model, result, shapes)
    if args.report:
        _write_report(args, result, shapes, comparison)
    if not args.quiet:
        q = result.pass_reports.get("quantize-int8")
        if q and q.get("layers"):
            n8 = sum(L["precision"] == "int8" for L in q["layers"])
            acc = q.get("accuracy")
            held = (f"; held-out vs FP32: cosine {acc['cosine']:.5f}" +
                    (f", top-1 agreement {acc['top1_agreement']:.2f}%" if acc.get("top1_agreement") is not None else "")
                    if acc else "")
            eq = q.get("equalization")
            kept = (f"; equalization kept: {', '.join(eq['kept']) or 'none'}"
                    f" (tried {', '.join(t['name'] for t in eq['tried'] if t.get('applies')) or 'none'})"
                    if eq and eq.get("tried") is not None else "")
            print(f"graphopt: int8: {n8} layers INT8, {len(q['layers']) - n8} fallen back to FP32, "
                  f"{len(q['skipped'])} left FP32 by placement{held}{kept}", file=sys.stderr)
        _print_pruning(result.pass_reports)
        status = result.validation_status
        val = (result.validation.summary() if result.validation
               else "skipped (--no-validate)" if status == "skipped by request"
               else "NOT VALIDATED (see the warning above)" if status.startswith("not validated") else status)
        rolled = f"; rolled back: {', '.join(result.rolled_back)}" if result.rolled_back else ""
        for w in result.warnings:
            print(f"graphopt: WARNING: {w}", file=sys.stderr)
        for note in result.notes:
            print(f"graphopt: note: {note}", file=sys.stderr)
        warned = f"; {len(result.warnings)} warning{'s' if len(result.warnings) > 1 else ''}" if result.warnings else ""
        if comparison:
            from graphopt.cli.compare import summary

            for line in summary(comparison):
                print(f"graphopt: compare: {line}", file=sys.stderr)
        print(f"graphopt: wrote {args.output}: {result.nodes_before} -> {result.nodes_after} nodes in "
              f"{result.seconds:.2f}s; validation: {val}{rolled}{warned}", file=sys.stderr)
    else:  # -q hides progress, never what changes what the result means
        for w in result.warnings:
            print(f"graphopt: WARNING: {w}", file=sys.stderr)
        if result.validation_status.startswith("not validated"):
            print(f"graphopt: WARNING: {args.output} is {result.validation_status}", file=sys.stderr)
    return 0


def _write_report(args, result, shapes: dict, comparison=None) -> None:
    """--report FILE.json (everything) or FILE.md (Markdown, per-layer error charts beside it)."""
    from graphopt.cli.common import inspect_model
    from graphopt.driver import pin_input_shapes
    from graphopt.lint.trt_check import trt_check
    from graphopt.onnx_io import load as frontend
    from graphopt.report.inspect import diff

    source = frontend.load(args.model)
    pin_input_shapes(source, shapes)  # compare like with like: both pinned as the run was
    report = {"input": os.path.abspath(args.model), "pipeline": args.passes or args.pipeline, **result.report(),
              "trt_check": [f.to_dict() for f in trt_check(result.model)],
              "inspect_diff": diff(inspect_model(source), inspect_model(result.model)),
              **({"compare": comparison} if comparison else {})}
    if not args.report.lower().endswith(".md"):
        write_text_atomically(args.report, json.dumps(report, indent=2, default=str) + "\n")
        return
    from graphopt.report.markdown import markdown

    stem = os.path.splitext(args.report)[0]
    text, charts = markdown(report, stem)
    for name, svg in charts.items():
        write_text_atomically(os.path.join(os.path.dirname(os.path.abspath(args.report)), name), svg)
    write_text_atomically(args.report, text)


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
              f"(-{100 * (1 - a['flops_one'] / max(b['flops_one'], 1)):.1f}%)", file=sys.stderr)


def _check_explain_names(names, cfg) -> None:
    """--explain names a built-in rule (`graphopt passes` lists them) or a rule of the pipeline file."""
    import difflib

    from graphopt.driver import default_registry
    from graphopt.rewrite import RulePass

    if not names:
        return  # nothing to check: do not load the pass library for it
    registry = default_registry()
    builtin = {r.name for cls in registry.passes.values() if issubclass(cls, RulePass) for r in cls.rules}
    known = builtin | (set(cfg.rules) if cfg else set())
    if any(n not in known for n in names):  # maybe a plugin's rule: only then scan the installed packages
        registry.load_plugins()
        known |= {r.name for cls in registry.passes.values() if issubclass(cls, RulePass) for r in cls.rules}
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else "; `graphopt passes` lists the rules of each pass"
            raise GraphoptError(f"--explain {name!r}: no such rule{hint}")


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


def _check_report_path(path: str, args) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise GraphoptError(f"--report folder {folder!r} does not exist")
    if os.path.isdir(path) or path.endswith(os.sep):
        raise GraphoptError(f"--report {path!r} names a folder, not a file")
    if os.path.realpath(path) in (os.path.realpath(args.model), os.path.realpath(args.output)):
        raise GraphoptError(f"--report {path!r} would overwrite the input or the output model")
