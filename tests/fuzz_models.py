"""Random valid ONNX graphs for differential fuzzing (hypothesis strategy): Conv, BatchNorm,
Gemm/MatMul, elementwise ops, Reshape/Flatten/Squeeze/Unsqueeze chains with shape subgraphs,
Transpose, Concat, Slice, Pad, pooling and If, with random shapes and attributes. Every op's
output shape is tracked, so every graph is valid by construction."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

UNARY = ("Relu", "Sigmoid", "Neg", "Abs", "Tanh", "Identity")
FEED_SEED = 0


class _Builder:
    def __init__(self, draw):
        self.draw = draw
        self.nodes, self.inits = [], []
        self.tensors: list[tuple[str, tuple]] = []  # (name, static shape) of everything computed so far
        self.n = 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{hint}{self.n}"

    def const(self, array, hint="c") -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, *shape, scale=0.5) -> str:
        seed = self.draw(st.integers(0, 2**16))
        return self.const((np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32), "w")

    def node(self, op, inputs, shape, **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        self.tensors.append((out, tuple(shape)))
        return out

    def pick(self, rank=None):
        options = [t for t in self.tensors if rank is None or len(t[1]) == rank]
        return self.draw(st.sampled_from(options)) if options else None


def _step(b: _Builder) -> None:
    four = b.pick(4)
    two = b.pick(2)
    choices = ["unary", "binary"]
    if four:
        choices += ["conv", "bn", "affine", "pool", "gap", "transpose", "flatten", "reshape_chain", "unsqueeze",
                    "concat", "slice", "pad_conv", "if"]
    if two:
        choices += ["gemm", "matmul_add"]
    kind = b.draw(st.sampled_from(choices))
    d = b.draw
    if kind == "unary":
        x, s = b.pick()
        b.node(d(st.sampled_from(UNARY)), [x], s)
    elif kind == "binary":
        x, s = b.pick()
        same = [t for t in b.tensors if t[1] == s]
        y = d(st.sampled_from(same))[0]
        b.node(d(st.sampled_from(["Add", "Mul", "Sub", "Max"])), [x, y], s)
    elif kind == "conv":
        x, (n, c, h, w) = four
        k = d(st.sampled_from([1, 3])) if min(h, w) >= 3 else 1
        pad = d(st.integers(0, k // 2))
        stride = d(st.sampled_from([1, 2])) if min(h, w) >= 4 else 1
        depthwise = d(st.booleans())
        cout, group = (c, c) if depthwise else (d(st.integers(1, 6)), 1)
        ins = [x, b.weight(cout, c // group, k, k)]
        if d(st.booleans()):
            ins.append(b.weight(cout, scale=0.1))
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        b.node("Conv", ins, (n, cout, ho, wo), kernel_shape=[k, k], pads=[pad] * 4, strides=[stride] * 2, group=group)
    elif kind == "bn":
        x, s = four
        c = s[1]
        seed = d(st.integers(0, 2**16))
        r = np.random.default_rng(seed)
        params = [b.const(r.uniform(0.5, 1.5, c).astype(np.float32)), b.const(r.standard_normal(c).astype(np.float32)),
                  b.const(r.standard_normal(c).astype(np.float32) * 0.1), b.const(r.uniform(0.5, 1.5, c).astype(np.float32))]
        b.node("BatchNormalization", [x, *params], s)
    elif kind == "affine":
        x, s = four
        shape = d(st.sampled_from([(s[1], 1, 1), (1, s[1], 1, 1), ()]))
        c = b.const(np.random.default_rng(d(st.integers(0, 99))).uniform(0.5, 2, shape).astype(np.float32))
        b.node(d(st.sampled_from(["Mul", "Add", "Sub", "Div"])), [x, c], s)
    elif kind == "pool":
        x, (n, c, h, w) = four
        if min(h, w) >= 2:
            b.node(d(st.sampled_from(["MaxPool", "AveragePool"])), [x], (n, c, h // 2, w // 2), kernel_shape=[2, 2],
                   strides=[2, 2])
    elif kind == "gap":
        x, (n, c, h, w) = four
        b.node("GlobalAveragePool", [x], (n, c, 1, 1))
    elif kind == "transpose":
        x, s = four
        perm = d(st.permutations(range(4)))
        t = b.node("Transpose", [x], tuple(s[p] for p in perm), perm=list(perm))
        if d(st.booleans()):  # and back: merge-transposes cancels the pair
            b.node("Transpose", [t], s, perm=list(np.argsort(perm)))
    elif kind == "flatten":
        x, (n, c, h, w) = four
        b.node("Flatten", [x], (n, c * h * w), axis=1)
    elif kind == "reshape_chain":  # view(x.size(0), -1) as exported: Shape -> Gather -> Unsqueeze -> Concat -> Reshape
        x, (n, c, h, w) = four
        shape = b.node("Shape", [x], (4,))
        n0 = b.node("Gather", [shape, b.const(np.array(0, np.int64))], (), axis=0)
        n1 = b.node("Unsqueeze", [n0, b.const(np.array([0], np.int64))], (1,))
        target = b.node("Concat", [n1, b.const(np.array([-1], np.int64))], (2,), axis=0)
        b.tensors = [t for t in b.tensors if t[0] not in (shape, n0, n1, target)]  # shape tensors are not data
        b.node("Reshape", [x, target], (n, c * h * w))
    elif kind == "unsqueeze":
        x, s = four
        u = b.node("Unsqueeze", [x, b.const(np.array([2], np.int64))], (s[0], s[1], 1, s[2], s[3]))
        b.tensors.pop()
        b.node("Squeeze", [u, b.const(np.array([2], np.int64))], s)
    elif kind == "concat":
        x, s = four
        others = [t for t in b.tensors if len(t[1]) == 4 and t[1][0] == s[0] and t[1][2:] == s[2:]]
        y, ys = d(st.sampled_from(others))
        b.node("Concat", [x, y], (s[0], s[1] + ys[1], *s[2:]), axis=1)
    elif kind == "slice":
        x, (n, c, h, w) = four
        if c >= 2:
            end = d(st.integers(1, c - 1))
            b.node("Slice", [x, b.const(np.array([0], np.int64)), b.const(np.array([end], np.int64)),
                             b.const(np.array([1], np.int64))], (n, end, h, w))
    elif kind == "pad_conv":  # zero Pad then an unpadded Conv: fuse-pad-conv folds them
        x, (n, c, h, w) = four
        p = b.node("Pad", [x, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], (n, c, h + 2, w + 2))
        cout = d(st.integers(1, 4))
        b.node("Conv", [p, b.weight(cout, c, 3, 3)], (n, cout, h, w), kernel_shape=[3, 3])
    elif kind == "if":
        x, s = four
        total = b.node("ReduceSum", [x], (), keepdims=0)
        b.tensors.pop()
        cond = b.node("Greater", [total, b.const(np.array(0, np.float32))], ())
        b.tensors.pop()
        branches = []
        for op in d(st.permutations(["Relu", "Neg"])):
            out = b.name("branch")
            branches.append(helper.make_graph([helper.make_node(op, [x], [out])], out, [],
                                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(s))]))
        b.node("If", [cond], s, then_branch=branches[0], else_branch=branches[1])
    elif kind == "gemm":
        x, (m, k) = two
        n_out = d(st.integers(1, 6))
        trans_b = d(st.booleans())
        w = b.weight(n_out, k) if trans_b else b.weight(k, n_out)
        ins = [x, w] + ([b.weight(n_out, scale=0.1)] if d(st.booleans()) else [])
        b.node("Gemm", ins, (m, n_out), transB=int(trans_b))
    elif kind == "matmul_add":
        x, (m, k) = two
        n_out = d(st.integers(1, 6))
        y = b.node("MatMul", [x, b.weight(k, n_out)], (m, n_out))
        if d(st.booleans()):
            b.node("Add", [y, b.weight(n_out, scale=0.1)], (m, n_out))


@st.composite
def fuzz_models(draw, max_ops: int = 10):
    b = _Builder(draw)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(2, 8)), draw(st.integers(2, 8)))
    b.tensors.append(("x", shape))
    for _ in range(draw(st.integers(1, max_ops))):
        _step(b)
    computed = [t for t in b.tensors if t[0] != "x"] or [b.tensors[0]]
    outs = [computed[-1]] + draw(st.lists(st.sampled_from(computed), max_size=2))
    outs = list(dict.fromkeys(outs))
    if outs == [("x", shape)]:
        b.node("Identity", ["x"], shape)
        outs = [b.tensors[-1]]
    g = helper.make_graph(b.nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in outs], b.inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
