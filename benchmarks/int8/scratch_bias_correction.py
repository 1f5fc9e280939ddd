"""EXPERIMENT, not part of the benchmark (issue 15): does bias correction help the PP-OCRv6 recognizer?

    nice python benchmarks/int8/scratch_bias_correction.py [DATA_DIR]

Held-out outputs (graphopt's split of calib.npz) of the fused model with INT8 weights and float
activations, with and without correct-bias's edits, and of the float model with only the bias
edits, against FP32.
"""
import numpy as np, graphopt, time
from graphopt.quant import equalize, calibration
from graphopt.quant.placement import plan, PlacementRules, SKIP_RULES
from graphopt.passes.quantize_int8 import dequantized_weight
from graphopt.analysis.shapes import infer_shapes
from graphopt.runtime.metrics import compare
from graphopt.onnx_io import emit as backend
from graphopt.runtime.session import Session
import sys
D = sys.argv[1] if len(sys.argv) > 1 else '/work/main/benchmarks/int8/data'
t=time.time()
r=graphopt.optimize(D+'/rec.onnx','fuse,fold,raise-opset',validate=False)
m=r.model; g=m.graph; infer_shapes(m)
print('fold',time.time()-t)
layers,_=plan(g,PlacementRules(skip=tuple(s for s in SKIP_RULES if s!='gelu')),lambda n:True)
sites,sk=equalize.bias_sites(g,layers)
print(len(layers),len(sites),sk[:3])
settings=calibration.CalibrationSettings(data=D+'/calib.npz',progress=False)
calib,held=calibration.split_samples(settings,m)
means,measured=equalize.bias_statistics(m,sites,dequantized_weight,calib,16,32)
bias_edits,done=equalize.bias_plan(g,sites,means,dequantized_weight,measured)
print('stats',time.time()-t)
wq=[equalize.Edit(L.node_id,1,dequantized_weight(np.asarray(g.const_value(g.node_by_id(L.node_id).inputs[1])),L.weight[2]),'wq') for L in layers if L.weight is not None and L.kind in('conv','gemm','matmul')]
def outs(model):
    res=[]
    with Session(backend.ort_view(model),optimized=True) as s:
        for feed,n,_ in held.batches(16): res.append(s.run(feed))
    return res
ref=outs(m); counts=[n for _,n,_ in held.batches(16)]
for name,edits in (('weights int8',wq),('weights int8 + bias corr',wq+bias_edits),('bias corr only (float w)',bias_edits)):
    c=m.clone(); equalize.apply_edits(c.graph,edits)
    rep=compare(ref,outs(c),counts,[None]*len(counts))
    print(name, rep.cosine, rep.norm_cosine, rep.top1_agreement)
big=sorted(done,key=lambda d:-d['max_shift'])[:8]
print(big)
