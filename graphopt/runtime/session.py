"""onnxruntime sessions for graphopt: validation, calibration and accuracy checks all load
models the same way (weights referenced where they already lie, see onnx_io.emit.ort_view).
"""

from __future__ import annotations

import os
import zlib
from typing import Optional, Sequence

import numpy as np
import onnx

from graphopt.errors import GraphoptError
from graphopt.ir.graph import STANDARD_DOMAINS
from graphopt.onnx_io.emit import OrtModel

_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
              "Bernoulli", "Multinomial", "Dropout"}  # Dropout draws its mask in training mode




def seeded_random_ops(proto: onnx.ModelProto) -> bool:
    """Give every unseeded Random* op a seed derived from its output name, so the input and
    the output model draw the same numbers. Returns whether anything changed."""
    changed = False
    opset = next((o.version for o in proto.opset_import if o.domain in STANDARD_DOMAINS), 1)
    seedable = RANDOM_OPS if opset >= 12 else RANDOM_OPS - {"Dropout"}

    def visit(graph: onnx.GraphProto) -> None:
        nonlocal changed
        for n in graph.node:
            if n.op_type in seedable and n.domain in STANDARD_DOMAINS and not any(a.name == "seed" for a in n.attribute):
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


# Element types numpy cannot hand to or take from onnxruntime: such inputs are fed as float32
# (int8 for the integer ones) and such outputs read as float32 / int8, through Casts the
# session adds around the model (the same for the input and the output model of a validation).
NO_NUMPY = {"tensor(bfloat16)", "tensor(float8e4m3fn)", "tensor(float8e4m3fnuz)", "tensor(float8e5m2)",
            "tensor(float8e5m2fnuz)", "tensor(float8e8m0)", "tensor(float4e2m1)", "tensor(int4)", "tensor(uint4)",
            "tensor(int2)", "tensor(uint2)"}


def _cast_interface(proto: onnx.ModelProto, exotic: dict[str, str]) -> dict[str, str]:
    """Cast the graph inputs and outputs named in `exotic` from / to float32 (int8 for integer
    types) in place; returns name -> the name the session uses for it."""
    from onnx import TensorProto, helper

    g = proto.graph
    renamed = {}
    for vi in g.input:
        if vi.name not in exotic:
            continue
        inner = vi.name + "__graphopt_cast"
        for n in _all_nodes(g):
            n.input[:] = [inner if x == vi.name else x for x in n.input]
        for o in g.output:
            if o.name == vi.name:
                o.name = inner
        target = vi.type.tensor_type.elem_type
        vi.type.tensor_type.elem_type = TensorProto.INT8 if "int" in exotic[vi.name] else TensorProto.FLOAT
        g.node.insert(0, helper.make_node("Cast", [vi.name], [inner], to=target))
        renamed[vi.name] = vi.name
    for vi in g.output:
        if vi.name not in exotic and vi.name.removesuffix("__graphopt_cast") not in exotic:
            continue
        outer = vi.name + "__graphopt_read"
        to = TensorProto.INT8 if "int" in exotic.get(vi.name, exotic.get(vi.name.removesuffix("__graphopt_cast"), "")) \
            else TensorProto.FLOAT
        g.node.append(helper.make_node("Cast", [vi.name], [outer], to=to))
        renamed[vi.name.removesuffix("__graphopt_cast")] = outer
        vi.name = outer
        vi.type.tensor_type.elem_type = to
    return renamed


def _all_nodes(g):
    for n in g.node:
        yield n
        for a in n.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                yield from _all_nodes(sub)


def usable_cores() -> int:
    """Cores this process may run on: how many sessions or binning threads run at once."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


class Session:
    """One onnxruntime CPU session. `optimized=False` (validation) turns every graph
    optimization off; accuracy checks of quantized models use the basic level (True: the Q/DQ
    pairs stay as written); "all" (calibration of a float model) adds fusions and onnxruntime's
    blocked Conv layout, which change the requested tensors by rounding only."""

    def __init__(self, model: "OrtModel | str", *, optimized: "bool | str" = False, has_random_ops: bool = False,
                 intra_threads: int = 0, arena: bool = False):
        import onnxruntime as ort

        if isinstance(model, str):
            model = OrtModel(path=model)
        self.label = model.label
        opts = ort.SessionOptions()
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized == "all" else
                                         ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if optimized
                                         else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        opts.log_severity_level = 4  # failures reach the user as one-line errors, not onnxruntime logs
        # a few batches per session: return memory promptly (`arena`: a small model run many times)
        opts.enable_cpu_mem_arena = arena
        opts.enable_mem_pattern = False
        # prepacking copies every MatMul/Conv weight into a second, packed buffer: twice the memory
        # for a session that runs a few batches
        opts.add_session_config_entry("session.disable_prepacking", "1")
        if intra_threads:
            opts.intra_op_num_threads = intra_threads
        source: str | bytes = model.path if model.data is None else model.data
        folder = model.folder or (os.path.dirname(os.path.abspath(model.path)) if model.path else None)
        if has_random_ops:
            proto = (onnx.load_model(model.path, load_external_data=False) if model.data is None
                     else onnx.ModelProto.FromString(model.data))
            seeded_random_ops(proto)
            source = proto.SerializeToString()
        if isinstance(source, bytes) and folder:
            opts.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
        try:
            self._sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises several unrelated types
            raise GraphoptError(f"onnxruntime cannot load {self.label}: {first_line(e)}") from None
        self.output_names = [o.name for o in self._sess.get_outputs()]
        self._renamed: dict[str, str] = {}  # output name -> the name of its Cast to a numpy type
        exotic = {i.name: i.type for i in self._sess.get_inputs() + self._sess.get_outputs() if i.type in NO_NUMPY}
        if exotic:  # numpy cannot pass or hold these: the interface is cast to types it can
            proto = (onnx.load_model(model.path, load_external_data=False) if isinstance(source, str)
                     else onnx.ModelProto.FromString(source))
            self._renamed = _cast_interface(proto, exotic)
            try:
                self._sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            except Exception as e:
                raise GraphoptError(f"onnxruntime cannot load {self.label}: {first_line(e)}") from None
        # a float input the model takes in another precision (fp16{keep_io=false}) gets the feed cast
        self._float_inputs = {i.name: _FLOAT_TYPES[i.type] for i in self._sess.get_inputs() if i.type in _FLOAT_TYPES}

    def run(self, feed: dict[str, np.ndarray], names: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
        names = list(names or self.output_names)
        feed = {k: (v.astype(self._float_inputs[k]) if k in self._float_inputs and isinstance(v, np.ndarray)
                    and v.dtype.kind == "f" and v.dtype != self._float_inputs[k] else v) for k, v in feed.items()}
        if self._renamed:  # inputs of types numpy cannot hand over arrive as float32 / int8
            feed = {k: (v.astype(np.int8 if v.dtype.kind in "iu" else np.float32)
                        if isinstance(v, np.ndarray) and k in self._renamed else v) for k, v in feed.items()}
        try:
            outs = self._sess.run([self._renamed.get(n, n) for n in names], feed)
        except Exception as e:
            raise GraphoptError(f"onnxruntime failed to run {self.label}: {first_line(e)}") from None
        return dict(zip(names, outs))

    def close(self) -> None:
        self._sess = None
        release_freed_memory()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_model(model: "OrtModel | str", feeds: list[dict[str, np.ndarray]], *, has_random_ops: bool = False,
              optimized: bool = False) -> list[dict[str, np.ndarray]]:
    """Run one model on every feed in one session (optimizations off unless `optimized`)."""
    with Session(model, has_random_ops=has_random_ops, optimized=optimized) as sess:
        return [sess.run(feed) for feed in feeds]


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


def first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
