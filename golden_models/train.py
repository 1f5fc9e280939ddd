"""Train the two small golden models that INT8 quantization tests and benchmarks run on.

    python golden_models/train.py                       # both models
    python golden_models/train.py --only digits         # or: --only transformer

Needs the dev extra (torch, scikit-learn); runs on CPU, seeded and deterministic, in
well under three minutes. Writes into golden_models/trained/:

- digits_cnn.onnx: a CNN on scikit-learn's 8x8 digits (pixels / 16, so in [0, 1]) with
  Conv+BatchNorm+ReLU, a residual block, MaxPool, a 1x1 | 3x3 two-branch block joined by Concat,
  GlobalAveragePool and a Gemm head. Input `input` (N, 1, 8, 8) float32, output `logits` (N, 10).
- histogram_transformer.onnx: a 2-layer pre-norm transformer encoder (explicit q/k/v MatMuls,
  Softmax, LayerNormalization, Erf GELU) for the histogram task: for every position i of a
  sequence of 16 tokens from a vocabulary of 16, predict how often token x_i occurs in the whole
  sequence. Class c means a count of c + 1, so the 16 classes cover every possible count.
  Input `tokens` (N, 16) int64, output `logits` (N, 16, 16).
- <model>.calib.npz (calibration inputs, never tested on) and <model>.test.npz (held-out inputs
  with `labels`), keyed by the model's input names.
- metrics.json: FP32 test accuracies (per position for the transformer) measured by onnxruntime
  on the exported files with graph optimizations off.

Both models are exported with the TorchScript exporter (opset 17, dynamic batch axis `N`); the
CNN without constant folding, so that BatchNormalization stays a node rather than being folded
into the Conv before it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
import warnings
import zipfile

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "trained")
SEED = 20261124

# histogram task
SEQ_LEN = VOCAB = 16
NUM_CLASSES = SEQ_LEN  # count - 1: a token occurs 1..16 times


def _torch():
    """Import torch set up for reproducible CPU training."""
    import torch

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # one thread: the same reduction order, so the same weights, every run
    return torch


def _save_npz(path: str, **arrays: np.ndarray) -> None:
    """np.savez stamps each member with the current time; a fixed stamp keeps reruns byte-identical."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue(),
                       compress_type=zipfile.ZIP_DEFLATED)


def _export(torch, model, example, input_name: str, path: str, fold: bool) -> None:
    """fold: constant folding, which stores Linear weights pre-transposed for MatMul; off for
    BatchNorm models, as it would also fold BatchNormalization into the Conv before it."""
    model.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, but chosen on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=17, input_names=[input_name],
                          output_names=["logits"], dynamic_axes={input_name: {0: "N"}, "logits": {0: "N"}},
                          do_constant_folding=fold, training=torch.onnx.TrainingMode.EVAL)
    m = onnx.load_from_string(buf.getvalue())
    # Only the batch axis is dynamic, but the exporter's shape inference loses static axes behind a
    # Reshape(-1, ...) and names them after a node: restore the sizes torch computes.
    with torch.no_grad():
        shape = model(example).shape
    for dim, size in list(zip(m.graph.output[0].type.tensor_type.shape.dim, shape))[1:]:
        dim.dim_value = size
    with open(path, "wb") as f:
        f.write(m.SerializeToString(deterministic=True))


def _ort_logits(path: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]).run(["logits"], feeds)[0]


def _fit(torch, model, x, y, epochs: int, batch: int, lr: float) -> None:
    """Adam with a cosine-decayed learning rate; cross-entropy over the last axis of the logits."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            logits = model(x[idx])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[idx].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


def _finish(torch, name: str, model, input_name: str, calib, test_x, test_y, fold: bool) -> dict:
    """Export, write the data files, and check onnxruntime against torch on the test set."""
    path = os.path.join(OUT, f"{name}.onnx")
    _export(torch, model, torch.from_numpy(test_x[:2]), input_name, path, fold)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    _save_npz(os.path.join(OUT, f"{name}.calib.npz"), **{input_name: calib})
    _save_npz(os.path.join(OUT, f"{name}.test.npz"), **{input_name: test_x, "labels": test_y})

    with torch.no_grad():
        torch_pred = model(torch.from_numpy(test_x)).argmax(-1).numpy()
    ort_pred = _ort_logits(path, {input_name: test_x}).argmax(-1)
    ort_acc, torch_acc = float((ort_pred == test_y).mean()), float((torch_pred == test_y).mean())
    assert ort_acc == torch_acc, f"{name}: onnxruntime {ort_acc} != torch {torch_acc}"
    return {"test_accuracy": round(ort_acc, 6), "test_samples": len(test_y),
            "calib_samples": int(len(calib)), "onnx_bytes": os.path.getsize(path)}


# ================================================================================= digits CNN
def build_digits() -> dict:
    torch = _torch()
    nn = torch.nn
    from sklearn.datasets import load_digits

    def cbr(cin, cout, k):
        return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class Residual(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(cbr(c, c, 3), nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return torch.relu(x + self.body(x))

    class TwoBranch(nn.Module):
        """A 1x1 and a 3x3 branch concatenated along channels, as in Inception blocks."""

        def __init__(self, cin, c):
            super().__init__()
            self.b1, self.b3 = cbr(cin, c, 1), cbr(cin, c, 3)

        def forward(self, x):
            return torch.cat([self.b1(x), self.b3(x)], dim=1)

    model = nn.Sequential(
        cbr(1, 16, 3), Residual(16), nn.MaxPool2d(2),  # 8x8 -> 4x4
        TwoBranch(16, 16), cbr(32, 64, 3),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))
    train, calib, test = order[:1197], order[1197:1497], order[1497:]
    _fit(torch, model, torch.from_numpy(x[train]), torch.from_numpy(y[train]), epochs=40, batch=64, lr=3e-3)
    return _finish(torch, "digits_cnn", model, "input", x[calib], x[test], y[test], fold=False)


# ================================================================================= histogram transformer
def histogram_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences over a random subset of k = 1..16 distinct tokens, so that high counts occur too
    (with uniform tokens, a count over 4 is rare and one over 8 almost never happens)."""
    alphabet = np.argsort(rng.random((n, VOCAB)), axis=1)
    k = rng.integers(1, VOCAB + 1, size=(n, 1))
    tokens = np.take_along_axis(alphabet, (rng.random((n, SEQ_LEN)) * k).astype(np.int64), axis=1)
    counts = (tokens[:, :, None] == tokens[:, None, :]).sum(-1)
    return tokens.astype(np.int64), (counts - 1).astype(np.int64)


def build_transformer() -> dict:
    torch = _torch()
    nn = torch.nn
    d, heads, ffn, layers = 64, 4, 128, 2

    class Block(nn.Module):
        """Pre-norm encoder layer; attention spelled out so the export shows every MatMul."""

        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
            self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.GELU(), nn.Linear(ffn, d))

        def forward(self, x):
            h = self.ln1(x)
            # constant shapes (batch as -1) keep Shape/Gather chains out of the exported graph
            q, k, v = (p(h).reshape(-1, SEQ_LEN, heads, d // heads).transpose(1, 2) for p in (self.q, self.k, self.v))
            att = torch.softmax(q @ k.transpose(-2, -1) * (d // heads) ** -0.5, dim=-1)
            x = x + self.o((att @ v).transpose(1, 2).reshape(-1, SEQ_LEN, d))
            return x + self.ffn(self.ln2(x))

    class HistogramTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(VOCAB, d)
            self.pos = nn.Parameter(torch.randn(SEQ_LEN, d) * 0.02)
            self.blocks = nn.Sequential(*(Block() for _ in range(layers)))
            self.norm = nn.LayerNorm(d)
            self.head = nn.Linear(d, NUM_CLASSES)

        def forward(self, tokens):
            return self.head(self.norm(self.blocks(self.tok(tokens) + self.pos)))

    model = HistogramTransformer()
    rng = np.random.default_rng(SEED)
    train_x, train_y = histogram_data(rng, 20000)
    calib, _ = histogram_data(rng, 256)
    test_x, test_y = histogram_data(rng, 512)
    _fit(torch, model, torch.from_numpy(train_x), torch.from_numpy(train_y), epochs=20, batch=128, lr=2e-3)
    return _finish(torch, "histogram_transformer", model, "tokens", calib, test_x, test_y, fold=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["digits", "transformer"], help="train just one model")
    args = ap.parse_args(argv)
    os.makedirs(OUT, exist_ok=True)
    metrics_path = os.path.join(OUT, "metrics.json")
    metrics = {}
    if os.path.exists(metrics_path):  # --only keeps the other model's entry
        with open(metrics_path) as f:
            metrics = json.load(f)
    for key, name, build in [("digits", "digits_cnn", build_digits),
                             ("transformer", "histogram_transformer", build_transformer)]:
        if args.only in (None, key):
            start = time.perf_counter()
            metrics[name] = build()
            print(f"{name}: test accuracy {metrics[name]['test_accuracy']:.4f} (onnxruntime, FP32), "
                  f"{time.perf_counter() - start:.1f} s")
    with open(metrics_path, "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
        f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
