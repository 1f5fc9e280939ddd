"""graphopt over onnx's own backend test cases: which ones it fails, grouped by cause.

    python benchmarks/node_tests.py [--passes fuse,fold] [--jobs 2] [--timeout 60]
                                    [--only 'test_conv*'] [--sample N --seed S] [--json FILE]

Cases: every folder under onnx/backend/test/data/{node,pytorch-converted,pytorch-operator,simple}
of the installed onnx package (model.onnx + test_data_set_*/input_*.pb, output_*.pb). onnx
releases that no longer ship data/node build those cases in memory
(onnx.backend.test.loader.load_node_model_tests); this script then writes them once, the way
onnx's `backend-test-tools generate-data` used to, under --node-cache (default
$TMPDIR/onnx-node-tests-<onnx version>), and reuses them on later runs.

Each case, in a worker process with a per-case timeout (a crash or hang costs one case):
  1. onnxruntime (CPU, graph optimizations off) runs the model as given on the reference inputs
     and must match the reference outputs with onnx's backend-test tolerance (rtol 1e-3, atol
     1e-7 unless the case says otherwise; sequences element-wise; strings exactly). Otherwise
     the case is "not eligible" (the reason is recorded).
  2. graphopt.optimize(model, PASSES, output=..., force=True) with validation on.
  3. What graphopt wrote runs in onnxruntime on the reference inputs: "reproduced" or "wrong".

Run it with nice on a shared machine; the full set (about 2,000 cases) takes a few minutes on
2 cores. --no-validate runs graphopt without its own validation, which shows what the passes do
on the cases whose validation cannot run.

Outcomes: wrong (graphopt wrote a model that computes something else: the worst), graphopt-failed
(it raised, crashed, hung or wrote nothing), output-unrunnable (onnxruntime cannot run what it
wrote), reproduced, not-eligible. Only graphopt's public API is used (graphopt.optimize,
graphopt.errors.GraphoptError).
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import glob
import json
import multiprocessing
import os
import random
import re
import shutil
import sys
import tempfile
import time
import traceback
from multiprocessing.connection import wait

KINDS = ("node", "pytorch-converted", "pytorch-operator", "simple")
DEFAULT_RTOL, DEFAULT_ATOL = 1e-3, 1e-7
STARTUP_GRACE = 120.0  # seconds a worker may take to start up, on top of a case's timeout
STATUS_ORDER = ("wrong", "output-unrunnable", "graphopt-failed", "reproduced", "not-eligible")


# ----------------------------------------------------------------------------------------------
# Finding the cases
# ----------------------------------------------------------------------------------------------

def onnx_data_dir() -> str:
    import onnx.backend.test

    return os.path.join(os.path.dirname(onnx.backend.test.__file__), "data")


def materialize_node_cases(dest: str) -> str:
    """Write onnx's in-memory node test cases to dest/node/<case>/ once; return dest/node."""
    import onnx
    from onnx import TensorProto, numpy_helper

    root = os.path.join(dest, "node")
    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        with open(marker) as f:
            if f.read().strip() == onnx.__version__:
                return root
    print(f"onnx {onnx.__version__} ships no data/node: building the node cases into {root} ...",
          file=sys.stderr, flush=True)
    import warnings

    from onnx.backend.test.loader import load_node_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import numpy as np

        with np.errstate(all="ignore"):
            cases = load_node_model_tests()
    if os.path.exists(root):
        shutil.rmtree(root)

    def serialize(value, vi) -> bytes:
        t = vi.type
        if t.HasField("map_type"):
            return numpy_helper.from_dict(value, vi.name).SerializeToString()
        if t.HasField("sequence_type"):
            return numpy_helper.from_list(value, vi.name).SerializeToString()
        if t.HasField("optional_type"):
            return numpy_helper.from_optional(value, vi.name).SerializeToString()
        if isinstance(value, TensorProto):
            return value.SerializeToString()
        return numpy_helper.from_array(value, vi.name).SerializeToString()

    for case in cases:
        d = os.path.join(root, case.name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        if (case.rtol, case.atol) != (DEFAULT_RTOL, DEFAULT_ATOL):
            with open(os.path.join(d, "data.json"), "w") as f:
                json.dump({"rtol": case.rtol, "atol": case.atol}, f)
        for i, (inputs, outputs) in enumerate(case.data_sets):
            ds = os.path.join(d, f"test_data_set_{i}")
            os.makedirs(ds, exist_ok=True)
            for j, v in enumerate(inputs):
                with open(os.path.join(ds, f"input_{j}.pb"), "wb") as f:
                    f.write(serialize(v, case.model.graph.input[j]))
            for j, v in enumerate(outputs):
                with open(os.path.join(ds, f"output_{j}.pb"), "wb") as f:
                    f.write(serialize(v, case.model.graph.output[j]))
    with open(marker, "w") as f:
        f.write(onnx.__version__)
    return root


def find_cases(data_dir: str, node_cache: str) -> list[tuple[str, str, str]]:
    """(kind, name, folder) of every case folder that has a model.onnx."""
    out = []
    for kind in KINDS:
        kdir = os.path.join(data_dir, kind)
        if not os.path.isdir(kdir):
            if kind != "node":
                print(f"warning: {kdir} does not exist; no {kind} cases", file=sys.stderr)
                continue
            kdir = materialize_node_cases(node_cache)
        for name in sorted(os.listdir(kdir)):
            folder = os.path.join(kdir, name)
            if os.path.isfile(os.path.join(folder, "model.onnx")):
                out.append((kind, name, folder))
    return out


# ----------------------------------------------------------------------------------------------
# One case (runs in a worker process)
# ----------------------------------------------------------------------------------------------

def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0].strip() if text else ""
    return (line or type(e).__name__)[:400]


def _ours(tb) -> list:
    """The traceback's frames in graphopt's own code (found by path, so it survives module moves)."""
    return [f for f in traceback.extract_tb(tb)
            if re.search(r"[/\\](graphopt|passes)[/\\]", f.filename) and "site-packages" not in f.filename]


def _short(f) -> str:
    return "/".join(f.filename.replace("\\", "/").split("/")[-2:]) + f":{f.name}:{f.lineno}"


def _where(tb) -> str:
    """file:function:line of the innermost frame in graphopt's own code, else the innermost frame."""
    frames = _ours(tb) or traceback.extract_tb(tb)
    return _short(frames[-1]) if frames else ""


def _stack(tb) -> str:
    """graphopt's frames, outermost first: file:function:line > ..."""
    return " > ".join(_short(f) for f in _ours(tb))


def _load_value(path: str, type_proto):
    import onnx
    from onnx import numpy_helper

    with open(path, "rb") as f:
        data = f.read()
    if type_proto.HasField("sequence_type"):
        p = onnx.SequenceProto()
        p.ParseFromString(data)
        return numpy_helper.to_list(p)
    if type_proto.HasField("optional_type"):
        p = onnx.OptionalProto()
        p.ParseFromString(data)
        return numpy_helper.to_optional(p)
    if type_proto.HasField("map_type"):
        p = onnx.MapProto()
        p.ParseFromString(data)
        return numpy_helper.to_dict(p)
    p = onnx.TensorProto()
    p.ParseFromString(data)
    return numpy_helper.to_array(p)


def load_data_sets(folder: str, model) -> list[tuple[list, list]]:
    sets = []
    for ds in sorted(glob.glob(os.path.join(folder, "test_data_set_*"))):
        n_in = len(glob.glob(os.path.join(ds, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(ds, "output_*.pb")))
        inputs = [_load_value(os.path.join(ds, f"input_{i}.pb"), model.graph.input[i].type) for i in range(n_in)]
        outputs = [_load_value(os.path.join(ds, f"output_{i}.pb"), model.graph.output[i].type) for i in range(n_out)]
        sets.append((inputs, outputs))
    return sets


def compare(ref, out, rtol: float, atol: float, where: str = "output") -> str | None:
    """None if `out` matches `ref` the way onnx's backend test runner checks it, else why not."""
    import numpy as np

    if ref is None or out is None:
        return None if ref is None and out is None else f"{where}: {'empty' if out is None else 'value'} " \
                                                          f"optional, reference {'empty' if ref is None else 'has a value'}"
    if isinstance(ref, dict) or isinstance(out, dict):
        if not (isinstance(ref, dict) and isinstance(out, dict)) or set(ref) != set(out):
            return f"{where}: map keys differ"
        for k in ref:
            why = compare(ref[k], out[k], rtol, atol, f"{where}[{k!r}]")
            if why:
                return why
        return None
    if isinstance(ref, (list, tuple)) or isinstance(out, (list, tuple)):
        if not (isinstance(ref, (list, tuple)) and isinstance(out, (list, tuple))):
            return f"{where}: got {type(out).__name__}, reference is {type(ref).__name__}"
        if len(ref) != len(out):
            return f"{where}: sequence of {len(out)}, reference has {len(ref)}"
        for j, (r, o) in enumerate(zip(ref, out)):
            why = compare(r, o, rtol, atol, f"{where}[{j}]")
            if why:
                return why
        return None
    out = np.asarray(out)
    ref = np.asarray(ref)
    if tuple(out.shape) != tuple(ref.shape):
        return f"{where}: shape {list(out.shape)}, reference {list(ref.shape)}"
    if ref.dtype == object or ref.dtype.kind in "US":
        return None if np.array_equal(out.astype(object), ref.astype(object)) else f"{where}: strings differ"
    if out.dtype != ref.dtype and ref.dtype.name in _BYTE_TYPES and out.dtype.name == _BYTE_TYPES[ref.dtype.name][1]:
        out = out.view(ref.dtype)  # onnxruntime hands float8 outputs back as their uint8 bits
    if out.dtype != ref.dtype:
        return f"{where}: dtype {out.dtype}, reference {ref.dtype}"
    r = rtol
    if out.dtype.name == "bfloat16":
        r = max(rtol, 2 ** -6)
    try:
        if out.dtype.kind not in "biufc" or out.dtype.name == "bfloat16":
            o, rf = out.astype(np.float32), ref.astype(np.float32)
        else:
            o, rf = out, ref
        np.testing.assert_allclose(o, rf, rtol=r, atol=atol)
    except AssertionError:
        with np.errstate(all="ignore"):
            diff = np.abs(o.astype(np.float64) - rf.astype(np.float64))
            bad = ~np.isclose(o.astype(np.float64), rf.astype(np.float64), rtol=r, atol=atol, equal_nan=True)
            worst = float(np.nanmax(np.where(bad, diff, 0))) if bad.any() else float("nan")
        return f"{where}: {int(bad.sum())}/{bad.size} values differ (max abs diff {worst:.3g})"
    except (TypeError, ValueError) as e:
        return f"{where}: cannot compare ({_first_line(e)})"
    return None


def _session(path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _feeds(model, inputs, sess) -> dict:
    """input_i.pb is the model's i-th graph input (as onnx's runner reads it); feed those the
    session takes (onnxruntime lists no initializer among its inputs)."""
    names = [vi.name for vi in model.graph.input][:len(inputs)]
    wanted = {i.name for i in sess.get_inputs()}
    return {name: value for name, value in zip(names, inputs) if name in wanted}


# Element types onnxruntime's Python API cannot take or give as numpy arrays (ml_dtypes), but can
# as OrtValues over the same bytes: 1- and 2-byte types (bfloat16, float8*); packed 4- and 2-bit
# types are left out (their numpy and onnxruntime layouts differ).
_BYTE_TYPES = {"bfloat16": (16, "uint16"), "float8_e4m3fn": (17, "uint8"), "float8_e4m3fnuz": (18, "uint8"),
               "float8_e5m2": (19, "uint8"), "float8_e5m2fnuz": (20, "uint8"), "float8_e8m0fnu": (24, "uint8")}


def _exotic(v) -> bool:
    return getattr(v, "dtype", None) is not None and v.dtype.name in _BYTE_TYPES


def _ort_value_to_numpy(v):
    """An output OrtValue as numpy, through its raw bytes when onnxruntime has no numpy type."""
    try:
        return v.numpy()
    except Exception:
        if not v.is_tensor():
            raise
    import ctypes

    from onnx import TensorProto, numpy_helper

    raw = ctypes.string_at(v.data_ptr(), v.tensor_size_in_bytes()) if v.tensor_size_in_bytes() else b""
    t = TensorProto(dims=list(v.shape()), data_type=v.element_type(), raw_data=raw)
    return numpy_helper.to_array(t)


def _run_session(sess, names: list, feeds: dict) -> list:
    """sess.run, or through OrtValues when an input or output has an ml_dtypes element type."""
    if not any(_exotic(v) for v in feeds.values()):
        try:
            return list(sess.run(names, feeds))
        except Exception as e:
            if "No corresponding Numpy type" not in str(e):
                raise
    import numpy as np
    import onnxruntime as ort

    vals = {}
    for k, v in feeds.items():
        if _exotic(v):
            onnx_type, view = _BYTE_TYPES[v.dtype.name]
            vals[k] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(np.ascontiguousarray(v).view(view), onnx_type)
        elif isinstance(v, np.ndarray):
            vals[k] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v))
        else:
            raise TypeError(f"cannot feed {type(v).__name__} together with an ml_dtypes input")
    return [_ort_value_to_numpy(o) for o in sess.run_with_ort_values(names, vals)]


def _run(sess, model, inputs) -> list:
    outs = [o.name for o in model.graph.output]
    return _run_session(sess, outs, _feeds(model, inputs, sess))


def run_case(case: dict, passes: str, tmp: str, phase, validate: bool = True) -> dict:
    import onnx

    import graphopt
    from graphopt.errors import GraphoptError

    folder = case["folder"]
    rec = dict(case)
    rtol, atol = DEFAULT_RTOL, DEFAULT_ATOL
    if os.path.exists(os.path.join(folder, "data.json")):
        with open(os.path.join(folder, "data.json")) as f:
            d = json.load(f)
        rtol, atol = d.get("rtol", rtol), d.get("atol", atol)
    model_path = os.path.join(folder, "model.onnx")
    t0 = time.perf_counter()

    # 1. Is onnxruntime right about the model as given?
    phase("reference")
    try:
        model = onnx.load(model_path)
        rec["opset"] = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
        rec["ir_version"] = model.ir_version
        rec["ops"] = sorted({n.op_type for n in model.graph.node})
        data_sets = load_data_sets(folder, model)
    except Exception as e:
        return {**rec, "status": "not-eligible", "reason": f"cannot read the case: {type(e).__name__}: {_first_line(e)}"}
    if not data_sets:
        return {**rec, "status": "not-eligible", "reason": "no test_data_set"}
    try:
        sess = _session(model_path)
    except Exception as e:
        return {**rec, "status": "not-eligible", "reason": f"onnxruntime cannot load: {_first_line(e)}"}
    for inputs, ref in data_sets:
        try:
            got = _run(sess, model, inputs)
        except Exception as e:
            return {**rec, "status": "not-eligible", "reason": f"onnxruntime cannot run: {_first_line(e)}"}
        why = compare(ref, got[:len(ref)], rtol, atol) if len(got) >= len(ref) else "fewer outputs"
        if why:
            return {**rec, "status": "not-eligible", "reason": f"onnxruntime differs from the reference: {why}"}
    del sess
    rec["reference_seconds"] = round(time.perf_counter() - t0, 3)

    # 2. graphopt
    phase("graphopt")
    out_path = os.path.join(tmp, "out.onnx")
    for p in glob.glob(out_path + "*"):
        os.remove(p)
    t1 = time.perf_counter()
    try:
        result = graphopt.optimize(model_path, passes, output=out_path, force=True, validate=validate)
    except Exception as e:
        rec.update(status="graphopt-failed", error_type=type(e).__name__, message=_first_line(e),
                   graphopt_error=isinstance(e, GraphoptError), where=_where(e.__traceback__),
                   stack=_stack(e.__traceback__),
                   graphopt_seconds=round(time.perf_counter() - t1, 3))
        return rec
    rec["graphopt_seconds"] = round(time.perf_counter() - t1, 3)
    rec["rolled_back"] = list(getattr(result, "rolled_back", []) or [])
    rec["validation_status"] = getattr(result, "validation_status", None)
    rec["nodes_before"] = getattr(result, "nodes_before", None)
    rec["nodes_after"] = getattr(result, "nodes_after", None)
    if not os.path.exists(out_path):
        rec.update(status="graphopt-failed", error_type="NoOutput", message="optimize returned but wrote no model")
        return rec

    # 3. Does what graphopt wrote compute the reference outputs?
    phase("check")
    try:
        out_model = onnx.load(out_path, load_external_data=False)
        sess = _session(out_path)
    except Exception as e:
        rec.update(status="output-unrunnable", error_type=type(e).__name__,
                   message=f"onnxruntime cannot load graphopt's output: {_first_line(e)}")
        return rec
    names = [o.name for o in model.graph.output]
    if [o.name for o in out_model.graph.output] != names:
        rec["note"] = "graph outputs renamed or reordered"
    for inputs, ref in data_sets:
        try:
            got = _run_session(sess, names, _feeds(model, inputs, sess))
        except Exception as e:
            rec.update(status="output-unrunnable", error_type=type(e).__name__,
                       message=f"onnxruntime cannot run graphopt's output: {_first_line(e)}")
            return rec
        why = compare(ref, got[:len(ref)], rtol, atol)
        if why:
            rec.update(status="wrong", message=why)
            return rec
    rec["status"] = "reproduced"
    return rec


def worker_main(conn, passes: str, log_path: str, validate: bool = True, scratch: str | None = None) -> None:
    # Native libraries print to the C-level stderr: send it to a log, not the summary.
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        import onnxruntime as ort

        ort.set_default_logger_severity(3)
    except Exception:
        pass
    import numpy as np

    np.seterr(all="ignore")
    tmp = tempfile.mkdtemp(prefix="worker-", dir=scratch)
    try:
        while True:
            case = conn.recv()
            if case is None:
                break
            print(f"=== {case['name']}", file=sys.stderr, flush=True)
            try:
                rec = run_case(case, passes, tmp, lambda p: conn.send(("phase", p)), validate)
            except Exception as e:  # a bug here, not in graphopt
                rec = {**case, "status": "harness-error", "message": f"{type(e).__name__}: {_first_line(e)}",
                       "where": _where(e.__traceback__)}
            conn.send(("done", rec))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# The pool: long-lived workers, a case each at a time, killed and replaced on a timeout or crash
# ----------------------------------------------------------------------------------------------

class Worker:
    def __init__(self, ctx, passes: str, log_path: str, validate: bool = True, scratch: str | None = None):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child, passes, log_path, validate, scratch), daemon=True)
        self.proc.start()
        child.close()
        self.case = None
        self.phase = None
        self.started = 0.0

    def give(self, case: dict) -> None:
        self.case, self.phase, self.started = case, "start", time.monotonic()
        self.conn.send(case)

    def deadline(self, timeout: float) -> float:
        # a fresh worker first imports onnxruntime and graphopt: that is not the case's time
        return self.started + timeout + (STARTUP_GRACE if self.phase == "start" else 0)

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


def _lost(case: dict, phase: str, what: str) -> dict:
    """A record for a case whose worker hung (what='timeout') or died (what='crash: ...')."""
    if phase in ("start", "reference", None):
        return {**case, "status": "not-eligible", "reason": f"onnxruntime {what}"}
    if phase == "graphopt":
        return {**case, "status": "graphopt-failed", "error_type": what.split(":")[0].capitalize(),
                "message": f"graphopt {what}"}
    return {**case, "status": "output-unrunnable", "error_type": what.split(":")[0].capitalize(),
            "message": f"onnxruntime {what} on graphopt's output"}


def run_all(cases: list[dict], passes: str, jobs: int, timeout: float, log_path: str, progress: bool,
            validate: bool = True) -> list[dict]:
    scratch = tempfile.mkdtemp(prefix="graphopt-node-tests-")  # the workers' output files; removed at the end
    try:
        return _run_all(cases, passes, jobs, timeout, log_path, progress, validate, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_all(cases, passes, jobs, timeout, log_path, progress, validate, scratch) -> list[dict]:
    ctx = multiprocessing.get_context("spawn")
    pending = collections.deque(cases)
    workers = [Worker(ctx, passes, log_path, validate, scratch) for _ in range(max(1, min(jobs, len(cases))))]
    results: list[dict] = []
    counts = collections.Counter()
    t0 = time.monotonic()

    def finished(rec: dict) -> None:
        results.append(rec)
        counts[rec["status"]] += 1
        if progress and (len(results) % 100 == 0 or len(results) == len(cases)):
            c = ", ".join(f"{k} {counts[k]}" for k in STATUS_ORDER if counts[k])
            print(f"[{len(results)}/{len(cases)} {time.monotonic() - t0:.0f}s] {c}", file=sys.stderr, flush=True)

    for w in workers:
        if pending:
            w.give(pending.popleft())
    while any(w.case is not None for w in workers):
        busy = [w for w in workers if w.case is not None]
        now = time.monotonic()
        deadline = min(w.deadline(timeout) for w in busy)
        ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=max(0.0, deadline - now))
        for i, w in enumerate(workers):
            if w.case is None:
                continue
            rec = None
            replace = False
            if w.conn in ready or w.proc.sentinel in ready:
                try:
                    while w.conn.poll():
                        kind, payload = w.conn.recv()
                        if kind == "phase":
                            if w.phase == "start":  # the case's clock starts once the worker has started up
                                w.started = time.monotonic()
                            w.phase = payload
                        else:
                            rec = payload
                            break
                except (EOFError, OSError):
                    pass
                if rec is None and not w.proc.is_alive():
                    w.proc.join(1)
                    rec = _lost(w.case, w.phase, f"crash: worker died with exit code {w.proc.exitcode}")
                    replace = True
            if rec is None and time.monotonic() > w.deadline(timeout):
                rec = _lost(w.case, w.phase, f"timeout: no result after {timeout:g} s")
                replace = True
            if rec is None:
                continue
            rec["seconds"] = round(time.monotonic() - w.started, 3)
            finished(rec)
            if replace:
                w.kill()
                w = workers[i] = Worker(ctx, passes, log_path, validate, scratch)
            w.case = None
            if pending:
                w.give(pending.popleft())
    for w in workers:
        try:
            w.conn.send(None)
        except OSError:
            pass
    for w in workers:
        w.proc.join(10)
        if w.proc.is_alive():
            w.proc.kill()
    return results


# ----------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------

def normalize(msg: str) -> str:
    """The message with numbers, quoted names and identifiers stripped, for grouping."""
    s = msg
    s = re.sub(r"\(max abs diff [^)]*\)", "", s)
    s = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", s)
    s = re.sub(r"Non-zero status code returned while running (\w+) node\. Name:'[^']*' Status Message: ", r"\1 node: ", s)
    s = re.sub(r"'[^']*'|\"[^\"]*\"|`[^`]*`", "'…'", s)
    s = re.sub(r"(?<![\w.])/[^\s:,;)]+", "<path>", s)
    s = re.sub(r"\b\w*(_\w+)+\b", "<name>", s)                       # snake_case / tensor names
    s = re.sub(r"\b0x[0-9a-fA-F]+\b", "N", s)
    s = re.sub(r"[-+]?\b\d+(\.\d+)?([eE][-+]?\d+)?\b", "N", s)
    s = re.sub(r"\[[^\[\]]*\]", "[…]", s)
    s = re.sub(r"\{[^{}]*\}", "{…}", s)
    s = re.sub(r"\s+", " ", s).strip()
    return s[:220]


def _group_key(rec: dict) -> str:
    if rec["status"] == "not-eligible":
        return normalize(rec.get("reason", ""))
    t = rec.get("error_type")
    return f"{t}: {normalize(rec.get('message', ''))}" if t else normalize(rec.get("message", ""))


def _family(rec: dict) -> str:
    """Coarse cause: the exception type and the last frames of graphopt's stack, without line numbers."""
    stack = [re.sub(r":\d+$", "", f.split("/")[-1]) for f in (rec.get("stack") or "").split(" > ") if f]
    stack = [f for f in stack if not f.endswith(":<listcomp>")]
    where = " > ".join(stack[-3:]) if stack else rec.get("message", "")[:60]
    return f"{rec.get('error_type') or rec['status']} @ {where}"


def summarize(results: list[dict], passes: str, seconds: float, out=sys.stdout, examples: int = 5) -> None:
    by = collections.defaultdict(list)
    for r in results:
        by[r["status"]].append(r)
    eligible = len(results) - len(by["not-eligible"])
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p(f"\n== graphopt -p {passes} on onnx backend test cases: {len(results)} cases in {seconds:.0f} s")
    kinds = collections.Counter(r["kind"] for r in results)
    p("   " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    p(f"   eligible (onnxruntime reproduces the reference) {eligible}, not eligible {len(by['not-eligible'])}")
    p(f"   of the eligible: reproduced {len(by['reproduced'])}, graphopt failed {len(by['graphopt-failed'])}, "
      f"WRONG outputs {len(by['wrong'])}, output onnxruntime cannot run {len(by['output-unrunnable'])}"
      + (f", harness errors {len(by['harness-error'])}" if by["harness-error"] else ""))
    rb = [r for r in by["reproduced"] if r.get("rolled_back")]
    if rb:
        p(f"   reproduced after graphopt rolled back a pass (its checker or validation caught it): {len(rb)}")

    def groups(recs: list[dict], title: str, full: bool = False) -> None:
        if not recs:
            return
        p(f"\n-- {title} ({len(recs)})")
        if full:
            for r in sorted(recs, key=lambda r: r["name"]):
                p(f"   {r['name']}: {r.get('message', '')}" + (f"  [rolled back: {', '.join(r['rolled_back'])}]"
                                                            if r.get("rolled_back") else ""))
            return
        g = collections.defaultdict(list)
        for r in recs:
            g[_group_key(r)].append(r)
        for key, rs in sorted(g.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            where = collections.Counter(r.get("where") for r in rs if r.get("where")).most_common(1)
            p(f"{len(rs):5d}  {key}" + (f"   @ {where[0][0]}" if where else ""))
            names = sorted(r["name"] for r in rs)
            shown = names[:examples]
            p("       e.g. " + ", ".join(shown) + (f" (+{len(names) - len(shown)})" if len(names) > len(shown) else ""))
            sample = next((r for r in rs if r["name"] == shown[0]), rs[0])
            msg = sample.get("message") or sample.get("reason")
            p(f"       [{shown[0]}] {msg[:300]}")

    fails = by["graphopt-failed"] + by["output-unrunnable"]
    if fails:
        p(f"\n-- where graphopt failed: exception type and graphopt's call stack (innermost last) ({len(fails)})")
        fam = collections.defaultdict(list)
        for r in fails:
            fam[_family(r)].append(r)
        for key, rs in sorted(fam.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            names = sorted(r["name"] for r in rs)
            p(f"{len(rs):5d}  {key}")
            p("       e.g. " + ", ".join(names[:examples]) + (f" (+{len(names) - examples})" if len(names) > examples else ""))
    groups(by["wrong"], "WRONG: graphopt wrote a model whose outputs differ from the reference", full=True)
    groups(by["output-unrunnable"], "graphopt wrote a model onnxruntime cannot load or run")
    groups(by["graphopt-failed"], "graphopt failed, by cause")
    groups(by["harness-error"], "errors in this script")
    if rb:
        p(f"\n-- reproduced after a rollback ({len(rb)})")
        c = collections.Counter(x for r in rb for x in r["rolled_back"])
        for name, n in c.most_common():
            ex = sorted(r["name"] for r in rb if name in r["rolled_back"])
            p(f"{n:5d}  rolled back {name}: e.g. {', '.join(ex[:examples])}")
    groups(by["not-eligible"], "not eligible (onnxruntime cannot run the case or disagrees with the reference)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passes", default="fuse,fold", help="graphopt pipeline (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case (default: %(default)s)")
    ap.add_argument("--only", action="append", help="glob on case names (repeatable), e.g. 'test_conv*'")
    ap.add_argument("--kind", action="append", choices=KINDS, help="only these case folders (repeatable)")
    ap.add_argument("--sample", type=int, help="a random subset of N cases")
    ap.add_argument("--seed", type=int, default=0, help="seed for --sample (default: %(default)s)")
    ap.add_argument("--json", help="write every case's record to this file")
    ap.add_argument("--no-validate", action="store_true",
                    help="run graphopt with validate=False (shows what the passes do where its validation cannot run)")
    ap.add_argument("--data-dir", default=None, help="onnx's backend test data folder (default: the installed onnx's)")
    ap.add_argument("--node-cache", default=None,
                    help="where node cases are written when onnx ships none (default: $TMPDIR/onnx-node-tests-<version>)")
    ap.add_argument("--log", default=None, help="worker stderr log (default: a file in $TMPDIR)")
    ap.add_argument("--examples", type=int, default=5, help="example case names per group (default: %(default)s)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args()

    import onnx

    data_dir = args.data_dir or onnx_data_dir()
    node_cache = args.node_cache or os.path.join(tempfile.gettempdir(), f"onnx-node-tests-{onnx.__version__}")
    cases = find_cases(data_dir, node_cache)
    if args.kind:
        cases = [c for c in cases if c[0] in args.kind]
    if args.only:
        cases = [c for c in cases if any(fnmatch.fnmatchcase(c[1], pat) for pat in args.only)]
    if args.sample is not None and args.sample < len(cases):
        cases = sorted(random.Random(args.seed).sample(cases, args.sample))
    if not cases:
        print("no cases match", file=sys.stderr)
        return 2
    log_path = args.log or os.path.join(tempfile.gettempdir(), f"node_tests.{os.getpid()}.log")
    print(f"{len(cases)} cases, -p {args.passes}, {args.jobs} workers, {args.timeout:g} s each; worker log {log_path}",
          file=sys.stderr, flush=True)
    t0 = time.monotonic()
    results = run_all([{"kind": k, "name": n, "folder": f} for k, n, f in cases], args.passes, args.jobs,
                      args.timeout, log_path, not args.quiet, validate=not args.no_validate)
    seconds = time.monotonic() - t0
    results.sort(key=lambda r: (STATUS_ORDER.index(r["status"]) if r["status"] in STATUS_ORDER else -1, r["name"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"passes": args.passes, "validate": not args.no_validate, "onnx": onnx.__version__, "seconds": round(seconds, 1),
                       "cases": results}, f, indent=1, default=str)
    summarize(results, args.passes + ("" if not args.no_validate else " (validation off)"), seconds,
              examples=args.examples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
