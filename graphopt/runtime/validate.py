"""Validation (docs/ARCHITECTURE.md): onnxruntime, graph optimizations off, runs the input and the
output on the same inputs (the user's data, or seeded inputs synthesized from how the graph uses
each input, see runtime/inputs.py); every output is compared.

Sessions run one at a time (the reference's outputs are kept, its session is dropped), so
validating a large model needs one model's memory, not two; the candidate is compared draw by
draw, so its outputs are never all held at once. Given a scratch folder, a reference output of
SPILL_MIN_BYTES or more waits there, not in memory, and is read back a chunk at a time while it
is compared: the candidate's run does not stack on the reference's outputs.

Draws: a number the user sets is honoured; by default (`draws=None`) there are up to
MAX_DRAWS, and a further draw is made only while the reference's runs so far took under
DRAW_SECONDS and its kept outputs under DRAW_BYTES. A model that takes half a second a run, or
has 60 MB of outputs, is validated on one draw (most of what validation costs is these runs);
a small one on three. The report says how many.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from graphopt.analysis.shapes import inferred_types, shapes_contradict
from graphopt.errors import GraphoptError
from graphopt.ir import Model, format_shape
from graphopt.ir.dtypes import DataType
from graphopt.onnx_io.emit import OrtModel  # noqa: F401 (re-exported)
from graphopt.runtime.inputs import DEFAULT_BATCH, DIM_LADDER, GROWN_BATCH, Synthesizer, unnamed_batch_candidates
from graphopt.runtime.metrics import AccuracyReport
from graphopt.runtime.metrics import compare as accuracy_compare
from graphopt.runtime.session import RANDOM_OPS, Session, run_model

MAX_DRAWS = 3
DRAW_SECONDS = 0.3  # another draw only while the reference's runs took less than this in all
DRAW_BYTES = 32 << 20  # ... and its kept outputs are smaller than this
SPILL_MIN_BYTES = 1 << 20  # a reference output this large waits in the scratch folder, not in memory


class InputsNotRunnable(GraphoptError):
    """The input model does not run (or does not load) in onnxruntime on any generated inputs:
    the result cannot be validated without the user's data."""

    exit_code = 3


DEFAULT_RTOL = 1e-5
# One unit in the last place of these types, relative: the default rtol of an output the model
# computes through values of the type. A rewrite exact in arithmetic can still move a rounding
# there by a unit (onnxruntime's Resize computes its coefficients one way for constant sizes,
# another for computed ones), and a float16 network carries the step on to its outputs.
HALF_RTOL = {DataType.FLOAT16: 2.0 ** -10, DataType.BFLOAT16: 2.0 ** -7}


@dataclass
class Tolerance:
    """|new - ref| <= atol + rtol * max|ref| per output (a scale-aware relative bound). Without
    an explicit rtol: DEFAULT_RTOL, or HALF_RTOL for an output computed in float16 or bfloat16."""

    rtol: Optional[float] = None
    atol: float = 1e-6

    def at(self, half: Optional[int]) -> "Tolerance":
        """The tolerance of an output computed through values of type `half` (None: none)."""
        if self.rtol is not None:
            return self
        return Tolerance(HALF_RTOL.get(half, DEFAULT_RTOL), self.atol)


@dataclass
class OutputDiff:
    name: str
    max_abs: float
    max_rel: float
    bitwise_equal: bool
    ok: bool
    problem: str = ""
    half: str = ""  # "float16" or "bfloat16": compared at that type's precision (Tolerance.at)


@dataclass
class ValidationReport:
    ok: bool
    draws: int
    outputs: list[OutputDiff] = field(default_factory=list)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)

    @property
    def bitwise_equal(self) -> bool:
        return all(o.bitwise_equal for o in self.outputs)

    def summary(self) -> str:
        bad = [o for o in self.outputs if not o.ok]
        if bad:
            o = bad[0]
            return (f"output {o.name!r} differs: {o.problem or f'max abs error {o.max_abs:.3g}, max rel error {o.max_rel:.3g}'}")
        if self.bitwise_equal:
            return f"outputs bitwise equal ({_draws(self.draws)})"
        half = sorted({o.half for o in self.outputs if o.half and not o.bitwise_equal})
        at = f", at {' and '.join(half)} precision: the model computes in it" if half else ""
        return (f"outputs equal within tolerance (max abs error {self.max_abs:.3g}, max rel error {self.max_rel:.3g}"
                f"{at}, {_draws(self.draws)})")

    def to_dict(self) -> dict:
        return {"ok": self.ok, "draws": self.draws, "max_abs": self.max_abs, "max_rel": self.max_rel,
                "bitwise_equal": self.bitwise_equal, "outputs": [asdict(o) for o in self.outputs]}


# ------------------------------------------------------------------------------ comparing
def compare(ref: list[dict[str, np.ndarray]], new: list[dict[str, np.ndarray]],
            tol: Tolerance = Tolerance(), half: Optional[dict[str, int]] = None) -> ValidationReport:
    """`half`: output name -> the half-precision type it is computed through (half_outputs)."""
    report = ValidationReport(ok=True, draws=len(ref))
    for name in ref[0]:
        diff = OutputDiff(name, 0.0, 0.0, True, True)
        kind = (half or {}).get(name)
        out_tol = tol.at(kind)
        if kind is not None and tol.rtol is None:
            diff.half = DataType(kind).name.lower()
        for r_all, n_all in zip(ref, new):
            if name not in n_all:
                diff.ok, diff.bitwise_equal, diff.problem = False, False, "missing from the optimized model"
                break
            _compare_value(diff, r_all[name], n_all[name], out_tol)
            if not diff.ok and diff.problem:
                break
        report.outputs.append(diff)
        report.ok &= diff.ok
    return report


# ops whose output's values do not depend on their input's values, only on its shape or type
_SHAPE_ONLY = frozenset({"Shape", "Size", "CastLike", "ConstantOfShape", "EyeLike"})


def half_outputs(model: Model) -> dict[str, int]:
    """Graph output name -> the least precise of float16 and bfloat16 that it is computed in (a
    Cast to it, or a non-Cast node whose output has it, on a path to the output, inside subgraphs
    and through their captures too). Weights or inputs stored in half precision and widened by a
    Cast before any arithmetic do not count: both models read the same bytes. Types come from
    onnx's inference on a light copy of the model (the model itself is not touched), run only
    when a half type appears at all."""
    def mentions_half(g) -> bool:
        return any(v.dtype in HALF_RTOL for v in g.values) or any(
            n.attr("to") in HALF_RTOL or n.attr("dtype") in HALF_RTOL
            or getattr(n.attr("value"), "dtype", None) in HALF_RTOL for n in g.nodes)

    if not any(mentions_half(g) for g in model.graph.walk()):
        return {}
    types = {name: t.tensor_type.elem_type for name, t in inferred_types(model).items()
             if t.WhichOneof("value") == "tensor_type"}

    def computed_half(node) -> set:
        """The half types `node` computes in: a Cast's target, or any non-Cast output's type."""
        if node.op_type == "Cast":
            return {node.attr("to")} & HALF_RTOL.keys()
        if node.op_type == "Constant":
            return set()  # stored, not computed
        return {types.get(v.name, v.dtype) for v in node.outputs if v is not None} & HALF_RTOL.keys()

    out: dict[str, int] = {}
    for o in model.graph.outputs:
        kinds: set = set()
        seen: set = set()
        stack = [o]
        while stack:
            v = stack.pop()
            if v.id in seen:
                continue
            seen.add(v.id)
            if v.is_capture:
                stack.append(v.graph.capture_source(v))
                continue
            node = v.producer
            if node is None:
                continue
            kinds |= computed_half(node)
            if node.op_type in _SHAPE_ONLY:
                continue
            stack.extend(x for x in node.inputs if x is not None)
            for _, _, sub in node.subgraphs():
                for g in sub.walk():
                    for n in g.nodes:
                        kinds |= computed_half(n)
                    stack.extend(g.outputs)
        if kinds:
            out[o.name] = max(kinds, key=HALF_RTOL.__getitem__)
    return out


def misdeclared_outputs(model: Model, outputs: dict) -> list[str]:
    """A line for each graph output whose declared rank or fixed dims the input model's own
    output contradicts (ddddocr declares [1, seqlen] and gives [20, 1, 8210]; onnxruntime warns of
    it on every run). The declaration is the input's interface, so it is kept, and said."""
    lines = []
    for v in model.graph.outputs:
        got = getattr(outputs.get(v.name), "shape", None)
        if v.shape is None or got is None or v.type_proto is not None:
            continue
        if shapes_contradict(v.shape, tuple(got)):
            lines.append(f"output {v.name!r} is declared {format_shape(v.shape)} but the input model gives {list(got)} on the "
                         f"validation inputs; the declaration is kept as the input has it")
    return lines


def _draws(n: int) -> str:
    return "1 draw" if n == 1 else f"{n} draws"


def _merge(a: ValidationReport, b: ValidationReport) -> ValidationReport:
    """Two reports of the same outputs on different draws, as one."""
    out = ValidationReport(ok=a.ok and b.ok, draws=a.draws + b.draws)
    for x, y in zip(a.outputs, b.outputs):
        out.outputs.append(OutputDiff(x.name, max(x.max_abs, y.max_abs), max(x.max_rel, y.max_rel),
                                      x.bitwise_equal and y.bitwise_equal, x.ok and y.ok, x.problem or y.problem,
                                      x.half or y.half))
    return out


class SpilledOutput:
    """A reference output written to a scratch file, read back a chunk at a time."""

    def __init__(self, array: np.ndarray, path: str):
        self.path, self.dtype, self.shape = path, array.dtype, array.shape
        array.tofile(path)  # C order, no header

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def chunk(self, start: int, count: int) -> np.ndarray:
        """Values [start, start + count) of the flattened array."""
        return np.fromfile(self.path, dtype=self.dtype, count=min(count, self.size - start),
                           offset=start * self.dtype.itemsize)


def spill(outputs: dict, folder: str, stem: str) -> dict:
    """`outputs` with each plain tensor of SPILL_MIN_BYTES or more written into `folder`."""
    kept = {}
    for i, (name, value) in enumerate(outputs.items()):
        if isinstance(value, np.ndarray) and value.dtype.kind in "biufc" and value.nbytes >= SPILL_MIN_BYTES:
            value = SpilledOutput(value, os.path.join(folder, f"{stem}-{i}.bin"))
        kept[name] = value
    return kept


def _compare_value(diff: OutputDiff, r, n, tol: Tolerance) -> None:
    """Tensors element-wise; sequences (lists) and maps (dicts) item by item; an empty optional
    (None) equals only None."""
    if r is None or n is None:
        if (r is None) != (n is None):
            diff.ok, diff.bitwise_equal, diff.problem = False, False, "an optional is empty in one model only"
        return
    if isinstance(r, (list, tuple)) or isinstance(n, (list, tuple)):
        if not isinstance(r, (list, tuple)) or not isinstance(n, (list, tuple)) or len(r) != len(n):
            diff.ok, diff.bitwise_equal, diff.problem = False, False, "sequences of different lengths"
            return
        for a, b in zip(r, n):
            _compare_value(diff, a, b, tol)
        return
    if isinstance(r, dict) or isinstance(n, dict):
        if not isinstance(r, dict) or not isinstance(n, dict) or sorted(r) != sorted(n):
            diff.ok, diff.bitwise_equal, diff.problem = False, False, "maps with different keys"
            return
        for k in r:
            _compare_value(diff, r[k], n[k], tol)
        return
    _compare_one(diff, r if isinstance(r, SpilledOutput) else np.asarray(r), np.asarray(n), tol)


# values compared at a time: no full-size copies of a large output, and temporaries (512 KB in
# float64) below the console script's mmap threshold, so the heap reuses them rather than each
# being mapped and faulted in afresh (cli/main.py)
COMPARE_CHUNK = 1 << 16


def _compare_one(diff: OutputDiff, r: "np.ndarray | SpilledOutput", n: np.ndarray, tol: Tolerance) -> None:
    if r.shape != n.shape or r.dtype != n.dtype:
        diff.ok, diff.bitwise_equal = False, False
        diff.problem = f"shape/type {n.dtype}{list(n.shape)} instead of {r.dtype}{list(r.shape)}"
        return
    n = n.reshape(-1)
    if isinstance(r, SpilledOutput):
        spilled = r

        def ref(s: int) -> np.ndarray:
            return spilled.chunk(s, COMPARE_CHUNK)
    else:
        flat = r.reshape(-1)

        def ref(s: int) -> np.ndarray:
            return flat[s:s + COMPARE_CHUNK]
    chunks = range(0, n.size, COMPARE_CHUNK)
    if r.dtype.kind not in "fc":
        differ = sum(int(np.count_nonzero(ref(s) != n[s:s + COMPARE_CHUNK])) for s in chunks)
        if differ:
            diff.ok = diff.bitwise_equal = False
            diff.max_abs = max(diff.max_abs, float(differ))
            diff.problem = f"{differ} of {n.size} values differ"
        return
    if all(ref(s).tobytes() == n[s:s + COMPARE_CHUNK].tobytes() for s in chunks):
        return
    # chunk by chunk, in float64: a 60 MB output costs a few MB more, not two float64 copies
    scale = max_abs = 0.0
    for s in chunks:
        rf, nf = ref(s).astype(np.float64), n[s:s + COMPARE_CHUNK].astype(np.float64)
        nan_r = np.isnan(rf)
        if not np.array_equal(nan_r, np.isnan(nf)):
            diff.ok, diff.bitwise_equal, diff.problem = False, False, "NaN in different places"
            return
        rf, nf = rf[~nan_r], nf[~nan_r]
        with np.errstate(invalid="ignore"):
            err = np.nan_to_num(np.abs(rf - nf), nan=np.inf)  # inf - inf at the same place is equal
        err[np.isinf(rf) & (rf == nf)] = 0.0
        scale = max(scale, float(np.max(np.abs(rf[np.isfinite(rf)]), initial=0.0)))
        max_abs = max(max_abs, float(err.max(initial=0.0)))
    diff.bitwise_equal = False
    diff.max_abs = max(diff.max_abs, max_abs)
    diff.max_rel = max(diff.max_rel, max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf))
    if max_abs > tol.atol + tol.rtol * scale:
        diff.ok = False


# The floor every lossy run keeps unless the user sets another (docs/ARCHITECTURE.md, Validation;
# README, INT8): tuned on the trained golden models and the OCR recognizer (benchmarks/int8/).
# On the OCR recognizer an INT8 model that decodes 98.5% of lines as FP32 does has raw cosine
# 0.988 and channel-normalized cosine 0.894 (minmax, 95.5%: 0.979 and 0.583); a synthetic YOLO head
# with every class score wrong and exact boxes has raw cosine 0.99999 and normalized < 0.6.
DEFAULT_FLOOR = {"min_cosine": 0.98, "min_norm_cosine": 0.8, "min_snr_db": None, "min_top1": 95.0}


@dataclass
class LossyThresholds:
    """Accuracy a lossy pipeline (int8, prune, fp16) must keep against the input on held-out
    samples. None = the default floor (DEFAULT_FLOOR); a value <= 0 (or, for SNR, -inf) turns a
    check off. `min_cosine` holds for every output's raw cosine, `min_norm_cosine` for its
    channel-normalized cosine (runtime/metrics.py), so large-magnitude channels cannot hide the
    others; `min_top1` for top-1 agreement along every class axis."""

    min_cosine: Optional[float] = None
    min_norm_cosine: Optional[float] = None
    min_snr_db: Optional[float] = None
    min_top1: Optional[float] = None  # top-1 agreement, percent

    def without_default(self) -> "LossyThresholds":
        """Only what the user set: unset thresholds are off (lossy runs the default floor is not
        tuned for: pruning, fp16)."""
        return LossyThresholds(**{k: (0.0 if k != "min_snr_db" else -np.inf) if getattr(self, k) is None
                                  else getattr(self, k) for k in DEFAULT_FLOOR})

    def effective(self) -> "LossyThresholds":
        """The floor in force: unset thresholds take the default, switched-off ones are None."""
        def pick(name):
            v = getattr(self, name)
            v = DEFAULT_FLOOR[name] if v is None else v
            return None if v is None or (name != "min_snr_db" and v <= 0) or v == -np.inf else v
        return LossyThresholds(**{k: pick(k) for k in DEFAULT_FLOOR})


@dataclass
class LossyReport:
    """Validation of a lossy pipeline: accuracy against the input model, the thresholds it
    must meet, and (for quantized output) qdq-lint findings."""

    accuracy: AccuracyReport
    thresholds: LossyThresholds
    problems: list[str] = field(default_factory=list)
    lint: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return self.problems[0] if self.problems else f"lossy: {self.accuracy.summary()}"

    def to_dict(self) -> dict:
        return {"ok": self.ok, "lossy": True, "accuracy": self.accuracy.to_dict(),
                "thresholds": asdict(self.thresholds), "problems": self.problems,
                "qdq_lint": [f.to_dict() for f in self.lint]}


def check_thresholds(acc: AccuracyReport, t: LossyThresholds) -> list[str]:
    """What in `acc` is below the floor `t` (its effective values), worst output named."""
    t = t.effective()
    problems = []
    if t.min_cosine is not None:
        worst = min(acc.outputs, key=lambda o: o.cosine, default=None)
        if worst is not None and worst.cosine < t.min_cosine:
            problems.append(f"cosine similarity {worst.cosine:.5f} of output {worst.name!r} is below min_cosine "
                            f"{t.min_cosine}")
    if t.min_norm_cosine is not None:
        normed = [o for o in acc.outputs if o.norm_cosine is not None]
        worst = min(normed, key=lambda o: o.norm_cosine, default=None)
        if worst is not None and worst.norm_cosine < t.min_norm_cosine:
            problems.append(f"channel-normalized cosine {worst.norm_cosine:.5f} of output {worst.name!r} (axis "
                            f"{worst.channel_axis}) is below min_norm_cosine {t.min_norm_cosine}")
    if t.min_snr_db is not None and acc.snr_db < t.min_snr_db:
        problems.append(f"SNR {acc.snr_db:.2f} dB is below min_snr_db {t.min_snr_db}")
    if t.min_top1 is not None and acc.top1_agreement is not None and acc.top1_agreement < t.min_top1:
        problems.append(f"top-1 agreement {acc.top1_agreement:.2f}% is below min_top1 {t.min_top1}")
    return problems


class SynthesizedFeeds:
    """Generated draws, made again whenever they are read rather than kept: the same values each
    time (seeded per draw), and an image model's inputs are not held through both runs."""

    def __init__(self, synth: Synthesizer, n: int, seed: int, first: Optional[dict] = None):
        self.synth, self.n, self.seed = synth, n, seed
        self._first = first  # draw 0 when it was already made: handed over once, then made again

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for draw in range(self.n):
            if draw == 0 and self._first is not None:
                feed, self._first = self._first, None
                yield feed
            else:
                yield self.synth.feed(draw, self.seed)

    def __getitem__(self, part: slice) -> "SynthesizedFeeds":
        start, stop, step = part.indices(self.n)
        if start or step != 1:
            raise ValueError("only a prefix of the draws can be taken")
        return SynthesizedFeeds(self.synth, stop, self.seed)


class Validator:
    """Holds the reference outputs of the input model; checks candidate models against them.
    Lossless pipelines are compared within a tolerance on seeded random draws; lossy ones by
    accuracy metrics, on held-out calibration samples when there are any."""

    def __init__(self, reference: "OrtModel | str", model: Model, *, pinned=None, draws: Optional[int] = None,
                 seed: int = 0, tol: Tolerance = Tolerance(), lossy: Optional[LossyThresholds] = None,
                 samples=None, batch_size: int = 32, scratch: Optional[str] = None):
        self.tol = tol
        self.half = half_outputs(model)
        self.lossy = lossy
        # large reference outputs wait in `scratch` (lossless checks only: accuracy metrics read whole arrays)
        self.scratch = scratch if lossy is None else None
        self.has_random_ops = any(n.op_type in RANDOM_OPS for g in model.all_graphs() for n in g.nodes)
        self.labels: list = []
        if samples is not None:
            self.feeds, self.counts = [], []
            for feed, n, labels in samples.batches(batch_size):
                self.labels.append(labels)
                self.feeds.append(feed)
                self.counts.append(n)
            with Session(reference, has_random_ops=self.has_random_ops) as sess:
                self.reference = [self._keep(sess.run(feed), i) for i, feed in enumerate(self.feeds)]
        else:
            self.feeds, self.reference = self._synthesize(reference, model, pinned, draws, seed)
            self.counts = [1] * len(self.reference)
        self.misdeclared = misdeclared_outputs(model, self.reference[0]) if self.reference else []

    def _synthesize(self, reference, model: Model, pinned, draws: Optional[int], seed: int):
        """Generated feeds the input model runs on, and its outputs on them: symbolic dims grow
        along DIM_LADDER until it runs, and last symbolic axis-0 dims too (GROWN_BATCH: a graph
        network's node count sits where a batch usually does), then each state-like input's
        unnamed dims past axis 0 at the batch size (an RNN state's batch, which no name ties to
        the others'). A size that changes no input shape is not tried again. InputsNotRunnable
        if it never runs."""
        problem, tried = None, []
        tries = [(d, DEFAULT_BATCH, frozenset()) for d in DIM_LADDER] + [(DIM_LADDER[0], GROWN_BATCH, frozenset())]
        # last, one state-like input at a time with its unnamed dims past axis 0 at the batch size
        tries += [(d, DEFAULT_BATCH, frozenset([name])) for name in unnamed_batch_candidates(model) for d in DIM_LADDER]
        for dim, batch, batch_like in tries:
            synth = Synthesizer(model, pinned, dim, batch, batch_like)
            if synth.shapes in tried:
                continue
            tried.append(synth.shapes)
            # the first draw is made here: inputs that cannot be made are an error, not a model that fails to run
            feeds = SynthesizedFeeds(synth, draws or MAX_DRAWS, seed, first=synth.feed(0, seed))
            try:
                return self._run_reference(reference, feeds, fixed=draws is not None)
            except GraphoptError as e:
                problem = problem or str(e)
                if "cannot load" in str(e):
                    break  # no size changes that
        raise InputsNotRunnable(problem)

    def _run_reference(self, reference, feeds: list, fixed: bool):
        """(feeds used, the reference's outputs on them): every feed when the number of draws
        was set, else as many as DRAW_SECONDS and DRAW_BYTES allow (at least one)."""
        outs, seconds, nbytes = [], 0.0, 0
        with Session(reference, has_random_ops=self.has_random_ops) as sess:
            for feed in feeds:
                start = time.perf_counter()
                out = sess.run(feed)
                seconds += time.perf_counter() - start
                nbytes += sum(v.nbytes for v in out.values() if isinstance(v, np.ndarray))
                outs.append(self._keep(out, len(outs)))
                if not fixed and (seconds >= DRAW_SECONDS or nbytes >= DRAW_BYTES):
                    break
        return feeds[:len(outs)], outs

    def _keep(self, outputs: dict, draw: int) -> dict:
        return spill(outputs, self.scratch, f"reference-{draw}") if self.scratch else outputs

    def check(self, candidate: "OrtModel | str"):
        if self.lossy is not None:
            out = run_model(candidate, self.feeds, has_random_ops=self.has_random_ops)
            acc = accuracy_compare(self.reference, out, self.counts, self.labels or None)
            return LossyReport(acc, self.lossy, check_thresholds(acc, self.lossy))
        report = None
        with Session(candidate, has_random_ops=self.has_random_ops) as sess:
            for feed, ref in zip(self.feeds, self.reference):  # one draw's outputs alive at a time
                one = compare([ref], [sess.run(feed)], self.tol, self.half)
                report = one if report is None else _merge(report, one)
                if not report.ok:
                    break
        return report
