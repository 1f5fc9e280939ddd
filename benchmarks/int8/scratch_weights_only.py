"""EXPERIMENT (research scratch): INT8 weights alone vs INT8 activations alone.

    python benchmarks/int8/scratch_weights_only.py FUSED.onnx Q.onnx OUT_DIR [--data data/v4]

FUSED.onnx: graphopt's FP32 graph before quantize-int8 (`-p fuse,fold,raise-opset,fuse,fold`, as
scratch_ranges.py writes it); Q.onnx: a graphopt INT8 model of the same run (node names match).
Writes and scores (ocr_eval) two models:
- weights_only: FUSED with every weight Q.onnx stores as INT8 replaced by its per-channel
  symmetric fake-quantized copy (the exact INT8 values times scale from Q.onnx), activations FP32
- acts_only: Q.onnx with every INT8 weight's DequantizeLinear replaced by FUSED's FP32 weight
"""
import os, sys
import numpy as np
import onnx
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ocr_eval

fused_p, q_p, out = sys.argv[1:4]
data = sys.argv[sys.argv.index("--data") + 1] if "--data" in sys.argv else os.path.join(HERE, "data", "v4")
os.makedirs(out, exist_ok=True)
fused, q = onnx.load(fused_p), onnx.load(q_p)
finit = {i.name: i for i in fused.graph.initializer}
qinit = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
qprod = {o: n for n in q.graph.node for o in n.output}
fnodes = {n.name: n for n in fused.graph.node}
w_deq = {}   # fused weight name -> dequantized INT8 weight
q_swap = {}  # (q node name, input idx) -> fused FP32 weight
for n in q.graph.node:
    if n.op_type not in ("Conv", "MatMul", "Gemm") or n.name not in fnodes:
        continue
    p = qprod.get(n.input[1])
    if p is None or p.op_type != "DequantizeLinear" or p.input[0] not in qinit or qinit[p.input[0]].dtype != np.int8:
        continue
    wi, s = qinit[p.input[0]].astype(np.float32), qinit[p.input[1]]
    axis = next((a.i for a in p.attribute if a.name == "axis"), 1)
    shape = [1] * wi.ndim
    if s.ndim:
        shape[axis] = -1
    deq = wi * s.reshape(shape)
    fw = fnodes[n.name].input[1]
    if fw in finit:
        w_deq[fw] = deq.astype(np.float32)
        q_swap[n.name] = fw
# weights only
wm = onnx.load(fused_p)
for i, init in enumerate(wm.graph.initializer):
    if init.name in w_deq:
        wm.graph.initializer[i].CopyFrom(numpy_helper.from_array(w_deq[init.name], init.name))
onnx.save(wm, os.path.join(out, "weights_only.onnx"))
# activations only
am = onnx.load(q_p)
names = {i.name for i in am.graph.initializer}
for n in am.graph.node:
    if n.name in q_swap:
        fw = q_swap[n.name]
        new = "fp32w_" + fw
        if new not in names:
            arr = numpy_helper.to_array(finit[fw])
            am.graph.initializer.append(numpy_helper.from_array(arr, new))
            names.add(new)
        n.input[1] = new
onnx.save(am, os.path.join(out, "acts_only.onnx"))
print(f"{len(w_deq)} INT8 weights swapped")
for k in ("weights_only", "acts_only"):
    r = ocr_eval.evaluate(os.path.join(out, k + ".onnx"), os.path.join(data, "rec.onnx"), os.path.join(data, "eval.npz"),
                          os.path.join(data, "dict.txt"))
    print(k, f"lines {r['lines_pct']:.1f}% chars {r['chars_pct']:.2f}% int8w {r['int8_weight_pct']:.1f}%", flush=True)
