"""The memory floor of validation: peak RSS of a bare Python process (numpy and onnxruntime,
nothing of graphopt) that loads each model with the session options graphopt's validation
uses (runtime/session.py: optimizations off, no arena, no memory pattern, no prepacking) and
runs it once on seeded inputs (floats normal, integers 0: a valid index or id), symbolic dims 1.

    python benchmarks/ort_floor.py MODEL.onnx [MODEL.onnx ...]

Each model runs in its own process; the line gives RSS after the imports, after loading, and the
process's peak (MB).
"""

from __future__ import annotations

import subprocess
import sys

CHILD = r"""
import resource, sys
import numpy as np, onnxruntime as ort

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))

imported = rss()
o = ort.SessionOptions()
o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
o.enable_cpu_mem_arena = False
o.enable_mem_pattern = False
o.add_session_config_entry("session.disable_prepacking", "1")
o.log_severity_level = 4
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
loaded = rss()
rng = np.random.default_rng(0)
TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def value(i):
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
    if i.type in TYPES:
        return rng.standard_normal(shape, dtype=np.float32).astype(TYPES[i.type])
    if i.type == "tensor(bool)":
        return np.ones(shape, bool)
    return np.zeros(shape, np.dtype(i.type[len("tensor("):-1]))  # int64, int32, uint8, ...


feed = {i.name: value(i) for i in s.get_inputs()}
out = s.run(None, feed)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(f"imports {imported} MB, loaded {loaded} MB, peak {peak} MB, outputs {sum(x.nbytes for x in out) >> 20} MB")
"""


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    for path in sys.argv[1:]:
        r = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True, text=True)
        line = r.stdout.strip() or (r.stderr.strip().splitlines() or ["failed"])[-1]
        print(f"{path}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
