"""Build graphopt's golden corpus, seeded and without network access.

    python golden_models/build.py            # small models + reference outputs (committed)
    python golden_models/build.py --large    # also the large zoo models into golden_models/built/
    python golden_models/build.py --torch    # re-export the PyTorch models (needs the dev extra)

Sources:
- zoo/: the onnx package's backend 'light' models (opset 9, IR v3) with every ConstantOfShape
  weight placeholder replaced by a seeded random initializer (He-scaled for conv/gemm weights,
  sensible BatchNorm statistics). Some keep their initializers listed as graph inputs, as the
  original IR v3 files do; the others drop that listing (IR v4).
- torch/: small models exported from PyTorch with the TorchScript and the dynamo exporter
  (dynamic batch, BatchNorm kept, a `x.view(x.size(0), -1)` head; a small transformer encoder
  with token ids and an attention mask).
- control_flow.onnx: If and Loop subgraphs that read outer values, an If nested in a Loop.
- external/: a model whose weights live in an external data file.

Each committed model has `<model>.ref.npz`: seeded inputs (in_*) and onnxruntime's outputs
(out_*), graph optimizations off.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261124


@dataclass(frozen=True)
class GoldenModel:
    name: str
    path: str  # relative to golden_models/
    large: bool = False  # built on demand, not committed
    input_shapes: tuple = ()  # --input-shape specs validation should use, if any


ZOO_SMALL = ["squeezenet", "shufflenet"]
ZOO_MEDIUM = ["inception_v1", "densenet121", "inception_v2", "resnet50"]
ZOO_LARGE = ["bvlc_alexnet", "zfnet512", "vgg19"]
# IR v3 style (initializers also listed as graph inputs) is kept for these; the rest drop it.
KEEP_INITIALIZER_INPUTS = {"squeezenet", "densenet121", "inception_v1", "bvlc_alexnet", "zfnet512"}

CORPUS = (
    [GoldenModel(n, f"zoo/{n}.onnx") for n in ZOO_SMALL]
    + [GoldenModel(n, f"built/{n}.onnx", large=False) for n in ZOO_MEDIUM]
    + [GoldenModel(n, f"built/{n}.onnx", large=True) for n in ZOO_LARGE]
    + [GoldenModel("cnn_torchscript", "torch/cnn_torchscript.onnx"),
       GoldenModel("cnn_dynamo", "torch/cnn_dynamo.onnx"),
       GoldenModel("encoder_torchscript", "torch/encoder_torchscript.onnx"),
       GoldenModel("encoder_dynamo", "torch/encoder_dynamo.onnx"),
       GoldenModel("mobilenetv3_block_torchscript", "torch/mobilenetv3_block_torchscript.onnx"),
       GoldenModel("mobilenetv3_block_dynamo", "torch/mobilenetv3_block_dynamo.onnx"),
       GoldenModel("control_flow", "control_flow.onnx"),
       GoldenModel("mlp_external", "external/mlp_external.onnx")]
)


def model_path(m: GoldenModel, root: str = HERE) -> str:
    return os.path.join(root, m.path)


def is_committed(m: GoldenModel) -> bool:
    return not m.path.startswith("built/")


# ================================================================================= zoo
def light_model_path(name: str) -> str:
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", f"light_{name}.onnx")


def build_zoo(name: str, out_path: str) -> None:
    m = onnx.load(light_model_path(name))
    g = m.graph
    rng = np.random.default_rng([SEED, sum(name.encode())])
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for n in g.node:
        for i, x in enumerate(n.input):
            consumers.setdefault(x, []).append((n, i))
    keep_nodes, new_inits, drop = [], [], set()
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            shape = tuple(int(d) for d in numpy_helper.to_array(inits[n.input[0]]))
            weight = _random_weight(rng, shape, consumers.get(n.output[0], []))
            new_inits.append(numpy_helper.from_array(weight, n.output[0]))
            drop.add(n.input[0])
        else:
            keep_nodes.append(n)
    keep_inputs = name in KEEP_INITIALIZER_INPUTS
    init_names = {t.name for t in new_inits} | set(inits)
    real_inputs = [vi for vi in g.input if vi.name not in drop and (keep_inputs or vi.name not in init_names)]
    if keep_inputs:  # IR v3: every initializer is also a graph input, typed
        listed = {vi.name for vi in real_inputs}
        for t in new_inits:
            if t.name not in listed:
                real_inputs.append(helper.make_tensor_value_info(t.name, t.data_type, t.dims))
    else:
        m.ir_version = 4
    del g.node[:]
    g.node.extend(keep_nodes)
    del g.input[:]
    g.input.extend(real_inputs)
    old = [t for t in g.initializer if t.name not in drop]
    del g.initializer[:]
    g.initializer.extend(old + new_inits)
    _calibrate_logits(m, rng)
    onnx.checker.check_model(m)
    _save(m, out_path)


def _calibrate_logits(m: onnx.ModelProto, rng) -> None:
    """Scale the last linear layer so the logits entering Softmax have a std near 2: random
    weights otherwise saturate Softmax into one-hot outputs, and validation would compare
    nothing but zeros and ones."""
    import onnxruntime as ort

    g = m.graph
    producers = {o: n for n in g.node for o in n.output}
    softmax = next((n for n in g.node if n.op_type == "Softmax"), None)
    if softmax is None:
        return
    layer, v = None, softmax.input[0]
    while v in producers:
        n = producers[v]
        if n.op_type in ("Conv", "Gemm"):
            layer = n
            break
        if n.op_type not in ("Relu", "AveragePool", "GlobalAveragePool", "MaxPool", "Reshape", "Flatten", "Dropout"):
            return
        v = n.input[0]
    if layer is None:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    probe.graph.output.append(helper.make_value_info(softmax.input[0], onnx.TypeProto()))
    del probe.graph.output[0]
    probe.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = rng.standard_normal([d if isinstance(d, int) else 1 for d in inp.shape]).astype(np.float32)
    std = float(np.std(sess.run(None, {inp.name: x})[0]))
    if not np.isfinite(std) or std == 0:
        return
    inits = {t.name: i for i, t in enumerate(g.initializer)}
    for name in layer.input[1:3]:
        while name not in inits and name in producers and producers[name].op_type == "Reshape":
            name = producers[name].input[0]  # weights reshaped on the fly
        i = inits[name]
        g.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(g.initializer[i]) * np.float32(2.0 / std), name))


def _random_weight(rng, shape, uses) -> np.ndarray:
    op, idx = (uses[0][0].op_type, uses[0][1]) if uses else ("", 0)
    size = int(np.prod(shape)) if shape else 1
    if op in ("Conv", "Gemm", "MatMul") and idx == 1:
        fan_in = size // shape[0] if op == "Conv" else (shape[1] if len(shape) > 1 else size)
        if op == "Gemm" and uses[0][0].attribute and any(a.name == "transB" and a.i == 0 for a in uses[0][0].attribute):
            fan_in = shape[0]
        w = rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))
    elif op == "BatchNormalization" and idx in (1, 4):  # scale, variance: positive, near 1
        w = rng.uniform(0.5, 1.5, shape)
    elif op == "Mul":  # Caffe 'scale' layers
        w = rng.uniform(0.5, 1.5, shape)
    else:  # biases, BatchNorm bias and mean, Add
        w = rng.uniform(-0.1, 0.1, shape)
    return w.astype(np.float32)


# ================================================================================= torch
def build_torch(out_dir: str) -> None:
    """Export the PyTorch models with both exporters (needs torch and onnxscript)."""
    import warnings

    import torch
    import torch.nn as nn

    warnings.filterwarnings("ignore")
    torch.manual_seed(SEED)

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
            self.fc = nn.Linear(32 * 8 * 8, 10)

        def forward(self, x):
            x = self.features(x)
            return self.fc(x.view(x.size(0), -1))

    class Encoder(nn.Module):
        """A small transformer encoder: token ids + attention mask, pre-norm blocks."""

        def __init__(self, vocab=16, d=32, heads=4, layers=2, max_len=64):
            super().__init__()
            self.heads = heads
            self.emb = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(torch.randn(max_len, d) * 0.02)
            self.blocks = nn.ModuleList()
            for _ in range(layers):
                self.blocks.append(nn.ModuleDict(dict(
                    ln1=nn.LayerNorm(d), qkv=nn.Linear(d, 3 * d), proj=nn.Linear(d, d),
                    ln2=nn.LayerNorm(d), ff1=nn.Linear(d, 4 * d), ff2=nn.Linear(4 * d, d))))
            self.norm = nn.LayerNorm(d)
            self.head = nn.Linear(d, 4)

        def forward(self, input_ids, attention_mask):
            b, t = input_ids.shape
            x = self.emb(input_ids) + self.pos[:t]
            keep = (attention_mask > 0)[:, None, None, :]
            for blk in self.blocks:
                h = blk["ln1"](x)
                q, k, v = blk["qkv"](h).chunk(3, dim=-1)
                split = lambda z: z.view(b, t, self.heads, -1).transpose(1, 2)
                q, k, v = split(q), split(k), split(v)
                att = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
                att = att.masked_fill(~keep, -1e4).softmax(-1)
                y = (att @ v).transpose(1, 2).reshape(b, t, -1)
                x = x + blk["proj"](y)
                x = x + blk["ff2"](torch.nn.functional.gelu(blk["ff1"](blk["ln2"](x))))
            return self.head(self.norm(x).mean(1))

    class MobileNetV3Block(nn.Module):
        """An inverted residual with squeeze-excite and h-swish, written the way MobileNetV3
        implementations do: x * relu6(x + 3) / 6."""

        def __init__(self, c=16, e=64):
            super().__init__()
            self.expand, self.bn1 = nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e)
            self.dw, self.bn2 = nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False), nn.BatchNorm2d(e)
            self.se_reduce, self.se_expand = nn.Conv2d(e, e // 4, 1), nn.Conv2d(e // 4, e, 1)
            self.project, self.bn3 = nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c)

        @staticmethod
        def hswish(x):
            return x * torch.nn.functional.relu6(x + 3.0) / 6.0

        @staticmethod
        def hsigmoid(x):
            return torch.nn.functional.relu6(x + 3.0) / 6.0

        def forward(self, x):
            h = self.hswish(self.bn1(self.expand(x)))
            h = self.hswish(self.bn2(self.dw(h)))
            s = h.mean((2, 3), keepdim=True)
            s = self.hsigmoid(self.se_expand(torch.relu(self.se_reduce(s))))
            return x + self.bn3(self.project(h * s))

    cnn = SmallCNN().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for mod in cnn.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    enc = Encoder().eval()
    mbv3 = MobileNetV3Block().eval()
    with torch.no_grad():
        for mod in mbv3.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 32, 32)
    ids = torch.randint(0, 16, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.int64)
    os.makedirs(out_dir, exist_ok=True)
    batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("seq", min=2, max=64)
    exports = [
        ("mobilenetv3_block", mbv3, (torch.randn(2, 16, 16, 16),), ["x"], ["y"], {"x": {0: "batch"}, "y": {0: "batch"}},
         {"x": {0: batch}}),
        ("cnn", cnn, (x,), ["x"], ["logits"], {"x": {0: "batch"}, "logits": {0: "batch"}}, {"x": {0: batch}}),
        ("encoder", enc, (ids, mask), ["input_ids", "attention_mask"], ["logits"],
         {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "logits": {0: "batch"}},
         {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}),
    ]
    for name, mod, args, ins, outs, axes, dyn in exports:
        ts = os.path.join(out_dir, f"{name}_torchscript.onnx")
        torch.onnx.export(mod, args, ts, dynamo=False, input_names=ins, output_names=outs, dynamic_axes=axes,
                          opset_version=17, do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL)
        dy = os.path.join(out_dir, f"{name}_dynamo.onnx")
        prog = torch.onnx.export(mod, args, dynamo=True, input_names=ins, output_names=outs,
                                 dynamic_shapes=dyn, optimize=False, verbose=False)
        prog.save(dy)
        for p in (ts, dy):  # re-save through onnx: inline data, no stray .data files
            _save(onnx.load(p), p)


# ================================================================================= control flow
CONTROL_FLOW = """
<ir_version: 8, opset_import: ["" : 17]>
control_flow (float[N, 4] x, bool use_relu, int64 trip) => (float[N, 4] y, float[N, 4] acc, float[K, N, 4] steps) {
    scale = Constant <value = float[4] {0.5, -1.0, 2.0, 0.25}> ()
    scaled = Mul (x, scale)
    y = If (use_relu) <
        then_branch = then_g () => (float[N, 4] t_out) {
            t_out = Relu (scaled)
        },
        else_branch = else_g () => (float[N, 4] e_out) {
            e_bias = Constant <value = float[4] {1.0, 2.0, 3.0, 4.0}> ()
            e_out = Add (scaled, e_bias)
        }
    >
    cond0 = Constant <value = bool {1}> ()
    acc, steps = Loop (trip, cond0, x) <
        body = loop_body (int64 i, bool c_in, float[N, 4] a_in) => (bool c_out, float[N, 4] a_out, float[N, 4] s_out) {
            c_out = Identity (c_in)
            i_f = Cast <to = 1> (i)
            odd_i = Mod (i, two)
            is_odd = Cast <to = 9> (odd_i)
            step = If (is_odd) <
                then_branch = odd_g () => (float[N, 4] o_out) {
                    o_out = Mul (a_in, scale)
                },
                else_branch = even_g () => (float[N, 4] ev_out) {
                    ev_out = Add (a_in, i_f)
                }
            >
            a_out = Add (step, scaled)
            s_out = Identity (a_out)
        }
    >
}
"""


def build_control_flow(out_path: str) -> None:
    text = CONTROL_FLOW.replace("cond0 = Constant", "two = Constant <value = int64 {2}> ()\n    cond0 = Constant")
    m = onnx.parser.parse_model(text)
    onnx.checker.check_model(m, full_check=True)
    _save(m, out_path)


# ================================================================================= external data
def build_external(out_path: str) -> None:
    rng = np.random.default_rng([SEED, 7])
    w1 = numpy_helper.from_array((rng.standard_normal((64, 128)) * 0.1).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.uniform(-0.1, 0.1, 128).astype(np.float32), "b1")
    w2 = numpy_helper.from_array((rng.standard_normal((128, 10)) * 0.1).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
             helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
             helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
             helper.make_node("MatMul", ["h2", "w2"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, "mlp_external", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], [w1, b1, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    data = os.path.basename(out_path) + ".data"
    for p in (out_path, os.path.join(os.path.dirname(out_path), data)):
        if os.path.exists(p):
            os.unlink(p)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    onnx.save_model(m, out_path, save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                    size_threshold=1024)


# ================================================================================= references
def reference_inputs(model_file: str, seed: int = SEED) -> dict[str, np.ndarray]:
    """Seeded inputs for a model (dynamic dims: batch 1 on axis 0, else 32; `trip` = 3)."""
    m = onnx.load(model_file, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (1 if i == 0 else 12) for i, d in enumerate(tt.shape.dim)]
        dt = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if dt == np.bool_:
            feeds[vi.name] = np.array(rng.random(shape) < 0.5)
        elif np.issubdtype(dt, np.integer):
            feeds[vi.name] = rng.integers(1 if vi.name == "trip" else 0, 4, size=shape).astype(dt)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(dt)
    return feeds


def run_reference(model_file: str, feeds: dict) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model_file, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def write_reference(model_file: str) -> None:
    feeds = reference_inputs(model_file)
    outs = run_reference(model_file, feeds)
    np.savez(model_file[:-len(".onnx")] + ".ref.npz", **{f"in_{k}": v for k, v in feeds.items()},
             **{f"out_{k}": v for k, v in outs.items()})


def _save(m: onnx.ModelProto, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(m.SerializeToString(deterministic=True))


# ================================================================================= driver
def build(m: GoldenModel, root: str = HERE) -> str:
    """Build one model (if missing) and return its path."""
    path = model_path(m, root)
    if os.path.exists(path):
        return path
    if m.path.startswith(("zoo/", "built/")):
        build_zoo(m.name, path)
    elif m.name == "control_flow":
        build_control_flow(path)
    elif m.name == "mlp_external":
        build_external(path)
    else:
        raise FileNotFoundError(f"{path} is exported from PyTorch: run `python golden_models/build.py --torch`")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", action="store_true", help="also build every model marked large")
    ap.add_argument("--torch", action="store_true", help="re-export the PyTorch models (dev extra)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild models that already exist")
    args = ap.parse_args(argv)
    if args.torch:
        build_torch(os.path.join(HERE, "torch"))
    for m in CORPUS:
        if m.large and not args.large:
            continue
        path = model_path(m)
        if args.rebuild and os.path.exists(path) and not m.path.startswith("torch/"):
            os.unlink(path)
        build(m)
        if is_committed(m) and (args.rebuild or args.torch or not os.path.exists(path[:-5] + ".ref.npz")):
            write_reference(path)
        print(f"{m.name:22s} {os.path.getsize(path) / 1e6:8.1f} MB  {m.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
