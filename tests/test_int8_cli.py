"""int8 from the command line and from pipeline files: --calib, calibrate {} and validate {}
settings, the shipped trt-int8 pipeline, and clean refusals of bad calibration input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from int8_models import small_cnn

from graphopt.cli import main


@pytest.fixture
def cnn(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), path)
    return path


@pytest.fixture
def calib(tmp_path):
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((40, 3, 16, 16)).astype(np.float32))
    return path


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_calib_flag_quantizes_and_reports(tmp_path, cnn, calib, capsys):
    out, rep, cache = tmp_path / "o.onnx", tmp_path / "r.json", tmp_path / "c.json"
    code, _, err = run(capsys, cnn, "-p", "int8", "--calib", calib, "--calib-method", "percentile",
                       "--calib-cache", cache, "-o", out, "--report", rep)
    assert code == 0, err
    assert "NO CALIBRATION DATA" not in err
    assert "graphopt: int8: 8 layers INT8, 0 fallen back to FP32, 0 left FP32 by placement; held-out vs FP32: cosine" in err
    assert "validation: lossy: cosine" in err
    report = json.loads(rep.read_text())
    q = report["pass_reports"]["quantize-int8"]
    assert q["calibration"]["method"] == "percentile" and q["calibration"]["samples"] == 32
    assert q["calibration"]["held_out"] == 8
    assert report["validation"]["lossy"] and report["validation"]["qdq_lint"] == []
    assert json.loads(cache.read_text())["method"] == "percentile"
    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(out).graph.node) > 0


def test_pipeline_file_settings(tmp_path, cnn, calib, capsys):
    (tmp_path / "sub").mkdir()
    pipe = tmp_path / "sub" / "q.gopt"
    pipe.write_text('pipeline {\n    int8{max_drop=100}\n}\n\ncalibrate {\n    data = "../calib.npz"\n'
                    '    method = minmax\n    holdout = 0.5\n}\n\nvalidate {\n    min_cosine = 0.5\n}\n')
    rep = tmp_path / "r.json"
    code, _, err = run(capsys, cnn, "--pipeline", pipe, "-o", tmp_path / "o.onnx", "--report", rep)
    assert code == 0, err
    q = json.loads(rep.read_text())["pass_reports"]["quantize-int8"]
    assert q["calibration"]["method"] == "minmax" and q["calibration"]["held_out"] == 20  # data relative to the file
    # the command line wins over the file
    code, _, err = run(capsys, cnn, "--pipeline", pipe, "--calib-method", "mse", "-o", tmp_path / "o2.onnx",
                       "--report", rep)
    assert code == 0 and json.loads(rep.read_text())["pass_reports"]["quantize-int8"]["calibration"]["method"] == "mse"


def test_accuracy_threshold_from_the_pipeline_file_fails_the_run(tmp_path, cnn, calib, capsys):
    pipe = tmp_path / "strict.gopt"
    pipe.write_text(f'pipeline {{\n    int8\n}}\n\ncalibrate {{\n    data = "{calib}"\n}}\n\n'
                    'validate {\n    min_cosine = 0.99999999\n}\n')
    out = tmp_path / "o.onnx"
    code, _, err = run(capsys, cnn, "--pipeline", pipe, "-o", out)
    assert code == 3
    # int8 first climbs back (layers in FP32) to the pipeline's floor, then fails naming the worst layers
    assert err.startswith("graphopt: error: quantize-int8 (kept in FP32): cosine similarity")
    assert "below min_cosine 0.99999999" in err and "most sensitive: " in err
    assert err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("value, code", [(0.99999999, 3), (0, 0)])
def test_normalized_cosine_floor_from_the_pipeline_file(tmp_path, cnn, calib, capsys, value, code):
    pipe = tmp_path / "f.gopt"
    pipe.write_text(f'pipeline {{\n    int8{{max_fallback=0}}\n}}\n\ncalibrate {{\n    data = "{calib}"\n}}\n\n'
                    f'validate {{\n    min_cosine = 0\n    min_top1 = 0\n    min_norm_cosine = {value}\n}}\n')
    out = tmp_path / "o.onnx"
    got, _, err = run(capsys, cnn, "--pipeline", pipe, "-o", out)
    assert got == code, err
    if code:  # the file's floor, not the default (0.8), is the one in force
        assert "below min_norm_cosine 0.99999999" in err and not out.exists()
    else:
        assert out.exists()


def test_shipped_trt_int8_pipeline(tmp_path, cnn, calib, capsys):
    out = tmp_path / "o.onnx"
    code, _, err = run(capsys, cnn, "--pipeline", "trt-int8", "--calib", calib, "-o", out)
    assert code == 0, err
    m = onnx.load(out)
    assert next(o.version for o in m.opset_import if o.domain == "") >= 13
    assert not any(n.op_type == "BatchNormalization" for n in m.graph.node)
    assert any(n.op_type == "DequantizeLinear" for n in m.graph.node)


@pytest.mark.parametrize("arrays, message", [
    ({"image": np.zeros((4, 3, 16, 16), np.float32)},
     "graphopt: error: calibration data bad.npz: 'image' is not a model input; inputs are x\n"),
    ({"x": np.zeros((4, 3, 16, 16), np.float64)},
     "graphopt: error: calibration data bad.npz: input 'x' is float64, the model takes float32\n"),
    ({"x": np.zeros((4, 16, 16, 3), np.float32)},
     "graphopt: error: calibration data bad.npz: input 'x' has shape [4, 16, 16, 3]; the model takes "
     "[N, 3, 16, 16] (samples along the first axis)\n"),
])
def test_bad_calibration_data_is_refused_cleanly(tmp_path, cnn, capsys, arrays, message):
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    out = tmp_path / "o.onnx"
    code, _, err = run(capsys, cnn, "-p", "int8", "--calib", bad, "-o", out)
    assert code == 1 and err == message and not out.exists()


def test_raise_opset_fires_on_old_models_only(tmp_path, capsys):
    old, new = tmp_path / "old.onnx", tmp_path / "new.onnx"
    onnx.save(small_cnn(opset=11), old)
    onnx.save(small_cnn(opset=17), new)
    code, _, err = run(capsys, old, "-p", "raise-opset", "-o", tmp_path / "o1.onnx", "-v")
    assert code == 0 and "raise-opset" in err and "modified" in err and "bitwise equal" in err
    assert next(o.version for o in onnx.load(tmp_path / "o1.onnx").opset_import if o.domain == "") == 13
    code, _, err = run(capsys, new, "-p", "raise-opset", "-o", tmp_path / "o2.onnx", "-v")
    assert code == 0 and "unchanged" in err
    assert next(o.version for o in onnx.load(tmp_path / "o2.onnx").opset_import if o.domain == "") == 17
