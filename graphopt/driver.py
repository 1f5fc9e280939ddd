"""The driver behind the CLI and the Python API.

load → pin input shapes → run the pipeline → emit (checker + strict shape inference) →
validate against the input with onnxruntime → on a mismatch, bisect the pass trace to the
first invocation that broke it (re-running prefixes of the pipeline through the pass manager),
run the pipeline again without that pass (or fail under strict) → write atomically.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import onnx

from graphopt.dsl.lower import parse_and_lower
from graphopt.errors import (
    GraphoptError,
    InvalidModelError,
    PipelineError,
    UsageError,
    ValidationError,
)
from graphopt.ir import Model, format_shape
from graphopt.onnx_io import emit as backend
from graphopt.onnx_io import load as frontend
from graphopt.onnx_io.write import OutputTransaction
from graphopt.pipeline.base import Pass, PassContext
from graphopt.pipeline.manager import PassManager, PassRecord, pass_table
from graphopt.pipeline.registry import Registry
from graphopt.quant.calibration import (
    CALIBRATION_REQUIRED,
    RANDOM,
    CalibrationRequired,
    CalibrationSettings,
)
from graphopt.rewrite import Rule, RulePass
from graphopt.runtime.validate import (
    InputsNotRunnable,
    LossyThresholds,
    Tolerance,
    ValidationReport,
    Validator,
)

# Warnings that change what a result means (not validated, a pass rolled back, validation
# skipped): the CLI's -q hides progress and notes, never these (graphopt.cli.common.MEANING).
meaning = logging.getLogger("graphopt.meaning")

MAX_ROLLBACKS = 8
CHECKER_NOTE = "the input model already fails the ONNX checker the same way"
# Models with more constant bytes than this validate strictly one onnxruntime session at a time.
OVERLAP_MAX_BYTES = 1 << 30


@dataclass
class Result:
    model: Model
    records: list[PassRecord]  # every invocation of every pass, in order (each fixed-point round)
    validation: Optional[ValidationReport] = None
    rolled_back: list[str] = field(default_factory=list)
    output: Optional[str] = None
    nodes_before: int = 0
    nodes_after: int = 0
    seconds: float = 0.0
    near_misses: list = field(default_factory=list)  # for --explain
    pass_reports: dict[str, Any] = field(default_factory=dict)  # details some passes give (int8: scales, accuracy)
    warnings: list[str] = field(default_factory=list)  # e.g. a fixed-point group that reached its cap
    # "validated", "not validated: <why>", "skipped by request" or "skipped: <why>"
    validation_status: str = "skipped by request"
    notes: list[str] = field(default_factory=list)  # e.g. checker findings the input already had
    known_checker_problem: Optional[str] = None  # the checker's finding the input already had, if any

    @property
    def validated(self) -> bool:
        return self.validation_status == "validated"

    def to_proto(self) -> onnx.ModelProto:
        """The optimized model as one ModelProto (weights inline; for models under 2 GiB)."""
        return backend.to_proto(self.model)

    def save(self, path: str, *, force: bool = False, external_data: Optional[bool] = None) -> str:
        """Write the optimized model as graphopt writes its outputs (checked, atomic, never onto the
        input or an existing file unless `force`); returns the path written."""
        protected = (self.model.source_path, *self.model.source_data_files)
        with OutputTransaction(path, force=force, protected=tuple(p for p in protected if p)) as tx:
            try:
                emitted = backend.emit(self.model, tx.staging_dir(), tx.basename, external_data=external_data)
            except InvalidModelError as e:
                if str(e) != self.known_checker_problem:  # only what the input already had is let through
                    raise
                emitted = backend.emit(self.model, tx.staging_dir(), tx.basename, external_data=external_data,
                                       check=False)
            tx.commit(emitted)
        return tx.target

    def report(self) -> dict[str, Any]:
        return {
            "validation_status": self.validation_status,
            **({"notes": self.notes} if self.notes else {}),
            **({"pass_reports": self.pass_reports} if self.pass_reports else {}),
            "output": self.output,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "seconds": round(self.seconds, 4),
            "warnings": self.warnings,
            "passes": pass_table(self.records),  # one row per pass; each round under "rounds"
            "rolled_back": self.rolled_back,
            "validation": self.validation.to_dict() if self.validation else None,
        }


def default_registry() -> Registry:
    from graphopt.passes import (
        default_registry as make,  # the pass library, composed here
    )

    return make()


def parse_pipeline(passes: Union[str, Sequence], registry: Registry) -> list:
    """Pipeline steps from a `-p` string, or a list mixing such strings (pass names, aliases,
    options), Pass objects, Pass classes (run with their default options) and Rules (each runs
    as a pass of its own)."""
    if isinstance(passes, str):
        return parse_and_lower(passes, registry)
    steps = []
    for item in passes:
        if isinstance(item, str):
            steps.extend(parse_and_lower(item, registry))
        elif isinstance(item, Pass):
            steps.append(item)
        elif isinstance(item, type) and issubclass(item, Pass):
            steps.append(item())
        elif isinstance(item, Rule) or isinstance(item, type) and issubclass(item, Rule):
            steps.append(RulePass.of(item if isinstance(item, Rule) else item())())
        else:
            raise PipelineError(f"pipeline item {item!r} is not a pass name, a graphopt.Pass or a graphopt.Rule")
    return steps


def parse_input_shapes(specs: Sequence[str]) -> dict[Optional[str], tuple[int, ...]]:
    """`NAME:1x3x224x224` or `NAME:1,3,224,224` strings → {NAME: (1, 3, 224, 224)}; a bare
    `1x3x224x224` (or `1,3,224,224`) is the shape of a model's only input, under the key None
    (pin_input_shapes resolves it). A malformed spec is a usage error (exit code 2)."""
    shapes: dict[Optional[str], tuple[int, ...]] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition(":")
        try:
            if sep and not name:
                raise ValueError
            text = dims.strip().lower()
            parts = text.split(",") if "," in text else text.split("x")
            shape = tuple(int(d) for d in parts) if text else ()
            if any(d <= 0 for d in shape) or (not sep and not shape):
                raise ValueError
        except ValueError:
            raise UsageError(f"--input-shape {spec!r}: expected NAME:DIMxDIM... or NAME:DIM,DIM,..., e.g. "
                             f"input:1x3x224x224, or a bare 1x3x224x224 for a model with one input") from None
        shapes[name if sep else None] = shape
    return shapes


def pin_input_shapes(model: Model, shapes: dict[str, tuple[int, ...]]) -> None:
    """Give inputs concrete shapes. A symbolic dim pinned this way is that number wherever the
    model names it (ONNX: one dim_param name, one size)."""
    inputs = {v.name: v for v in model.graph.inputs}
    if None in shapes:  # a bare shape: the model's only input
        fed = [v.name for v in model.graph.inputs if v.const is None]
        if len(fed) != 1:
            raise UsageError(f"--input-shape {'x'.join(map(str, shapes[None]))} gives no input name, and the model has "
                             f"{len(fed)} inputs ({', '.join(fed) or 'none'}): use NAME:DIMS")
        shapes = {(k if k is not None else fed[0]): v for k, v in shapes.items()}
    bound: dict[str, int] = {}
    for name, shape in shapes.items():
        v = inputs.get(name)
        if v is None:
            import difflib

            close = difflib.get_close_matches(name, list(inputs), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; inputs are {', '.join(inputs)}"
            raise GraphoptError(f"--input-shape names {name!r}, which is not a model input{hint}")
        if v.shape is not None:
            if len(v.shape) != len(shape) or any(isinstance(d, int) and d != p for d, p in zip(v.shape, shape)):
                raise GraphoptError(f"--input-shape {name}:{'x'.join(map(str, shape))} does not match the "
                                    f"model's input shape {list(v.shape)}")
            for d, p in zip(v.shape, shape):
                if isinstance(d, str) and bound.setdefault(d, p) != p:
                    raise GraphoptError(f"--input-shape gives dim {d!r} two sizes, {bound[d]} and {p}")
        v.shape = tuple(shape)
    if bound:
        for g in model.graph.walk():
            for v in g.values:
                if v.shape is not None and any(isinstance(d, str) and d in bound for d in v.shape):
                    v.shape = tuple(bound.get(d, d) if isinstance(d, str) else d for d in v.shape)


def optimize(model: Union[str, os.PathLike, onnx.ModelProto], passes: Union[str, Sequence] = "none", *,
             output: Optional[str] = None, input_shapes: Optional[dict] = None, validate: bool = True,
             strict: bool = False, force: bool = False, debug: bool = False,
             external_data: Optional[bool] = None, keep_initializer_inputs: bool = False,
             initializers_as_constants: Optional[bool] = None,
             tolerance: Tolerance = Tolerance(), draws: Optional[int] = None, seed: int = 0,
             explain: Optional[set[str]] = None, registry: Optional[Registry] = None,
             calibration: Union[None, str, os.PathLike, Iterable, CalibrationSettings] = None,
             thresholds: Optional[LossyThresholds] = None,
             validation_data: Union[None, str, os.PathLike, Iterable] = None) -> Result:
    """Run a pipeline on a model, check and validate the result; write it to `output` if given.

    `model`: an .onnx path or a ModelProto (never modified).
    `passes`: a `-p` string (`"fuse,fold"`, `"prune{sparsity=0.5}"`), or a list mixing such
    strings, Pass objects or classes and Rules; `"none"` runs no pass (a checked round trip).
    `output`: where to write (atomically; nothing is written if the run fails); without it use
    `Result.model`, `Result.to_proto()` or `Result.save(path)`.
    `input_shapes`: {input name: dims} pins input shapes (symbolic dims become numbers).
    `validate`: compare the result with the input under onnxruntime (lossless pipelines within
    `tolerance`, over `draws` seeded draws from `seed` (None: up to 3, fewer for a model whose
    runs are slow or outputs large, docs/ARCHITECTURE.md, Validation); lossy ones by accuracy against
    `thresholds`). `strict`: a pass that fails or breaks validation is an error instead of being
    rolled back; an unvalidated result is an error too. `force`: overwrite an existing output.
    `debug`: verify the IR after every pass. `external_data`: weights in OUT.data (None: only
    past 2 GiB). `explain`: rule names whose matches and near misses `Result.near_misses` lists.
    `registry`: the passes names resolve against (default: the pass library and plugins).
    `calibration`: data for passes that calibrate or measure (int8, fp16/bf16, a prune budget):
    an .npz keyed by input name (first axis = samples), a folder of them, an onnxruntime
    `CalibrationDataReader` (`get_next()` returns feed dicts until None), any iterable of feed
    dicts, or CalibrationSettings (copied, never modified). An iterable or reader is read once,
    written in chunks to a temporary folder of .npz files and deleted at the end: calibration and
    validation (on held-out samples) both read it, and it is never held in memory whole.
    `thresholds`: the accuracy a lossy pipeline must keep against the input.
    `keep_initializer_inputs`: initializers also listed as graph inputs stay overridable inputs
    (by default they are constants, as TensorRT and onnxsim treat them);
    `initializers_as_constants` is accepted for compatibility and changes nothing.
    `validation_data`: inputs to validate on (an .npz, a folder of them, a reader or an iterable
    of feed dicts, spooled like `calibration`); without it, calibration data is used, else inputs
    synthesized from the graph. If the input model does not run on any synthesized inputs, the
    result is written unvalidated and `Result.validation_status` says why (an error under
    `strict`). `Result.warnings` lists what changes what the result means (e.g. calibration
    data nothing used)."""
    calib = dataclasses.replace(calibration) if isinstance(calibration, CalibrationSettings) \
        else CalibrationSettings(data=calibration)
    calib.check()
    with tempfile.TemporaryDirectory(prefix="graphopt-feeds-") as spool:
        if calib.data is not None and not isinstance(calib.data, (str, os.PathLike)):
            calib.data = spool_feeds(calib.data, os.path.join(spool, "calibration"), "calibration")
        if validation_data is not None and not isinstance(validation_data, (str, os.PathLike)):
            validation_data = spool_feeds(validation_data, os.path.join(spool, "validation"), "validation")
        return _optimize(model, passes, output=output, input_shapes=input_shapes, validate=validate, strict=strict,
                         force=force, debug=debug, external_data=external_data,
                         keep_initializer_inputs=keep_initializer_inputs, tolerance=tolerance, draws=draws, seed=seed,
                         explain=explain, registry=registry, calib=calib, thresholds=thresholds,
                         validation_data=validation_data)


SPOOL_CHUNK = 32  # feeds per .npz file when an iterable of feeds is spooled to disk


def spool_feeds(source, folder: str, what: str) -> str:
    """Write an iterable of feed dicts (or an onnxruntime CalibrationDataReader) to `folder` as
    .npz files of at most SPOOL_CHUNK feeds stacked on a new sample axis (a new file whenever the
    names, dtypes or shapes change), reading it once; returns the folder. Each file's mtime is
    derived from its contents, so calibration caches keyed by the data still match across runs."""
    import hashlib
    from collections.abc import Mapping

    import numpy as np

    from graphopt.quant.calibration import CalibrationError

    if isinstance(source, Mapping):
        raise CalibrationError(f"{what} data must be a path or an iterable of feeds (dicts), not one dict")
    feeds = iter(source.get_next, None) if callable(getattr(source, "get_next", None)) else iter(source)
    os.makedirs(folder)
    chunk: list[dict] = []
    signature = None
    files = seen = 0

    def flush() -> None:
        nonlocal files
        path = os.path.join(folder, f"feeds-{seen - len(chunk):06d}-{seen - 1:06d}.npz")  # named in errors
        stacked = {k: np.stack([f[k] for f in chunk]) for k in chunk[0]}
        np.savez(path, **stacked)
        digest = hashlib.sha256()
        for k in sorted(stacked):
            digest.update(f"{k}:{stacked[k].dtype}:{stacked[k].shape}".encode())
            digest.update(np.ascontiguousarray(stacked[k]).tobytes())
        stamp = int(digest.hexdigest()[:12], 16)
        os.utime(path, ns=(stamp, stamp))
        files += 1
        chunk.clear()

    for i, feed in enumerate(feeds):
        if not isinstance(feed, Mapping):
            raise CalibrationError(f"{what} feed {i} is a {type(feed).__name__}, not a dict of input name -> array")
        arrays = {str(k): np.asarray(v) for k, v in feed.items()}
        del feed
        sig = {k: (a.dtype.str, a.shape) for k, a in arrays.items()}
        if chunk and (sig != signature or len(chunk) >= SPOOL_CHUNK):
            flush()
        chunk.append(arrays)
        seen += 1
        signature = sig
        del arrays
    if chunk:
        flush()
    if not files:
        raise CalibrationError(f"the {what} data is empty")
    return folder


def _optimize(model, passes, *, output, input_shapes, validate, strict, force, debug, external_data,
              keep_initializer_inputs, tolerance, draws, seed, explain, registry, calib: CalibrationSettings,
              thresholds, validation_data) -> Result:
    start = time.perf_counter()
    registry = registry or default_registry()
    steps = parse_pipeline(passes, registry)  # pipeline errors before any work
    lossy = _lossy_passes(steps)
    warnings = []
    if calib.data is not None and not (validate and validation_data is None) and not _calibrating(steps):
        warnings.append("the calibration data is not used: no pass calibrates or measures on it (int8, fp16/bf16, "
                        "a prune max_drop budget) and validation " +
                        ("has its own data" if validate else "is off"))
    needing = [p.name for s in steps for p in s.flatten() if getattr(p, "needs_calibration", False)]
    if needing and calib.data is None:
        from graphopt.quant.equalize import calibration_required

        raise CalibrationRequired(CALIBRATION_REQUIRED if "quantize-int8" in needing else calibration_required(needing[0]))
    # the default accuracy floor holds for quantized results; pruning and fp16 keep what the user set
    floor = (thresholds or LossyThresholds()) if "quantize-int8" in lossy else \
        (thresholds or LossyThresholds()).without_default()
    input_shapes = dict(input_shapes or {})
    protected: tuple[str, ...] = ()
    if not isinstance(model, onnx.ModelProto):
        model = os.fspath(model)
        protected = (model,)
    tx = OutputTransaction(output, force=force, protected=protected) if output else None

    def load() -> Model:
        m = frontend.load(model, keep_initializer_inputs=keep_initializer_inputs)
        pin_input_shapes(m, input_shapes)
        return m

    ir = load()
    if tx:
        tx.protect(ir.source_data_files)
    nodes_before = ir.graph.count_nodes()
    # Every run of the pipeline (the first, bisection prefixes, reruns without a culprit) starts
    # from the input as loaded. With validation on, the reference and its inputs are made from
    # `ir` while the first run goes on, so every run takes a copy (tensor data is shared, not
    # copied); without it the first run takes `ir` itself, and the rare rerun (bisecting a checker
    # failure) loads the input again.
    original = ir.clone() if steps and validate else None
    unused = [ir] if steps and not validate else []

    def fresh() -> Model:
        if original is not None:
            return original.clone()
        return unused.pop() if unused else load()

    def run(disabled: set, limit: Optional[int] = None) -> tuple[Model, PassManager, PassContext]:
        """The pipeline on a copy of the input, the culprits so far disabled; with `limit`, only
        its first `limit` pass invocations (quietly: a bisection step). Every run, the first and
        the bisection's, goes through the pass manager with the same settings and context."""
        m = fresh() if steps else ir
        pm = PassManager(steps, strict=strict, verify=debug, disabled=disabled)
        ctx = PassContext(m, input_shapes, debug=debug, verify=debug, explain=set(explain or ()),
                          calibration=calib, accuracy_floor=floor)
        pm.execute(m, ctx, limit=limit, quiet=limit is not None)
        return m, pm, ctx

    rolled_back: list[str] = []
    disabled: set[tuple[Optional[int], str]] = set()  # (pipeline step, pass name) rolled back
    with (tx if tx else _ScratchDir()) as dest, ThreadPoolExecutor(1) as background:
        validator = None
        if validate:
            ir.release_mapped_pages()
            reference = _reference(model, ir, dest)

            def make_validator() -> Validator:
                if lossy:  # accuracy on the samples the passes held out of calibration, if any
                    held = _validation_samples(validation_data, ir) if validation_data is not None \
                        else _held_out(calib, ir)
                    return Validator(reference, ir, pinned=input_shapes, draws=draws, seed=seed,
                                     lossy=floor, samples=held, batch_size=calib.batch_size)
                data = validation_data if validation_data is not None else calib.data
                samples = _validation_samples(data, ir) if data is not None else None
                return Validator(reference, ir, pinned=input_shapes, tol=tolerance, draws=draws, seed=seed,
                                 samples=samples, batch_size=calib.batch_size, scratch=dest.staging_dir())

            # The reference runs on the second core while the passes run, unless the model is so
            # large that two copies of it (onnxruntime's and ours) should not be alive at once,
            # or the pipeline is lossy: its passes calibrate and measure on every core, and a
            # reference run beside them slows them more than it saves.
            if steps and not lossy and backend.constant_bytes(ir) <= OVERLAP_MAX_BYTES:
                pending = background.submit(make_validator)
            else:
                pending = None
        result_model, pm, ctx = run(disabled)
        status = "skipped by request"
        notes: list[str] = []
        if validate:
            try:
                validator = pending.result() if pending else make_validator()
                status = "validated"
                notes.extend(validator.misdeclared)
            except InputsNotRunnable as e:
                why = (f"onnxruntime cannot load the input model ({e})" if "cannot load" in str(e) else
                       f"the input model does not run on generated inputs ({e}); pass --validate-data "
                       f"with inputs it runs on")
                if strict:
                    raise InputsNotRunnable(f"not validated: {why}") from None
                status = f"not validated: {why}"
                meaning.warning("NOT VALIDATED: %s", why)
        input_problem: list = []  # the checker's finding on the input model, once computed

        input_findings: list[frozenset] = []

        def known_finding(error: InvalidModelError) -> bool:
            """Whether the input model already fails the checker the same way (not the output's
            fault): the same first finding, and no finding the input does not have (the checker
            names one, strict shape inference lists every failing node)."""
            if not input_problem:
                try:
                    as_loaded = ir if original is not None or not steps else load()  # the first run took `ir`
                    backend.emit(as_loaded, dest.staging_dir(), "input.onnx", external_data=external_data)
                    input_problem.append(None)
                except InvalidModelError as e:
                    input_problem.append(str(e))
                    input_findings.append(e.findings)
            return input_problem[0] == str(error) and error.findings <= input_findings[0]

        def build(m: Model):
            """Emit and check `m`, then validate it: (emitted, report, problem or None)."""
            try:
                emitted = backend.emit(m, dest.staging_dir(), dest.basename, external_data=external_data)
            except InvalidModelError as e:
                if not known_finding(e):
                    added = sorted(e.findings - input_findings[0]) if input_findings and \
                        input_problem[0] == str(e) else []
                    return None, None, (f"emitted model fails the ONNX checker: {added[0]} (beside the finding the "
                                        f"input model has)" if added else str(e))
                note = f"{CHECKER_NOTE}: {str(e).split(': ', 1)[-1]}"
                if note not in notes:  # the CLI prints the notes with the summary
                    notes.append(note)
                emitted = backend.emit(m, dest.staging_dir(), dest.basename, external_data=external_data, check=False)
            if validator is None:
                return emitted, None, None
            m.release_mapped_pages()
            try:
                report = validator.check(emitted.ort_view())
            except GraphoptError as e:
                if not lossy:  # the input ran on these inputs: the passes broke it, find which
                    return None, None, f"validation failed: {e}"
                if "NOT_IMPLEMENTED" not in str(e):
                    raise
                # e.g. bfloat16 on CPU: the model is for a target onnxruntime here cannot emulate
                meaning.warning("validation skipped: onnxruntime's CPU kernels cannot run the result (%s); check it on "
                            "the target runtime", str(e).split(": ", 2)[-1][:160])
                skipped.append("skipped: onnxruntime's CPU kernels cannot run the result")
                return emitted, None, None
            if lossy:
                _lint_quantized(m, report)
                if not report.ok:  # a lossy result is judged, never bisected or rolled back
                    raise ValidationError(f"{', '.join(lossy)}: {report.summary()}")
            return emitted, report, None if report.ok else f"validation failed: {report.summary()}"

        skipped: list[str] = []
        emitted, report, problem = build(result_model)
        while problem:
            found = _bisect(fresh, pm, build, lambda upto: run(disabled, upto)[0]) if steps else None
            if found is None:
                raise (ValidationError if report else InvalidModelError)(f"{problem} (before any pass ran)")
            step, culprit = found
            msg = f"{problem}; first broken by pass {culprit}"
            if strict or len(rolled_back) >= MAX_ROLLBACKS or culprit in lossy:  # lossy: asked for, not optional
                raise (ValidationError if report else InvalidModelError)(msg)
            meaning.warning("%s; rolling it back", msg)
            rolled_back.append(culprit)
            disabled.add((step, culprit))  # that step's invocations only: the same pass elsewhere stays
            result_model, pm, ctx = run(disabled)
            emitted, report, problem = build(result_model)
        if tx:
            tx.commit(emitted)
    if result_model.corrected_declarations:
        name, declared, computed = result_model.corrected_declarations[0]
        more = len(result_model.corrected_declarations) - 1
        notes.append(f"the input declares shapes its nodes contradict, for {len(result_model.corrected_declarations)} "
                     f"intermediate value(s); graphopt used what the nodes compute instead (e.g. '{name}': declared "
                     f"{format_shape(declared)}, computed {format_shape(computed)}" + (f", and {more} more)" if more else ")"))
    if skipped and status == "validated":
        status = skipped[-1]
    return Result(result_model, pm.records(), report, rolled_back, tx.target if tx else None, nodes_before,
                  result_model.graph.count_nodes(), time.perf_counter() - start, list(ctx.near_misses),
                  dict(ctx.reports), warnings + list(pm.warnings), status, notes,
                  input_problem[0] if input_problem and any(n.startswith(CHECKER_NOTE) for n in notes) else None)


def _calibrating(steps) -> bool:
    """Whether some pass of the pipeline reads calibration data: int8 and fp16/bf16 calibrate or
    measure on it, the pruning passes with a max_drop budget."""
    for p in (p for s in steps for p in s.flatten()):
        if p.name in CALIBRATING_PASSES or getattr(p, "needs_calibration", False) or getattr(getattr(p, "options", None), "max_drop", -1) >= 0:
            return True
    return False


CALIBRATING_PASSES = {"quantize-int8", "fp16", "bf16"}


VALIDATION_MAX_SAMPLES = 256  # of the user's data, a validation compares at most this many


def _validation_samples(data, model: Model):
    """The user's validation (or calibration) data as samples, checked against the model's inputs."""
    from graphopt.quant.calibration import load_samples

    if isinstance(data, str) and data == RANDOM:
        return None  # --calib random: validate on synthesized inputs
    samples = load_samples(data, model)
    return samples.subset(0, VALIDATION_MAX_SAMPLES)


def _lossy_passes(steps) -> list[str]:
    """Names of the lossy passes in a pipeline, in order, once each."""
    return list(dict.fromkeys(p.name for s in steps for p in s.flatten() if not p.lossless))


def _held_out(calib: CalibrationSettings, model: Model):
    """The samples the lossy passes held out of calibration (same split), or None without data."""
    from graphopt.quant.calibration import split_samples

    return split_samples(calib, model)[1]


def _lint_quantized(model: Model, report) -> None:
    """qdq-lint the result of a quantizing pipeline; its errors fail validation."""
    from graphopt.lint.qdq_lint import has_qdq, qdq_lint

    if not has_qdq(model):
        return
    report.lint = qdq_lint(model)
    report.problems += [f"qdq-lint: {f}" for f in report.lint if f.severity == "error"]


def _reference(source, original: Model, dest):
    """What onnxruntime runs as the reference: the input file's weights referenced in place."""
    if isinstance(source, str):
        return backend.ort_view(original)
    return backend.emit(original, dest.staging_dir(), "reference.onnx", check=False).ort_view()


def _bisect(fresh: Callable[[], Model], pm: PassManager, build, prefix) -> Optional[tuple[Optional[int], str]]:
    """(pipeline step, pass name) of the first pass invocation after which the model stops
    checking or validating.
    `fresh()` is the input as loaded; `prefix(n)` the model after the first n invocations of
    `pm`'s run, re-run the same way."""
    records = pm.records()
    lo, hi = 0, len(records)  # the prefix of length lo is good; the prefix of length hi is not
    if hi == 0 or build(fresh())[2] is not None:
        return None  # it fails without any pass
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            ok = build(prefix(mid))[2] is None
        except GraphoptError:
            ok = False
        lo, hi = (mid, hi) if ok else (lo, mid)
    return records[hi - 1].step, records[hi - 1].name


class _ScratchDir:
    """Stands in for an OutputTransaction when nothing is written (API use without output)."""

    basename = "model.onnx"

    def __enter__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="graphopt-")
        return self

    def __exit__(self, *exc):
        self._tmp.cleanup()

    def staging_dir(self) -> str:
        return tempfile.mkdtemp(dir=self._tmp.name)
