"""The golden corpus (golden_models/build.py), loaded for the benchmark scripts."""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def golden():
    spec = importlib.util.spec_from_file_location("golden_build", os.path.join(ROOT, "golden_models", "build.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while it executes
    spec.loader.exec_module(mod)
    return mod
