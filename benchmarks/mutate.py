"""Mutation fuzzing of the model reader: damaged copies of valid models through the real command
line (`graphopt FILE -p fuse,fold -o OUT`, in a worker process with a timeout).

Every result is classified:
  ok              exit 0; onnx.load of the input and of the output must succeed too, graphopt's
                  reading of every top-level initializer must equal what onnx.load gives, and a
                  plain round trip (`-p none`) must write those same values (graphopt never
                  reads or writes different weights than onnx reads)
  clean error     exit 1/2/3 with one line "graphopt: error: ...", no traceback, nothing written
  internal error  exit 70, a traceback, a message that is not one line, or a file left behind
  disagreement    exit 0 but onnx cannot load the input, or the weights differ
  crash/timeout   the worker died or ran past --timeout

    python benchmarks/mutate.py --count 900 --seed 0 --jobs 2 --json mutate.json

Mutations: truncation, bit flips, byte insertion/deletion, a protobuf field duplicated at any
nesting level (raw_data, dims, data_type, names, whole nodes/tensors/graphs), group-encoded
unknown fields (wire types 3/4) inserted at any level, invalid UTF-8 in a string field, a
length varint set to a huge value. The wire walk knows which fields of ONNX's messages are
messages and which are strings, so a mutation lands where it means something.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ------------------------------------------------------------------ ONNX's messages on the wire
# message -> {field number: child message}
MESSAGES = {
    "Model": {7: "Graph", 8: "OperatorSet", 14: "Entry", 20: "TrainingInfo", 25: "Function"},
    "Graph": {1: "Node", 5: "Tensor", 11: "ValueInfo", 12: "ValueInfo", 13: "ValueInfo", 15: "SparseTensor",
              14: "Annotation", 16: "Entry"},
    "Node": {5: "Attribute", 9: "Entry"},
    "Attribute": {5: "Tensor", 6: "Graph", 10: "Tensor", 11: "Graph", 14: "Type", 15: "Type",
                  22: "SparseTensor", 23: "SparseTensor"},
    "Tensor": {13: "Entry", 3: "Segment", 16: "Entry"},
    "SparseTensor": {1: "Tensor", 2: "Tensor"},
    "ValueInfo": {2: "Type", 4: "Entry"},
    "Type": {1: "TensorType", 4: "SequenceType", 5: "MapType", 9: "SequenceType", 8: "TensorType"},
    "SequenceType": {1: "Type"},
    "MapType": {2: "Type"},
    "TensorType": {2: "Shape"},
    "Shape": {1: "Dim"},
    "Dim": {},
    "Function": {7: "Node", 9: "OperatorSet", 11: "Attribute", 12: "ValueInfo", 14: "Entry"},
    "TrainingInfo": {1: "Graph", 2: "Entry", 3: "Graph", 4: "Entry"},
    "OperatorSet": {},
    "Entry": {},
    "Annotation": {2: "Entry"},
    "Segment": {},
}
# message -> string fields (names, doc strings, domains: text that must be valid UTF-8)
STRINGS = {
    "Model": {2, 3, 4, 6}, "Graph": {2, 10}, "Node": {1, 2, 3, 4, 6, 7}, "Attribute": {1, 13, 21},
    "Tensor": {8, 12}, "ValueInfo": {1, 3}, "Dim": {2, 3}, "Entry": {1, 2}, "OperatorSet": {1},
    "Function": {1, 4, 5, 6, 8, 10}, "TensorType": set(), "Shape": set(),
}
# fields worth duplicating more often than the rest: (message, field)
HOT = {("Tensor", 9), ("Tensor", 1), ("Tensor", 2), ("Tensor", 8), ("Node", 3), ("Node", 1), ("Node", 2),
       ("ValueInfo", 1), ("Graph", 5), ("Model", 7), ("Model", 1), ("Dim", 1), ("Attribute", 20)}


class Bad(Exception):
    pass


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise Bad
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


@dataclass
class Field:
    number: int
    wt: int
    head: bytes  # tag (and, for LEN, nothing else: the length is recomputed)
    payload: bytes  # the payload as in the file (for LEN: the bytes after the length)
    message: Optional[str] = None  # for a LEN field that is a known message: its type
    children: Optional[list] = None  # its fields, parsed
    length_override: Optional[bytes] = None  # a length varint that lies

    def encode(self) -> bytes:
        if self.wt != 2:
            return self.head + self.payload
        body = self.payload if self.children is None else b"".join(f.encode() for f in self.children)
        return self.head + (self.length_override or varint(len(body))) + body


def parse(buf: bytes, message: str) -> list[Field]:
    fields = []
    pos, end = 0, len(buf)
    while pos < end:
        start = pos
        key, pos = read_varint(buf, pos, end)
        number, wt = key >> 3, key & 7
        head = buf[start:pos]
        if wt == 0:
            _, p2 = read_varint(buf, pos, end)
        elif wt == 1:
            p2 = pos + 8
        elif wt == 5:
            p2 = pos + 4
        elif wt == 2:
            n, pos = read_varint(buf, pos, end)
            p2 = pos + n
        else:
            raise Bad
        if p2 > end or number == 0:
            raise Bad
        f = Field(number, wt, head, buf[pos:p2])
        child = MESSAGES.get(message, {}).get(number) if wt == 2 else None
        if child is not None:
            try:
                f.children, f.message = parse(f.payload, child), child
            except Bad:
                pass
        fields.append(f)
        pos = p2
    return fields


def walk(fields: list[Field], message: str, path=()):
    """Yield (parent list, index, message type of the parent, path) for every field."""
    for i, f in enumerate(fields):
        yield fields, i, message, path
        if f.children is not None:
            yield from walk(f.children, f.message, path + ((message, f.number),))


def messages(fields: list[Field], message: str):
    """Yield (field list, message type) for every message: the model and each nested one."""
    yield fields, message
    for f in fields:
        if f.children is not None:
            yield from messages(f.children, f.message)


# ------------------------------------------------------------------------------ mutations
def m_truncate(rng, data, tree):
    return data[:rng.randrange(1, len(data))], "truncate"


def m_bitflip(rng, data, tree):
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4, 8))):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b), "bitflip"


def m_insert(rng, data, tree):
    i = rng.randrange(len(data) + 1)
    return data[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + data[i:], "insert bytes"


def m_delete(rng, data, tree):
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randint(1, 16):], "delete bytes"


def m_duplicate(rng, data, tree):
    sites = list(walk(tree, "Model"))
    hot = [s for s in sites if (s[2], s[0][s[1]].number) in HOT]
    raw = [s for s in hot if (s[2], s[0][s[1]].number) == ("Tensor", 9)]
    r = rng.random()
    parent, i, msg, path = rng.choice(raw if raw and r < 0.3 else hot if hot and r < 0.75 else sites)
    f = parent[i]
    import copy
    dup = copy.deepcopy(f)
    how = "same"
    if (msg, f.number) == ("Tensor", 9) and f.children is None and f.payload:
        how = rng.choice(("different", "different", "same", "shorter"))
        if how == "different":  # a copy that differs, to tell first-wins from last-wins
            dup.payload = bytes(reversed(f.payload)) if len(set(f.payload)) > 1 else bytes(
                (b + 1) & 0xFF for b in f.payload)
        elif how == "shorter":
            dup.payload = f.payload[:len(f.payload) // 2]
    where = rng.choice(("after", "before", "end"))
    if where == "after":
        parent.insert(i + 1, dup)
    elif where == "before":
        parent.insert(i, dup)
    else:
        parent.append(dup)
    return encode(tree), f"duplicate {msg}.{f.number} ({how}, {where})"


def _group(rng, number: int, depth: int = 0) -> bytes:
    body = b""
    for _ in range(rng.randint(0, 3)):
        n = rng.randint(1, 30)
        kind = rng.choice((0, 2, 5, 3) if depth < 3 else (0, 2, 5))
        if kind == 0:
            body += varint(n << 3) + varint(rng.randrange(1 << 20))
        elif kind == 2:
            s = bytes(rng.randrange(256) for _ in range(rng.randint(0, 8)))
            body += varint(n << 3 | 2) + varint(len(s)) + s
        elif kind == 5:
            body += varint(n << 3 | 5) + bytes(4)
        else:
            body += _group(rng, n, depth + 1)
    return varint(number << 3 | 3) + body + varint(number << 3 | 4)


def m_group(rng, data, tree):
    msgs = list(messages(tree, "Model"))
    fields, msg = rng.choice(msgs)
    number = rng.choice((99, 500, 1000, 12345, 2**29 - 1))
    g = _group(rng, number)
    fields.insert(rng.randint(0, len(fields)), Field(number, 3, g, b""))
    return encode(tree), f"group field in {msg}"


def m_utf8(rng, data, tree):
    sites = [(p, i, m) for p, i, m, _ in walk(tree, "Model")
             if p[i].wt == 2 and p[i].children is None and p[i].number in STRINGS.get(m, ())]
    if not sites:
        return m_bitflip(rng, data, tree)
    parent, i, msg = rng.choice(sites)
    f = parent[i]
    bad = rng.choice((b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\x80"))
    if rng.random() < 0.5:
        pos = rng.randint(0, len(f.payload))
        f.payload = f.payload[:pos] + bad + f.payload[pos:]
    else:  # overwrite, keeping the length where the bytes fit
        pos = rng.randint(0, max(0, len(f.payload) - len(bad)))
        f.payload = f.payload[:pos] + bad + f.payload[pos + len(bad):]
    return encode(tree), f"invalid utf-8 in {msg}.{f.number}"


def m_huge_length(rng, data, tree):
    sites = [(p, i, m) for p, i, m, _ in walk(tree, "Model") if p[i].wt == 2]
    parent, i, msg = rng.choice(sites)
    f = parent[i]
    f.length_override = varint(rng.choice((2**31 - 1, 2**31, 2**32 + 5, 2**63 - 1, 2**64 - 1,
                                           len(f.payload) + rng.randint(1, 64))))
    return encode(tree), f"huge length of {msg}.{f.number}"


def m_varint(rng, data, tree):
    """Set a varint field (data_type, dims, data_location, elem_type, dim_value, attribute type,
    ir_version, opset version, ...) to a value at an edge."""
    sites = [(p, i, m) for p, i, m, _ in walk(tree, "Model") if p[i].wt == 0]
    if not sites:
        return m_bitflip(rng, data, tree)
    parent, i, msg = rng.choice(sites)
    f = parent[i]
    value = rng.choice((0, 1, 2, 7, 8, 13, 16, 17, 23, 24, 25, 30, 40, 255, 9999, 2**31 - 1, 2**31, 2**32,
                        2**40, 2**63 - 1, 2**64 - 1, 2**64 - 2, rng.randrange(2**64)))
    f.payload = varint(value)
    return encode(tree), f"set varint {msg}.{f.number} = {value}"


def encode(tree: list[Field]) -> bytes:
    return b"".join(f.encode() for f in tree)


MUTATIONS = {
    "truncate": (m_truncate, 1), "bitflip": (m_bitflip, 2), "insert": (m_insert, 1), "delete": (m_delete, 1),
    "duplicate": (m_duplicate, 3), "group": (m_group, 2), "utf8": (m_utf8, 2), "huge_length": (m_huge_length, 1),
    "varint": (m_varint, 2),
}


def mutate(data: bytes, rng: random.Random, kind: Optional[str] = None) -> tuple[bytes, str]:
    if kind is None:
        names = list(MUTATIONS)
        kind = rng.choices(names, weights=[MUTATIONS[n][1] for n in names])[0]
    tree = parse(data, "Model")
    return MUTATIONS[kind][0](rng, data, tree)


# ------------------------------------------------------------------------------ base models
def built_models() -> dict[str, bytes]:
    """Small models with >1 KiB initializers (the memory-mapped raw_data path), a subgraph and a
    Constant node."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1")  # 2 KiB
    b1 = numpy_helper.from_array(rng.standard_normal((32,)).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 8)).astype(np.float32), "w2")  # 1 KiB
    idx = numpy_helper.from_array(np.arange(300, dtype=np.int64), "idx")  # 2.4 KiB
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Add", ["h", "b1"], ["h2"], name="add1"),
             helper.make_node("Relu", ["h2"], ["h3"], name="relu"),
             helper.make_node("MatMul", ["h3", "w2"], ["y0"], name="mm2"),
             helper.make_node("Constant", [], ["c"], name="const",
                              value=numpy_helper.from_array(np.full((8,), 0.5, np.float32))),
             helper.make_node("Mul", ["y0", "c"], ["y"], name="mul")]
    g = helper.make_graph(nodes, "mlp", [x], [y], [w1, b1, w2])
    mlp = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8, producer_name="mutate")

    # int64 weights, a Gather, and an If whose branches hold their own initializer-like constants
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    z = helper.make_tensor_value_info("z", TensorProto.INT64, [None])
    then_g = helper.make_graph([helper.make_node("Gather", ["idx", "i"], ["t"], name="gather_then")], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.INT64, [None])])
    else_g = helper.make_graph([helper.make_node("Neg", ["i"], ["t2"], name="neg_else")], "else", [],
                               [helper.make_tensor_value_info("t2", TensorProto.INT64, [None])])
    i = helper.make_tensor_value_info("i", TensorProto.INT64, [3])
    g2 = helper.make_graph([helper.make_node("If", ["cond"], ["z"], then_branch=then_g, else_branch=else_g,
                                             name="branch")],
                           "cf", [cond, i], [z], [idx])
    cf = helper.make_model(g2, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return {"built/mlp_1k": mlp.SerializeToString(), "built/if_int64": cf.SerializeToString()}


def base_models(include_zoo: bool = True) -> dict[str, bytes]:
    models = built_models()
    pats = ["golden_models/torch/*.onnx", "golden_models/trained/*.onnx", "golden_models/control_flow.onnx"]
    if include_zoo:
        pats.append("golden_models/zoo/*.onnx")
    for pat in pats:
        for path in sorted(glob.glob(os.path.join(ROOT, pat))):
            with open(path, "rb") as f:
                models[os.path.relpath(path, ROOT)] = f.read()
    return models


def weight(name: str, data: bytes) -> float:
    """Small models are drawn more often: they run faster and hit the same reader code."""
    return 6.0 if name.startswith("built/") else 3.0 if len(data) < 300_000 else 0.5


# ------------------------------------------------------------------------------ one run
PASSES = "fuse,fold"
MEMORY_LIMIT = 6 << 30  # address space per worker: far more than the base models need


def run_one(path: str, out: str) -> dict:
    """In a worker: run the CLI in-process on `path`, classify, and check weights on success."""
    from graphopt.cli.main import main

    err, outs = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(outs):
        try:
            code = main([path, "-p", PASSES, "-o", out, "-q"])
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - anything escaping main is a bug
            import traceback
            traceback.print_exc()
            code = -1
    stderr = err.getvalue()
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    folder = os.path.dirname(out)
    leftovers = [p for p in os.listdir(folder) if p.startswith(".graphopt")]
    res = {"exit": code, "stderr": stderr.strip()[:600]}
    if code == 0:
        try:
            res["status"], res["detail"] = check_ok(path, out)
        except Exception as e:  # noqa: BLE001
            res["status"], res["detail"] = "disagreement", f"checking failed: {type(e).__name__}: {e}"[:300]
    elif code in (1, 2, 3) and len(lines) == 1 and lines[0].startswith("graphopt: error: ") \
            and "Traceback" not in stderr and "out of memory" not in lines[0]:
        res["status"] = "clean error"
        res["detail"] = lines[0]
        if os.path.exists(out) or leftovers:
            res["status"], res["detail"] = "internal error", f"wrote a file on error: {lines[0]}"
    else:
        res["status"] = "internal error"
        res["detail"] = lines[-1] if lines else f"exit {code}, no message"
    return res


def check_ok(path: str, out: str) -> tuple[str, str]:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from graphopt.onnx_io import load as frontend

    try:
        ref = onnx.load(path)
    except Exception as e:  # noqa: BLE001
        return "disagreement", f"graphopt accepted a file onnx.load refuses: {type(e).__name__}: {e}"[:300]
    try:
        onnx.load(out)
    except Exception as e:  # noqa: BLE001
        return "disagreement", f"graphopt wrote a file onnx.load refuses: {e}"[:300]
    try:
        model = frontend.load(path)
    except Exception as e:  # noqa: BLE001
        return "disagreement", f"graphopt's reader refuses on a second read: {type(e).__name__}: {e}"[:300]
    for t in ref.graph.initializer:
        v = model.graph.value(t.name)
        if v is None or v.const is None:
            return "disagreement", f"graphopt's reader lost initializer {t.name!r}"
        try:
            want = numpy_helper.to_array(t)
        except Exception as e:  # noqa: BLE001
            return "disagreement", f"onnx cannot decode initializer {t.name!r} graphopt accepted: {e}"[:300]
        got = np.asarray(v.const.numpy())
        same = want.dtype == got.dtype and want.shape == got.shape and (
            want.tolist() == got.tolist() if want.dtype == object else want.tobytes() == got.tobytes())
        if not same:
            return "disagreement", (f"initializer {t.name!r}: graphopt reads {got.dtype}{list(got.shape)}, "
                                    f"onnx.load {want.dtype}{list(want.shape)}" + ("" if want.shape != got.shape
                                                                                  else ", other values"))
    # and what graphopt writes: a plain round trip (`-p none`) holds onnx.load's weights
    from graphopt.cli.main import main

    plain = os.path.join(os.path.dirname(out), "none.onnx")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([path, "-p", "none", "-o", plain, "-q", "--no-validate"])
    lines = err.getvalue().strip().splitlines()
    if code in (1, 2, 3) and len(lines) == 1 and lines[0].startswith("graphopt: error: "):
        # e.g. a damaged value_info that contradicts inference: the passes replaced it, a plain
        # round trip keeps it and the checker refuses the result. Clean, and the weights were
        # compared above.
        return "ok", f"plain round trip refused cleanly: {lines[0]}"[:300]
    if code != 0:
        return "internal error", f"`-p none`: exit {code}: {' '.join(lines)[-300:]}"
    written = {t.name: t for t in onnx.load(plain).graph.initializer}
    for t in ref.graph.initializer:
        w = written.get(t.name)
        if w is None:
            return "disagreement", f"`-p none` dropped initializer {t.name!r}"
        a, b = numpy_helper.to_array(t), numpy_helper.to_array(w)
        if a.dtype != b.dtype or a.shape != b.shape or (
                a.tolist() != b.tolist() if a.dtype == object else a.tobytes() != b.tobytes()):
            return "disagreement", f"`-p none` wrote initializer {t.name!r} with other values than onnx.load reads"
    return "ok", ""


def _worker(conn, workdir: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:  # a damaged file must never make graphopt eat the machine: cap it, and count hitting the cap
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # onnxruntime's own log lines (the CLI's message is captured in Python)
    import graphopt.cli.main  # noqa: F401 - import once, not per task
    import graphopt.cli.optimize  # noqa: F401
    while True:
        task = conn.recv()
        if task is None:
            return
        idx, data = task
        d = tempfile.mkdtemp(dir=workdir)
        try:
            path = os.path.join(d, "in.onnx")
            with open(path, "wb") as f:
                f.write(data)
            outdir = os.path.join(d, "out")
            os.mkdir(outdir)
            res = run_one(path, os.path.join(outdir, "out.onnx"))
        finally:
            shutil.rmtree(d, ignore_errors=True)
        conn.send((idx, res))


class Worker:
    def __init__(self, workdir: str):
        self.workdir = workdir
        self.start()

    def start(self):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, self.workdir), daemon=True)
        self.proc.start()
        child.close()

    def run(self, idx: int, data: bytes, timeout: float) -> dict:
        self.conn.send((idx, data))
        if self.conn.poll(timeout):
            try:
                return self.conn.recv()[1]
            except EOFError:
                pass
            status = "crash"
        else:
            status = "timeout"
        code = self.proc.exitcode
        self.proc.kill()
        self.proc.join()
        self.start()
        return {"status": status, "exit": code, "detail": f"worker {'exit ' + str(code) if status == 'crash' else 'timed out'}"}

    def stop(self):
        with contextlib.suppress(Exception):
            self.conn.send(None)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


STATUSES = ("ok", "clean error", "internal error", "disagreement", "crash", "timeout")


def generate(count: int, seed: int, include_zoo: bool = True, models: Optional[dict] = None):
    """The mutated files, deterministic in `seed`: (index, base model, mutation, bytes)."""
    models = models or base_models(include_zoo)
    names = sorted(models)
    weights = [weight(n, models[n]) for n in names]
    for i in range(count):
        rng = random.Random(f"{seed}:{i}")
        name = rng.choices(names, weights=weights)[0]
        data, what = mutate(models[name], rng)
        yield i, name, what, data


def fuzz(count: int, seed: int, jobs: int = 2, timeout: float = 120.0, include_zoo: bool = True,
         models: Optional[dict] = None, save_dir: Optional[str] = None, progress: bool = False) -> dict:
    import threading

    cases = list(generate(count, seed, include_zoo, models))
    results: list[Optional[dict]] = [None] * len(cases)
    workdir = tempfile.mkdtemp(prefix="graphopt-mutate-")
    lock = threading.Lock()
    todo = iter(cases)
    done = [0]
    start = time.perf_counter()

    def loop():
        w = Worker(workdir)
        try:
            while True:
                with lock:
                    case = next(todo, None)
                if case is None:
                    return
                i, name, what, data = case
                t0 = time.perf_counter()
                res = w.run(i, data, timeout)
                res.update(index=i, model=name, mutation=what, seconds=round(time.perf_counter() - t0, 3))
                results[i] = res
                if save_dir and res["status"] not in ("ok", "clean error"):
                    os.makedirs(save_dir, exist_ok=True)
                    with open(os.path.join(save_dir, f"{seed}-{i}.onnx"), "wb") as f:
                        f.write(data)
                with lock:
                    done[0] += 1
                    if progress and (res["status"] not in ("ok", "clean error") or done[0] % 50 == 0):
                        print(f"[{done[0]}/{len(cases)} {time.perf_counter() - start:.0f}s] #{i} {name} "
                              f"{what}: {res['status']} {res.get('detail', '')[:160]}", file=sys.stderr, flush=True)
        finally:
            w.stop()

    threads = [threading.Thread(target=loop) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - start
    counts = {s: sum(r["status"] == s for r in results) for s in STATUSES}
    by_mutation: dict[str, dict[str, int]] = {}
    for r in results:
        kind = r["mutation"].split(" (")[0].split(" in ")[0].split(" of ")[0]
        kind = "duplicate field" if kind.startswith("duplicate") else kind
        kind = "set varint" if kind.startswith("set varint") else kind
        row = by_mutation.setdefault(kind, {s: 0 for s in STATUSES})
        row[r["status"]] += 1
    return {"count": len(results), "seed": seed, "jobs": jobs, "passes": PASSES, "seconds": round(elapsed, 1),
            "counts": counts, "by_mutation": by_mutation, "results": results}


def table(summary: dict) -> str:
    cols = ("total",) + STATUSES
    rows = [("mutation",) + cols]
    for kind in sorted(summary["by_mutation"]):
        row = summary["by_mutation"][kind]
        rows.append((kind, str(sum(row.values()))) + tuple(str(row[s]) for s in STATUSES))
    c = summary["counts"]
    rows.append(("**all**", str(summary["count"])) + tuple(str(c[s]) for s in STATUSES))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines.append(f"\n{summary['count']} mutations, seed {summary['seed']}, {summary['jobs']} jobs, "
                 f"`-p {summary['passes']}`: {summary['seconds']} s")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=900)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutated file (a mutated attribute can "
                    "make a zoo model legitimately slow to validate: Conv pads of 9999 took 135 s)")
    ap.add_argument("--json", help="write every result here")
    ap.add_argument("--no-zoo", action="store_true", help="leave out the 5 MB zoo models (faster)")
    ap.add_argument("--save", metavar="DIR", help="keep the files that failed here")
    args = ap.parse_args()
    summary = fuzz(args.count, args.seed, args.jobs, args.timeout, not args.no_zoo, save_dir=args.save,
                   progress=True)
    print(table(summary))
    refused = sum(r["status"] == "ok" and r.get("detail", "").startswith("plain round trip refused")
                  for r in summary["results"])
    if refused:
        print(f"({refused} of the ok files: `-p none` refused them cleanly, e.g. a declared shape that "
              f"contradicts inference, which the passes had replaced; their weights were compared on reading)")
    bad = [r for r in summary["results"] if r["status"] not in ("ok", "clean error")]
    for r in bad:
        print(f"#{r['index']} {r['model']} {r['mutation']}: {r['status']}: {r.get('detail', '')}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
