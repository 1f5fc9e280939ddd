"""Shared helpers for the real-model corpus: seeding, weight re-drawing, exporting, checking."""

from __future__ import annotations

import importlib.metadata as md
import os
import random
import warnings

import numpy as np

SEED = 0


def version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "?"


def seed_all(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    import torch

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(False)


def randomize_norms(model, seed: int = SEED) -> dict:
    """Re-draw the values a freshly initialised model has that hide folding mistakes.

    - every all-zero parameter/buffer named ``*bias`` -> N(0, 0.05); any other all-zero parameter -> N(0, 0.02)
    - constant layer-scale parameters (``gamma``, ``ls``, ``layer_scale``) -> U(0.05, 0.2)
    - in every module whose class name contains "Norm" (BatchNorm*, FrozenBatchNorm2d, LayerNorm,
      GroupNorm, RMSNorm variants, LayerNorm2d, ...): running_mean -> N(0, 0.2),
      running_var -> U(0.5, 2.0), a constant (all-ones or all-zeros) weight -> 1 + N(0, 0.1), bias -> N(0, 0.05).
    Deterministic for a given ``seed`` and module order.
    """
    import torch

    g = torch.Generator().manual_seed(seed + 12345)
    counts = {"bias": 0, "norm_weight": 0, "running_mean": 0, "running_var": 0, "layer_scale": 0, "zero_param": 0}

    def normal(t, std):
        return torch.randn(t.shape, generator=g, dtype=torch.float32).to(t.dtype) * std

    with torch.no_grad():
        for mod in model.modules():
            is_norm = "norm" in type(mod).__name__.lower()
            for name, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
                if t is None or not t.is_floating_point() or t.numel() == 0:
                    continue
                if name == "running_mean" and is_norm:
                    t.copy_(normal(t, 0.2))
                    counts["running_mean"] += 1
                elif name == "running_var" and is_norm:
                    t.copy_((torch.rand(t.shape, generator=g) * 1.5 + 0.5).to(t.dtype))
                    counts["running_var"] += 1
                elif is_norm and name == "weight" and t.numel() > 1 and bool((t == t.flatten()[0]).all()):
                    # all ones, or all zeros (zero_init_last residual BN gammas, which would make a
                    # whole branch zero and let identical all-zero folded convs be deduplicated)
                    t.copy_(1.0 + normal(t, 0.1))
                    counts["norm_weight"] += 1
                elif name.endswith("bias") and bool((t == 0).all()):
                    t.copy_(normal(t, 0.05))
                    counts["bias"] += 1
                elif ("gamma" in name or name in ("ls", "layer_scale", "scale")) and t.numel() > 1 \
                        and bool((t == t.flatten()[0]).all()):
                    # layer-scale initialised to a constant (1e-6, 1e-5, ...): make it a real per-channel scale
                    t.copy_((torch.rand(t.shape, generator=g) * 0.15 + 0.05).to(t.dtype))
                    counts["layer_scale"] += 1
                elif isinstance(t, torch.nn.Parameter) and t.numel() > 1 and bool((t == 0).all()):
                    t.copy_(normal(t, 0.02))
                    counts["zero_param"] += 1
    return counts


def export_torchscript(model, args, path, input_names, output_names, dynamic_axes, opset=17, **kw):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
            **kw,
        )


def export_dynamo(model, args, path, input_names, output_names, dynamic_shapes, opset=18, kwargs=None):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(
            model,
            tuple(args),
            kwargs=kwargs,
            dynamo=True,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    prog.save(str(path), external_data=False)


# ---------------------------------------------------------------- checking

_NP = {
    "str": np.str_,
    "float32": np.float32,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "bool": np.bool_,
    "uint8": np.uint8,
}


def make_inputs(spec: list[dict], seed: int = SEED) -> dict:
    """Inputs that make sense for the model, from the manifest's input spec."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in spec:
        shape = inp["sample_shape"]
        dt = _NP[inp["dtype"]]
        kind = inp.get("kind", "normal")
        if kind == "ids":
            a = rng.integers(inp["low"], inp["high"], size=shape).astype(dt)
        elif kind == "mask":
            a = np.ones(shape, dtype=dt)
            if len(shape) == 2 and shape[1] > 2:  # right-padding on the last row
                a[-1, shape[1] - max(1, shape[1] // 4):] = 0
        elif kind == "segment":
            a = np.zeros(shape, dtype=dt)
            if len(shape) == 2:
                a[:, shape[1] // 2:] = 1
        elif kind == "positions":
            a = np.broadcast_to(np.arange(shape[-1], dtype=dt), shape).copy()
        elif kind == "index":  # e.g. a GNN's edge_index: values in [0, high)
            a = rng.integers(0, inp["high"], size=shape).astype(dt)
        elif kind == "const":
            a = np.full(shape, inp["value"], dtype=dt)
        elif kind == "choice":  # e.g. a string category column
            a = rng.choice(np.array(inp["values"], dtype=dt), size=shape)
        elif kind == "image01":
            a = rng.random(size=shape, dtype=np.float32).astype(dt)
        elif kind == "image255":
            a = (rng.random(size=shape, dtype=np.float32) * 255).astype(dt)
        else:
            a = rng.standard_normal(size=shape, dtype=np.float32).astype(dt)
        feeds[inp["name"]] = a
    return feeds


def graph_stats(path) -> dict:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    ops: dict[str, int] = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    neg1 = []
    for vi in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            for d in t.shape.dim:
                if d.HasField("dim_value") and d.dim_value < 0:
                    neg1.append(vi.name)
                    break
    ios = []
    inits = {i.name for i in m.graph.initializer}
    for kind, vals in (("input", m.graph.input), ("output", m.graph.output)):
        for vi in vals:
            if vi.name in inits:
                continue
            t = vi.type.tensor_type
            dims = []
            for d in t.shape.dim:
                if d.HasField("dim_value"):
                    dims.append(d.dim_value)
                elif d.HasField("dim_param"):
                    dims.append(d.dim_param)
                else:
                    dims.append("?")
            ios.append({"io": kind, "name": vi.name, "elem_type": onnx.TensorProto.DataType.Name(t.elem_type), "shape": dims})
    return {
        "nodes": len(m.graph.node),
        "initializers": len(m.graph.initializer),
        "opsets": {o.domain or "ai.onnx": o.version for o in m.opset_import},
        "ir_version": m.ir_version,
        "producer": f"{m.producer_name} {m.producer_version}".strip(),
        "op_types": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "graph_io": ios,
        "negative_dim_values": neg1,
        "size_bytes": os.path.getsize(path),
    }


def check_model(path, spec: list[dict] | None) -> dict:
    import onnx
    import onnxruntime as ort

    res = {"onnx_checker": None, "ort_run": None}
    try:
        onnx.checker.check_model(str(path))
        res["onnx_checker"] = "pass"
    except Exception as e:  # noqa: BLE001
        res["onnx_checker"] = f"fail: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
    try:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        if spec is None:
            spec = []
            for i in sess.get_inputs():
                shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
                dt = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32"}[i.type]
                spec.append({"name": i.name, "dtype": dt, "sample_shape": shape})
        feeds = make_inputs(spec)
        outs = sess.run(None, feeds)
        summ = []
        for o, v in zip(sess.get_outputs(), outs):
            v = np.asarray(v)
            finite = bool(np.isfinite(v).all()) if v.dtype.kind == "f" else True
            summ.append({"name": o.name, "shape": list(v.shape), "dtype": str(v.dtype), "finite": finite})
        res["ort_run"] = "pass"
        res["ort_outputs"] = summ
    except Exception as e:  # noqa: BLE001
        res["ort_run"] = f"fail: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    return res
