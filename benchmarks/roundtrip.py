"""Wall time and peak RSS of `graphopt MODEL -p none` with validation on and off.

    python benchmarks/roundtrip.py [--repeats 5] [--large] [--only NAME ...]

Each run is a separate process measured by `/usr/bin/time -v`; the on/off variants are
interleaved in every repetition so machine noise hits both alike. Prints a Markdown table of
medians (paste it into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

from _golden import golden  # noqa: E402 (the scripts run from benchmarks/)


def measure(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one process."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", proc.stderr).group(1)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return seconds, rss_kb / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--large", action="store_true", help="include the models marked large")
    ap.add_argument("--only", nargs="*", help="model names to run")
    args = ap.parse_args()
    exe = shutil.which("graphopt")
    if not exe:
        sys.exit("graphopt is not installed: pip install -e .")
    g = golden()
    models = [m for m in g.CORPUS if (args.large or not m.large) and (not args.only or m.name in args.only)]
    print("| model | size MB | nodes | wall s (validate) | peak RSS MB (validate) | wall s (--no-validate) "
          "| peak RSS MB (--no-validate) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for m in models:
        path = g.build(m)
        size = os.path.getsize(path) / 1e6
        data = path + ".data"
        if os.path.exists(data):
            size += os.path.getsize(data) / 1e6
        from graphopt.onnx_io import load as frontend

        nodes = frontend.load(path).graph.count_nodes()
        runs = {"on": [], "off": []}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):
                for mode in ("on", "off"):
                    out = os.path.join(tmp, f"{mode}.onnx")
                    cmd = [exe, path, "-p", "none", "-o", out, "--force", "-q"]
                    if mode == "off":
                        cmd.append("--no-validate")
                    runs[mode].append(measure(cmd))
        med = {k: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for k, v in runs.items()}
        print(f"| {m.name} | {size:.1f} | {nodes} | {med['on'][0]:.2f} | {med['on'][1]:.0f} | "
              f"{med['off'][0]:.2f} | {med['off'][1]:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
