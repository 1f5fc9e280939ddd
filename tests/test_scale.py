"""The decoder generator (golden_models/decoder.py) and graphopt end to end on its models; the
2.5 GB one is `large` (run with -m large). Time and memory are measured by benchmarks/scale.py."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import GOLDEN

import graphopt

spec = importlib.util.spec_from_file_location("decoder", os.path.join(GOLDEN, "decoder.py"))
decoder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(decoder)


def expected_params(layers, width, vocab, max_seq=128):
    per_layer = 4 * (width * width + width) + (width * 4 * width + 4 * width) + (4 * width * width + width) + 4 * width
    return vocab * width + max_seq * width + layers * per_layer + 2 * width + width * vocab


def test_generator_writes_a_valid_model_with_external_data(tmp_path):
    path = str(tmp_path / "d.onnx")
    params = decoder.build(path, layers=2, width=64, vocab=256)
    assert params == expected_params(2, 64, 256)
    assert os.path.getsize(path + ".data") == 4 * params
    onnx.checker.check_model(path, full_check=True)
    import onnxruntime as ort

    out = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input_ids": np.ones((2, 7), np.int64)})
    assert out[0].shape == (2, 7, 256)


def test_graphopt_folds_the_exported_shape_chains(tmp_path):
    path = str(tmp_path / "d.onnx")
    decoder.build(path, layers=3, width=64, vocab=256)
    out = str(tmp_path / "o.onnx")
    result = graphopt.optimize(path, "fuse,fold,promote", output=out, input_shapes={"input_ids": (2, 16)})
    assert result.validation.ok
    m = onnx.load(out, load_external_data=False)
    reshapes = [n for n in m.graph.node if n.op_type == "Reshape"]
    inits = {t.name for t in m.graph.initializer}
    assert reshapes and all(n.input[1] in inits for n in reshapes)  # pinned: every shape a constant
    assert not any(n.op_type == "Shape" for n in m.graph.node)
    assert os.path.exists(out) and not os.path.exists(out + ".data")  # 0.5 MB: written inline


@pytest.mark.large
def test_a_model_past_2_gib_end_to_end_with_validation(tmp_path):
    path = str(tmp_path / "big.onnx")
    layers, width, vocab = decoder.PRESETS["2.4GB"]
    decoder.build(path, layers, width, vocab)
    out = str(tmp_path / "out.onnx")
    run = subprocess.run([sys.executable, "-m", "graphopt", path, "-p", "fuse,fold,promote", "-o", out],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "validation: outputs" in run.stderr
    assert os.path.getsize(out + ".data") > 2**31  # past 2 GiB: external data, written automatically
