"""What the benchmark scripts share: the golden corpus (golden_models/build.py) and --json output."""

import importlib.util
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def golden():
    spec = importlib.util.spec_from_file_location("golden_build", os.path.join(ROOT, "golden_models", "build.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while it executes
    spec.loader.exec_module(mod)
    return mod


def write_json(path, data) -> None:
    """The numbers a benchmark printed, for --json."""
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=1)
