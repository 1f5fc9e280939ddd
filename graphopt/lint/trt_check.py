"""trt-check: what TensorRT's ONNX parser (per TensorRT version) rejects in a model, and what it
accepts at a cost, from the support matrix in `trt_matrix`.

Errors are what the parser rejects (an unsupported op or element type, an input that must be an
initializer, a rejected attribute value). Warnings are what it accepts but converts (DOUBLE,
INT64 on 8.6), does not enforce (the opset range, documented limits the parser does not check),
resolves through a plugin (custom domains), or what costs speed (run-time shape tensors, Q/DQ
TensorRT cannot fuse into a layer).

Every finding names its rule (`trt10.initializer-input.Slice.axes`), the TensorRT version and
the source of the rule. A value the parser wants constant is traced back: if it depends only on
constants and input shapes, promote-shape-inputs can make it an initializer ("run -p promote");
if it depends on a graph input's values (or on a data-dependent shape), promotion cannot help
and the finding says so.
"""

from __future__ import annotations

import sys
from typing import Optional

from graphopt.ir import Graph, Model, Node, Value, dtypes
from graphopt.lint import trt_matrix
from graphopt.lint.findings import Finding
from graphopt.lint.qdq_lint import unfused_qdq
from graphopt.lint.trt_inputs import initializer_inputs, shape_inputs

# ONNX element type -> the type names the matrix's per-op lists use
_TYPE_NAMES = {"FLOAT": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16", "FLOAT8E4M3FN": "FP8",
               "FLOAT4E2M1": "FP4"}

# inputs whose values decide an output's shape (for tracing data-dependent shapes)
_SHAPE_VALUE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "ConstantOfShape": (0,), "Slice": (1, 2, 3, 4), "Tile": (1,),
    "Resize": (1, 2, 3), "Upsample": (1,), "Pad": (1, 3), "TopK": (1,), "Split": (1,), "Range": (0, 1, 2),
    "OneHot": (1,), "NonZero": (0,), "Unique": (0,), "Compress": (1,), "NonMaxSuppression": (0, 1, 2, 3, 4),
    "Squeeze": (1,), "Unsqueeze": (1,), "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,),
    "ReduceMin": (1,), "ReduceProd": (1,), "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,),
    "ReduceLogSumExp": (1,), "ReduceSumSquare": (1,), "StringSplit": (0,), "CenterCropPad": (1,),
    "If": (0,), "Loop": (0, 1),
}
_OUTPUT_TYPED = {"ConstantOfShape", "EyeLike", "RandomNormalLike", "RandomUniformLike"}  # types name the output
_RANDOM = {"RandomUniform", "RandomNormal", "RandomUniformLike", "RandomNormalLike", "Bernoulli", "Multinomial"}

QDQ_SOURCE = ("TensorRT developer guide, explicit quantization: Q/DQ fusion and layer-placement "
              "recommendations (docs/ARCHITECTURE.md, TensorRT facts)")
PROMOTE = "run -p promote"
PINNED = "run -p promote with --input-shape pinning the dynamic input dims"


def trt_check(model: Model, trt: str = trt_matrix.DEFAULT) -> list[Finding]:
    """The findings for TensorRT `trt` ("8.6", "10.0", "10.1", "10.15"; "10" = the newest 10.x
    checked against the parser source)."""
    return _Checker(model, trt).run()


class _Checker:
    def __init__(self, model: Model, trt: str):
        self.model = model
        self.label = str(trt)
        self.version = trt_matrix.resolve(trt)
        self.m = trt_matrix.TRT[self.version]
        self.findings: list[Finding] = []
        self.trace = _Trace()
        self.functions = {f.name for f in model.functions}
        self.op_types: dict[tuple[str, str], Finding] = {}
        self.op_type_counts: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ reporting
    def add(self, severity: str, where: str, op_type: str, rule: str, message: str, src: str = "doc",
            source: str = "") -> None:
        if not source:
            s = trt_matrix.SOURCES[self.version]
            commit = (s.get("commit") or "unpinned")[:12]
            source = f"{s['repository'].split(' ')[0]} {s['ref'].split(' (')[0]} @ {commit} ({src})"
        self.findings.append(Finding(severity, where, op_type, message, rule=f"trt{self.label}.{rule}",
                                     version=self.version, source=source))

    @property
    def trt(self) -> str:
        return f"TensorRT {self.version}"

    # ------------------------------------------------------------------ checks
    def run(self) -> list[Finding]:
        self.check_opset()
        self.check_types()
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old, 20000 + 8 * self.model.graph.count_nodes()))
        try:
            for g in self.model.graph.walk():
                for node in g.toposort():
                    self.check_node(g, node)
                self.check_qdq(g)
        finally:
            sys.setrecursionlimit(old)
        for key, f in self.op_types.items():
            n = self.op_type_counts[key]
            if n > 1:
                i = self.findings.index(f)
                self.findings[i] = Finding(f.severity, f.node, f.op_type, f"{f.message} ({n} {key[0]} nodes on "
                                           f"{key[1]}; this is the first)", f.rule, f.version, f.source)
        return self.findings

    def check_qdq(self, g: Graph) -> None:
        """Q/DQ TensorRT cannot fuse into a layer: each runs as a layer of its own and the op after
        it in float, which costs speed (qdq_lint.unfused_qdq)."""
        if not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in g.nodes):
            return
        for kind, node, message in unfused_qdq(g):
            self.add("warning", node.label, node.op_type, f"qdq.{kind}", f"{message} (costs speed)",
                     source=QDQ_SOURCE)

    def check_opset(self) -> None:
        lo, hi = self.m["opsets"]
        opset = self.model.opset
        if not lo <= opset <= hi:
            self.add("warning", "", "model", "opset-range",
                     f"opset {opset} is outside the range {self.trt} documents ({lo} to {hi}); the parser does "
                     "not enforce it, but ops newer than the documented range may be imported wrongly or rejected",
                     "doc")

    def check_types(self) -> None:
        policies = self.m["dtypes"]
        native = set(policies["native"])
        seen: dict[str, list[str]] = {}
        io: dict[str, list[str]] = {}
        for g in self.model.graph.walk():
            ios = set(map(id, g.inputs + g.outputs)) if g is self.model.graph else set()
            values = list(g.inputs) + [v for v in g.initializers if v not in g.inputs]
            values += [v for n in g.nodes for v in n.outputs if v is not None]
            for v in values:
                if v.dtype is None or v.type_proto is not None or v.dtype == 0:
                    continue
                name = dtypes.name(v.dtype)
                seen.setdefault(name, []).append(v.name)
                if id(v) in ios:
                    io.setdefault(name, []).append(v.name)
        for name, names in sorted(seen.items()):
            policy = policies.get(name)
            if policy is None:
                policy = {"policy": "native"} if name in native else policies["other"]
            kind = policy["policy"]
            eg = ", ".join(repr(n) for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            if kind == "error":
                self.add("error", "", "tensor", f"dtype.{name}",
                         f"{len(names)} {name} tensors ({eg}): {self.trt} rejects this element type. {policy['msg']}",
                         "doc+code")
            elif kind == "cast_down":
                bindings = io.get(name)
                if name == "INT64":  # shape tensors everywhere: only what the cast changes is worth a word
                    names = (bindings or []) + self.out_of_int32_range()
                    if not names:
                        continue
                    eg = ", ".join(repr(n) for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3
                                                                 else "")
                extra = (f"; graph inputs/outputs {', '.join(map(repr, bindings))} become {policy['to']} bindings "
                         "(the engine's interface changes)") if bindings else ""
                self.add("warning", "", "tensor", f"dtype.{name}",
                         f"{len(names)} {name} tensors ({eg}) are cast down to {policy['to']} by the parser, "
                         f"values clamped to its range{extra}", "code")
            elif kind == "io_only":
                inner = [n for n in names if n not in io.get(name, [])]
                if inner:
                    self.add("warning", "", "tensor", f"dtype.{name}",
                             f"{len(inner)} {name} tensors inside the graph ({', '.join(map(repr, inner[:3]))}): "
                             f"{policy['msg']}", "code")

    def out_of_int32_range(self) -> list[str]:
        """INT64 initializers with values INT32 cannot hold (INT64's own limits, the "to the end"
        sentinel of Slice, clamp harmlessly)."""
        import numpy as np

        lo, hi, limits = -2 ** 31, 2 ** 31 - 1, (np.iinfo(np.int64).min, np.iinfo(np.int64).max)
        out = []
        for g in self.model.graph.walk():
            for v in g.initializers:
                if v.dtype == dtypes.DataType.INT64:
                    a = v.const.numpy()
                    a = a[(a != limits[0]) & (a != limits[1])]
                    if a.size and (a.min() < lo or a.max() > hi):
                        out.append(v.name)
        return out

    def check_node(self, g: Graph, node: Node) -> None:
        where = node.label
        op = node.op_type
        if not node.is_standard:
            if op in self.m["custom_ops"]["builtin_custom_ops"]:
                return
            builtin = op in self.m["ops"] and self.m["ops"][op]["supported"]
            how = (f"the builtin {op} importer is used, not a plugin" if builtin else
                   f"it looks for a plugin registered as {op!r} (attributes plugin_version, plugin_namespace) "
                   "and rejects the node if none is loaded")
            self.add("warning", where, op, f"custom-domain.{op}",
                     f"domain {node.domain!r}: {self.trt}'s parser ignores the domain and dispatches on the op "
                     f"type alone: {how}", "code")
            return
        spec = self.m["ops"].get(op)
        if spec is None:
            if self.version != "8.6" and op in self.functions:
                return  # 10.x inlines a model-local function of that name
            self.add("error", where, op, f"unsupported-op.{op}",
                     f"{self.trt} has no importer for {op}: the parser rejects it unless a plugin named {op!r} is "
                     "loaded", "doc")
            return
        if not spec["supported"]:
            self.add("error", where, op, f"unsupported-op.{op}", f"{op} is not supported by {self.trt}'s ONNX parser",
                     "doc+code")
            return
        self.check_op_types(node, spec)
        self.check_inputs(g, node, spec)
        for rec in spec["restrictions"]:
            if not _in_opsets(rec, self.model.opset):
                continue
            kind = rec["kind"]
            if kind == "attribute":
                self.check_attribute(node, rec)
            elif kind == "limit":
                self.check_limit(g, node, rec)
            elif kind == "unsupported_input":
                i = rec["input"]
                if i < len(node.inputs) and node.inputs[i] is not None:
                    self.add("error", where, op, f"unsupported-input.{op}.{rec['name']}",
                             f"{rec['msg']} ({self.trt} rejects the node; drop the input, or target TensorRT 10)",
                             rec["src"])
            elif kind == "unsupported_output":
                i = rec["output"]
                v = node.outputs[i] if i < len(node.outputs) else None
                if v is not None and v.name:
                    used = g.has_uses(v)
                    self.add("error" if used else "warning", where, op, f"unsupported-output.{op}.{rec['name']}",
                             rec["msg"] + ("" if used else " It is unused: remove it (run -p dce)"), rec["src"])
            elif kind == "runtime_input":
                i = rec["input"]
                if i < len(node.inputs) and node.inputs[i] is not None and _is_initializer(g, node.inputs[i]):
                    self.add("error", where, op, f"runtime-input.{op}.{rec['name']}", rec["msg"], rec["src"])

    def check_op_types(self, node: Node, spec: dict) -> None:
        types = spec["types"]
        if node.op_type in _OUTPUT_TYPED:
            v = node.outputs[0] if node.outputs else None
        else:
            v = next((x for x in node.inputs if x is not None), None) or next(
                (x for x in node.outputs if x is not None), None)
        if not types or v is None or v.dtype in (None, 0) or v.type_proto is not None:
            return
        name = dtypes.name(v.dtype)
        policy = self.m["dtypes"].get(name, {})
        if policy.get("policy") == "cast_down":
            name = policy["to"]
        short = _TYPE_NAMES.get(name, name)
        if short in types or (short == "UINT8" and node.op_type in ("Cast", "DequantizeLinear")):
            return
        key = (node.op_type, short)
        if key in self.op_types:  # one finding per op and type: count the rest
            self.op_type_counts[key] += 1
            return
        self.op_type_counts[key] = 1
        self.add("warning", node.label, node.op_type, f"op-type.{node.op_type}.{short}",
                 f"{node.op_type} on {short} ({v.name!r}) is outside the types {self.trt} documents for it "
                 f"({', '.join(types)}; operators.md, which can be narrower than the importer): the parser may "
                 "reject it or the build may fail", "doc")
        self.op_types[key] = self.findings[-1]

    def check_inputs(self, g: Graph, node: Node, spec: dict) -> None:
        op, where, ins = node.op_type, node.label, node.inputs
        strict = {r["input"]: r for r in spec["restrictions"] if r["kind"] == "initializer_input"}
        for i, name in initializer_inputs(node, self.version).items():
            rec = strict.get(i, {"level": "parser", "msg": f"{op}: {name} must be an initializer/Constant.",
                                 "src": "doc+code"})
            if i >= len(ins) or ins[i] is None or not _in_opsets(rec, self.model.opset):
                continue
            if rec.get("level") == "builder":
                continue  # reported with the build-time inputs below
            v = ins[i]
            data = g.const_value(v)
            if data is None and v.const is not None:
                data = v.const.numpy()  # an initializer that is also a graph input: a weight to the parser
            if data is None:
                if rec.get("when") == "plugin_path_default":
                    extra = " (or build with the parser flag kNATIVE_INSTANCENORM)"
                else:
                    extra = ""
                self.add("error", where, op, f"initializer-input.{op}.{name}",
                         f"{name} is computed by other nodes; {self.trt}'s parser rejects the node unless it is an "
                         f"initializer or a Constant{extra}: {self.fix(v)}", rec["src"])
            elif rec.get("value") == "false" and bool(data.any() if hasattr(data, "any") else data):
                self.add("error", where, op, f"input-value.{op}.{name}",
                         f"{name} is true; {self.trt} imports inference graphs only", rec["src"])
        for i, name in shape_inputs(node, self.version).items():
            if i >= len(ins) or ins[i] is None or g.const_value(ins[i]) is not None or ins[i].const is not None:
                continue
            v = ins[i]
            if i in spec["build_time_inputs"]:
                rec = strict.get(i, {"src": "trt-layer"})
                self.add("warning", where, op, f"build-time-input.{op}.{name}",
                         f"{name} is computed at run time; the parser accepts it but the engine build fails unless "
                         f"TensorRT can fold it to a constant: {self.fix(v)}", rec["src"])
            else:
                self.add("warning", where, op, f"runtime-shape.{op}.{name}",
                         f"{name} is a run-time shape tensor: {self.trt} accepts it, but the shapes after it stay "
                         f"dynamic, which costs speed: {self.fix(v)}", "code")

    def fix(self, v: Value) -> str:
        kind, why = self.trace.value(v)
        if kind == "data":
            return f"it depends on {why}, so promotion cannot make it a constant"
        if kind == "shape":
            return f"it depends on the dynamic shape of {why}; {PINNED}"
        return f"it depends only on constants and static shapes; {PROMOTE}"

    def check_attribute(self, node: Node, rec: dict) -> None:
        name = rec["name"]
        if name not in node.attrs:
            return
        value = node.attr(name)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if name in ("to", "dtype") and isinstance(value, int):
            value = dtypes.name(value)
        bad = False
        if rec.get("forbidden"):
            bad = True
        elif "equals" in rec:
            bad = value != rec["equals"]
        elif "allowed" in rec:
            allowed = {a.split("->")[0] if isinstance(a, str) else a for a in rec["allowed"]}
            if allowed == {"all_ones"}:
                bad = any(int(x) != 1 for x in (value or []))
            else:
                bad = value not in allowed
        if not bad:
            return
        enforced = rec.get("enforced_by_parser", True)
        self.add("error" if enforced else "warning", node.label, node.op_type, f"attribute.{node.op_type}.{name}",
                 f"{name}={value!r}: {rec['msg']}" + ("" if enforced else " (the parser does not check this)"),
                 rec["src"])

    def check_limit(self, g: Graph, node: Node, rec: dict) -> None:
        what, enforced = rec["what"], rec.get("enforced_by_parser", True)
        if what == "K" and node.op_type == "TopK":
            k = g.const_value(node.inputs[1]) if len(node.inputs) > 1 else None
            k = node.attr("k") if k is None and len(node.inputs) < 2 else k
            if k is not None and "max" in rec and int(k.max() if hasattr(k, "max") else k) > rec["max"]:
                self.add("error" if enforced else "warning", node.label, node.op_type, "limit.TopK.K",
                         f"K={int(k.max() if hasattr(k, 'max') else k)}: {rec['msg']}", rec["src"])
        elif what == "input_rank" and "allowed" in rec:
            x = node.inputs[0] if node.inputs else None
            if x is not None and x.shape is not None and len(x.shape) not in rec["allowed"]:
                self.add("error" if enforced else "warning", node.label, node.op_type,
                         f"limit.{node.op_type}.input_rank", f"rank {len(x.shape)}: {rec['msg']}", rec["src"])


def _in_opsets(rec: dict, opset: int) -> bool:
    lo, hi = rec.get("opsets") or (None, None)
    return (lo is None or opset >= lo) and (hi is None or opset <= hi)


def _is_initializer(g: Graph, v: Value) -> bool:
    return v.const is not None or g.const_value(v) is not None


class _Trace:
    """Where a value comes from: ("data", why) if it depends on a graph input's values or on a
    data-dependent shape; ("shape", why) if on a dynamic input shape only; (None, "") if on
    constants and static shapes only."""

    _RANK = {None: 0, "shape": 1, "data": 2}

    def __init__(self):
        self.memo: dict[tuple[int, str], tuple[Optional[str], str]] = {}

    def worst(self, results) -> tuple[Optional[str], str]:
        best: tuple[Optional[str], str] = (None, "")
        for r in results:
            if self._RANK[r[0]] > self._RANK[best[0]]:
                best = r
                if r[0] == "data":
                    break
        return best

    def value(self, v: Optional[Value]) -> tuple[Optional[str], str]:
        """What v's values depend on."""
        if v is None:
            return None, ""
        key = (id(v), "value")
        if key not in self.memo:
            self.memo[key] = (None, "")  # cycles (none in a valid graph) count as constant
            self.memo[key] = self._value(v)
        return self.memo[key]

    def _value(self, v: Value) -> tuple[Optional[str], str]:
        g = v.graph
        if v.is_capture:
            return self.value(g.capture_source(v))
        if v.const is not None or g.const_value(v) is not None:
            return None, ""
        node = g.producer(v)
        if node is None:
            if g.parent is None:
                return "data", f"the values of input {v.name!r}"
            return "data", f"{v.name!r}, an input of a {g.owner.op_type if g.owner else 'sub'} body"
        if node.op_type in ("Shape", "Size") and node.is_standard:
            return self.shape(node.inputs[0])
        if node.op_type in _RANDOM:
            return "data", f"random values ({node.op_type} {node.label!r})"
        return self.worst([self.value(x) for x in node.inputs + node.captures if x is not None])

    def shape(self, v: Optional[Value]) -> tuple[Optional[str], str]:
        """What v's shape depends on."""
        if v is None:
            return None, ""
        if v.shape is not None and all(isinstance(d, int) and d >= 0 for d in v.shape):
            return None, ""
        key = (id(v), "shape")
        if key not in self.memo:
            self.memo[key] = (None, "")
            self.memo[key] = self._shape(v)
        return self.memo[key]

    def _shape(self, v: Value) -> tuple[Optional[str], str]:
        g = v.graph
        if v.is_capture:
            return self.shape(g.capture_source(v))
        if v.const is not None or g.const_value(v) is not None:
            return None, ""
        node = g.producer(v)
        if node is None:
            if g.parent is None:
                return "shape", f"input {v.name!r}"
            return "data", f"{v.name!r}, an input of a {g.owner.op_type if g.owner else 'sub'} body"
        if node.op_type in ("Shape", "Size"):
            return None, ""  # a 1-D tensor of the input's rank
        by_value = _SHAPE_VALUE_INPUTS.get(node.op_type, ())
        if node.op_type in ("NonZero", "Unique", "Compress", "NonMaxSuppression", "StringSplit"):
            kind, _ = self.worst([self.value(node.inputs[i]) for i in by_value if i < len(node.inputs)])
            if kind == "data":
                return kind, f"the data-dependent output shape of {node.op_type} {node.label!r}"
        results = []
        for i, x in enumerate(node.inputs):
            if x is None:
                continue
            results.append(self.value(x) if i in by_value else self.shape(x))
        if node.op_type in ("If", "Loop", "Scan"):
            results += [self.value(x) for x in node.captures]
        return self.worst(results)
