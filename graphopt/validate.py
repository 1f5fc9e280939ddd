"""Validation (DESIGN §4): onnxruntime, graph optimizations off, runs the input and the output
on the same seeded random inputs; every output is compared.

Sessions run one at a time (the reference's outputs are kept, its session is dropped), so
validating a large model needs one model's memory, not two.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
import onnx

from graphopt.errors import GraphoptError
from graphopt.ir import Model

DEFAULT_BATCH = 1
DEFAULT_DIM = 32
RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
              "Bernoulli", "Multinomial", "Dropout"}  # Dropout draws its mask in training mode


@dataclass
class Tolerance:
    """|new - ref| <= atol + rtol * max|ref| per output (a scale-aware relative bound)."""

    rtol: float = 1e-5
    atol: float = 1e-6


@dataclass
class OutputDiff:
    name: str
    max_abs: float
    max_rel: float
    bitwise_equal: bool
    ok: bool
    problem: str = ""


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
            return f"outputs bitwise equal ({self.draws} draws)"
        return f"outputs equal within tolerance (max abs error {self.max_abs:.3g}, max rel error {self.max_rel:.3g}, {self.draws} draws)"

    def to_dict(self) -> dict:
        return {"ok": self.ok, "draws": self.draws, "max_abs": self.max_abs, "max_rel": self.max_rel,
                "bitwise_equal": self.bitwise_equal, "outputs": [asdict(o) for o in self.outputs]}


# ------------------------------------------------------------------------------ inputs
def input_specs(model: Model, pinned: Mapping[str, Sequence[int]] | None = None) -> list[tuple[str, int, tuple]]:
    """(name, elem type, concrete shape) of each input the user must feed. A symbolic dim gets
    the same size everywhere it appears: axis 0 defaults to a batch of 1, others to 32."""
    pinned = pinned or {}
    symbols: dict[str, int] = {}
    for v in model.graph.inputs:
        if v.name in pinned and v.shape is not None:
            for d, p in zip(v.shape, pinned[v.name]):
                if isinstance(d, str):
                    symbols.setdefault(d, int(p))
    specs = []
    for v in model.graph.inputs:
        if v.const is not None:
            continue  # an overridable initializer keeps its default
        if v.dtype is None or v.type_proto is not None:
            raise GraphoptError(f"cannot make validation data for input {v.name!r}: it is not a typed tensor")
        if v.name in pinned:
            shape = tuple(int(d) for d in pinned[v.name])
        else:
            shape = tuple(_concrete(d, axis, symbols) for axis, d in enumerate(v.shape or ()))
        specs.append((v.name, v.dtype, shape))
    return specs


def _concrete(d, axis: int, symbols: dict[str, int]) -> int:
    if isinstance(d, int):
        return d
    default = DEFAULT_BATCH if axis == 0 else DEFAULT_DIM
    if d is None:
        return default
    return symbols.setdefault(d, default)


def random_feeds(specs, draws: int, seed: int) -> list[dict[str, np.ndarray]]:
    feeds = []
    for draw in range(draws):
        rng = np.random.default_rng([seed, draw])
        feed = {}
        for name, elem_type, shape in specs:
            dt = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
            if dt == np.bool_:
                arr = rng.random(shape) < 0.5
            elif np.issubdtype(dt, np.integer):
                # small non-negative ints: valid as indices, token ids or masks
                arr = rng.integers(0, 4, size=shape).astype(dt)
            elif np.issubdtype(dt, np.floating) or dt.kind == "V":
                arr = rng.standard_normal(shape).astype(np.float32).astype(dt)
            else:
                raise GraphoptError(f"cannot make validation data of type {dt} for input {name!r}")
            feed[name] = np.asarray(arr)  # scalars too: onnxruntime takes arrays only
        feeds.append(feed)
    return feeds


# ------------------------------------------------------------------------------ running
@dataclass
class OrtModel:
    """What onnxruntime loads: a file, or serialized bytes whose external data (the weights,
    referenced where they already lie) is resolved against `folder`."""

    path: Optional[str] = None
    data: Optional[bytes] = None
    folder: Optional[str] = None

    @property
    def label(self) -> str:
        return os.path.basename(self.path) if self.path else "model"

def seeded_random_ops(proto: onnx.ModelProto) -> bool:
    """Give every unseeded Random* op a seed derived from its output name, so the input and
    the output model draw the same numbers. Returns whether anything changed."""
    changed = False
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    seedable = RANDOM_OPS if opset >= 12 else RANDOM_OPS - {"Dropout"}

    def visit(graph: onnx.GraphProto) -> None:
        nonlocal changed
        for n in graph.node:
            if n.op_type in seedable and n.domain in ("", "ai.onnx") and not any(a.name == "seed" for a in n.attribute):
                seed = zlib.crc32(n.output[0].encode()) % 100000
                # Dropout's seed is an int; the Random* ops take a float
                n.attribute.append(onnx.helper.make_attribute("seed", seed if n.op_type == "Dropout" else float(seed)))
                changed = True
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    visit(a.g)
                for g in a.graphs:
                    visit(g)

    visit(proto.graph)
    return changed


def run_model(model: "OrtModel | str", feeds: list[dict[str, np.ndarray]], *, has_random_ops: bool = False) -> list[dict[str, np.ndarray]]:
    """Run one model on every feed in one onnxruntime session with optimizations off."""
    import onnxruntime as ort

    if isinstance(model, str):
        model = OrtModel(path=model)
    model_path = model.label

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    opts.enable_cpu_mem_arena = False  # validation runs a few batches: return memory promptly
    opts.enable_mem_pattern = False
    source: str | bytes = model.path if model.data is None else model.data
    folder = model.folder or (os.path.dirname(os.path.abspath(model.path)) if model.path else None)
    if has_random_ops:
        proto = onnx.load_model(model.path, load_external_data=False) if model.data is None else onnx.ModelProto.FromString(model.data)
        seeded_random_ops(proto)
        source = proto.SerializeToString()
    if isinstance(source, bytes) and folder:
        opts.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
    try:
        sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises several unrelated types
        raise GraphoptError(f"onnxruntime cannot load {model_path}: {_first_line(e)}") from None
    names = [o.name for o in sess.get_outputs()]
    results = []
    try:
        for feed in feeds:
            try:
                outs = sess.run(names, feed)
            except Exception as e:
                raise GraphoptError(f"onnxruntime failed to run {model_path}: {_first_line(e)}") from None
            results.append(dict(zip(names, outs)))
    finally:
        del sess
        release_freed_memory()
    return results


def release_freed_memory() -> None:
    """Hand memory freed by a finished session back to the OS (glibc keeps it otherwise), so the
    next session does not stack on top of the last one."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


# ------------------------------------------------------------------------------ comparing
def compare(ref: list[dict[str, np.ndarray]], new: list[dict[str, np.ndarray]],
            tol: Tolerance = Tolerance()) -> ValidationReport:
    report = ValidationReport(ok=True, draws=len(ref))
    for name in ref[0]:
        diff = OutputDiff(name, 0.0, 0.0, True, True)
        for r_all, n_all in zip(ref, new):
            if name not in n_all:
                diff.ok, diff.bitwise_equal, diff.problem = False, False, "missing from the optimized model"
                break
            _compare_one(diff, np.asarray(r_all[name]), np.asarray(n_all[name]), tol)
            if not diff.ok and diff.problem:
                break
        report.outputs.append(diff)
        report.ok &= diff.ok
    return report


def _compare_one(diff: OutputDiff, r: np.ndarray, n: np.ndarray, tol: Tolerance) -> None:
    if r.shape != n.shape or r.dtype != n.dtype:
        diff.ok, diff.bitwise_equal = False, False
        diff.problem = f"shape/type {n.dtype}{list(n.shape)} instead of {r.dtype}{list(r.shape)}"
        return
    if r.dtype.kind not in "fc":
        if not np.array_equal(r, n):
            diff.ok = diff.bitwise_equal = False
            diff.max_abs = max(diff.max_abs, float(np.sum(r != n)))
            diff.problem = f"{int(np.sum(r != n))} of {r.size} values differ"
        return
    if r.tobytes() == n.tobytes():
        return
    diff.bitwise_equal = False
    rf, nf = r.astype(np.float64), n.astype(np.float64)
    nan_r, nan_n = np.isnan(rf), np.isnan(nf)
    if not np.array_equal(nan_r, nan_n):
        diff.ok, diff.problem = False, "NaN in different places"
        return
    finite = ~nan_r
    err = np.abs(rf[finite] - nf[finite]) if finite.any() else np.zeros(1)
    with np.errstate(invalid="ignore"):
        err = np.nan_to_num(err, nan=np.inf)  # inf - inf at the same place is equal
        same_inf = np.isinf(rf[finite]) & (rf[finite] == nf[finite])
        err[same_inf] = 0.0
    scale = float(np.max(np.abs(rf[finite][np.isfinite(rf[finite])]), initial=0.0))
    max_abs = float(err.max(initial=0.0))
    diff.max_abs = max(diff.max_abs, max_abs)
    diff.max_rel = max(diff.max_rel, max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf))
    if max_abs > tol.atol + tol.rtol * scale:
        diff.ok = False


class Validator:
    """Holds the reference outputs of the input model; checks candidate models against them."""

    def __init__(self, reference: "OrtModel | str", model: Model, *, pinned=None, draws: int = 3,
                 seed: int = 0, tol: Tolerance = Tolerance()):
        self.tol = tol
        self.has_random_ops = any(n.op_type in RANDOM_OPS for g in model.all_graphs() for n in g.nodes)
        self.feeds = random_feeds(input_specs(model, pinned), draws, seed)
        self.reference = run_model(reference, self.feeds, has_random_ops=self.has_random_ops)

    def check(self, candidate: "OrtModel | str") -> ValidationReport:
        out = run_model(candidate, self.feeds, has_random_ops=self.has_random_ops)
        return compare(self.reference, out, self.tol)
