"""trt-check over the real-model corpus after a pinned `-p fuse,fold,promote` (issue 16).

    python benchmarks/trt_check_corpus.py [--corpus DIR] [--out DIR] [--trt 10 8.6]

For each corpus model (manifest.json gives the sample input shapes) it runs
`graphopt MODEL -p fuse,fold,promote --input-shape ... --no-validate`, then trt-check per TensorRT
version on the raw and the promoted model, and prints errors/warnings and how many of them depend
on the data ("promotion cannot ..."). A model whose inputs share a dim name with two sample
sizes (rapidocr_ppocr_mobile_v2_cls: both spatial dims are '?') is promoted unpinned.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys


def summary(findings):
    errs = [f for f in findings if f.severity == "error"]
    warns = [f for f in findings if f.severity == "warning"]
    data = lambda fs: sum("promotion cannot" in f.message for f in fs)  # noqa: E731
    return {"errors": len(errs), "data_errors": data(errs), "warnings": len(warns), "data_warnings": data(warns),
            "rules": dict(collections.Counter(f.rule for f in findings))}


def main() -> int:
    from graphopt.analysis.shapes import infer_shapes
    from graphopt.lint.trt_check import trt_check
    from graphopt.onnx_io import load as frontend

    p = argparse.ArgumentParser()
    p.add_argument("--corpus", default=os.path.join(os.path.dirname(__file__), "corpus", "models"))
    p.add_argument("--out", default="/tmp/trt_check_corpus")
    p.add_argument("--trt", nargs="+", default=["10", "8.6"])
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    models = json.load(open(os.path.join(args.corpus, "manifest.json")))["models"]
    rows = {}
    for name, e in sorted(models.items()):
        src, dst = os.path.join(args.corpus, e["file"]), os.path.join(args.out, f"{name}.onnx")
        cmd = [sys.executable, "-m", "graphopt", src, "-p", "fuse,fold,promote", "-o", dst, "--no-validate", "-q"]
        pins = [a for i in e["inputs"] for a in ("--input-shape", f"{i['name']}:" + "x".join(map(str, i["sample_shape"])))]
        proc = subprocess.run(cmd + pins, capture_output=True, text=True)
        pinned = proc.returncode == 0
        if not pinned:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        row = {"pinned": pinned, "optimize_rc": proc.returncode}
        for label, path in (("raw", src), ("promoted", dst)):
            if not os.path.exists(path):
                continue
            model = frontend.load(path)
            infer_shapes(model)
            for trt in args.trt:
                row[f"{label} {trt}"] = summary(trt_check(model, trt))
        rows[name] = row
        cells = "  ".join(f"{k}: E{v['errors']}({v['data_errors']} data) W{v['warnings']}({v['data_warnings']} data)"
                          for k, v in row.items() if isinstance(v, dict))
        print(f"{name:42s} {'pinned' if pinned else 'UNPINNED'}  {cells}", flush=True)
    json.dump(rows, open(os.path.join(args.out, "trt_check.json"), "w"), indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
