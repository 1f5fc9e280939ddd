"""Decoder-only transformers of any depth and width, built directly with onnx helpers (no
network, no PyTorch), weights in external data written tensor by tensor (never all in memory).

    python golden_models/decoder.py OUT.onnx --layers 20 --width 1536   # ~615M params, 2.5 GB
    python golden_models/decoder.py OUT.onnx --preset 2.4GB

The graph is what exporters emit for a GPT-style block: token + position embeddings (Gather),
then per layer LayerNormalization, q/k/v MatMul + bias, heads split with the exported
Shape->Gather->Concat->Reshape chain and Transpose, scaled dot-product attention with a causal
mask, the output projection, a residual Add, LayerNormalization, an FFN (MatMul + bias, GELU as
the Erf chain, MatMul + bias), a residual Add; a final LayerNormalization and the LM head.
Input `input_ids` [batch, seq] int64 (seq <= --max-seq), output `logits` [batch, seq, vocab].
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PRESETS = {  # (layers, width, vocab): about 0.1, 0.5 and 2.5 GB of float32 weights
    "0.1GB": (4, 512, 8192),
    "0.5GB": (8, 1024, 16384),
    "2.4GB": (20, 1536, 32000),
}


class _Weights:
    """Writes each initializer's bytes straight to the data file and keeps only a reference."""

    def __init__(self, data_path: str, seed: int):
        self.f = open(data_path, "wb")
        self.location = os.path.basename(data_path)
        self.rng = np.random.default_rng(seed)
        self.inits: list[onnx.TensorProto] = []
        self.params = 0

    def add(self, name: str, shape, scale: float = 0.02, value: float | None = None) -> str:
        if value is not None:
            data = np.full(shape, value, np.float32)
        else:
            data = (self.rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)
        offset = self.f.tell()
        self.f.write(data.tobytes())
        t = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.location), ("offset", str(offset)), ("length", str(data.nbytes))):
            t.external_data.add(key=k, value=v)
        self.inits.append(t)
        self.params += data.size
        return name

    def close(self) -> None:
        self.f.close()


def build(out_path: str, layers: int, width: int, vocab: int, heads: int = 0, max_seq: int = 128,
          seed: int = 0) -> int:
    """Write the model and its `.data` file; returns the parameter count."""
    heads = heads or max(1, width // 64)
    while width % heads:  # heads must split the width evenly
        heads -= 1
    head_dim = width // heads
    w = _Weights(out_path + ".data", seed)
    nodes: list[onnx.NodeProto] = []
    small: list[onnx.TensorProto] = []

    def const(name, array):
        small.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    const("zero", np.array([0], np.int64))
    const("one", np.array([1], np.int64))
    const("heads_dims", np.array([heads, head_dim], np.int64))
    const("width_dim", np.array([width], np.int64))
    const("scale", np.array(1.0 / math.sqrt(head_dim), np.float32))
    const("sqrt2", np.array(math.sqrt(2.0), np.float32))
    const("half", np.array(0.5, np.float32))
    const("unit", np.array(1.0, np.float32))
    mask = np.triu(np.full((max_seq, max_seq), -1e4, np.float32), k=1)
    const("causal", mask)

    shape = node("Shape", ["input_ids"], "ids_shape")
    batch = node("Gather", [shape, "zero"], "batch", axis=0)
    seq = node("Gather", [shape, "one"], "seq", axis=0)
    tok = node("Gather", [w.add("tok_emb", (vocab, width)), "input_ids"], "tok")
    pos_table = w.add("pos_emb", (max_seq, width))
    pos = node("Slice", [pos_table, "zero", seq, "zero"], "pos")  # the first seq rows
    x = node("Add", [tok, pos], "embed")
    mask_rows = node("Slice", ["causal", "zero", seq, "zero"], "mask_rows")
    mask_sq = node("Slice", [mask_rows, "zero", seq, "one"], "mask")
    split = node("Concat", [batch, seq, "heads_dims"], "split_shape", axis=0)
    merge = node("Concat", [batch, seq, "width_dim"], "merge_shape", axis=0)

    def linear(inp, prefix, n_in, n_out):
        mm = node("MatMul", [inp, w.add(f"{prefix}.weight", (n_in, n_out))], f"{prefix}.mm")
        return node("Add", [mm, w.add(f"{prefix}.bias", (n_out,), value=0.0)], f"{prefix}.out")

    def layer_norm(inp, prefix):
        return node("LayerNormalization", [inp, w.add(f"{prefix}.gamma", (width,), value=1.0),
                                           w.add(f"{prefix}.beta", (width,), value=0.0)], f"{prefix}.out", axis=-1)

    for i in range(layers):
        p = f"h{i}"
        h = layer_norm(x, f"{p}.ln1")
        q, k, v = (node("Transpose", [node("Reshape", [linear(h, f"{p}.{n}", width, width), split], f"{p}.{n}.split")],
                        f"{p}.{n}.heads", perm=[0, 2, 1, 3]) for n in ("q", "k", "v"))
        kt = node("Transpose", [k], f"{p}.kt", perm=[0, 1, 3, 2])
        scores = node("Mul", [node("MatMul", [q, kt], f"{p}.qk"), "scale"], f"{p}.scaled")
        probs = node("Softmax", [node("Add", [scores, mask_sq], f"{p}.masked")], f"{p}.probs", axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], f"{p}.ctx")], f"{p}.ctx.t", perm=[0, 2, 1, 3])
        attn = linear(node("Reshape", [ctx, merge], f"{p}.merged"), f"{p}.o", width, width)
        x = node("Add", [x, attn], f"{p}.res1")
        h = linear(layer_norm(x, f"{p}.ln2"), f"{p}.up", width, 4 * width)
        erf = node("Erf", [node("Div", [h, "sqrt2"], f"{p}.gelu.div")], f"{p}.gelu.erf")
        gelu = node("Mul", [node("Mul", [h, node("Add", [erf, "unit"], f"{p}.gelu.add")], f"{p}.gelu.mul"), "half"],
                    f"{p}.gelu")
        x = node("Add", [x, linear(gelu, f"{p}.down", 4 * width, width)], f"{p}.res2")
    logits = node("MatMul", [layer_norm(x, "ln_f"), w.add("lm_head", (width, vocab))], "logits")
    w.close()
    graph = helper.make_graph(nodes, "decoder", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
                              [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["batch", "seq", vocab])],
                              w.inits + small)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="graphopt golden_models/decoder.py")
    with open(out_path, "wb") as f:
        f.write(model.SerializeToString())
    return w.params


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    layers, width, vocab = PRESETS[args.preset] if args.preset else (args.layers, args.width, args.vocab)
    params = build(args.out, layers, width, vocab, seed=args.seed)
    print(f"{args.out}: {layers} layers, width {width}, vocab {vocab}: {params:,} params, "
          f"{os.path.getsize(args.out + '.data') / 1e9:.2f} GB of weights")
    return 0


if __name__ == "__main__":
    sys.exit(main())
