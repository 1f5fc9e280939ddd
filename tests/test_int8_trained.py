"""The INT8 targets on the trained golden models: accuracy within 1 point of FP32 on the digits
CNN, output cosine >= 0.99 on the transformer, clean qdq-lint; and the accuracy budget with
real labels."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from helpers import GOLDEN, run_ort

import graphopt
from graphopt.lint.qdq_lint import qdq_lint
from graphopt.quant.calibration import CalibrationSettings

TRAINED = os.path.join(GOLDEN, "trained")


def path(name):
    return os.path.join(TRAINED, name)


def quantize(tmp_path, model, passes="int8", **settings):
    out = str(tmp_path / "int8.onnx")
    calib = CalibrationSettings(data=path(f"{model}.calib.npz"), progress=False, **settings)
    result = graphopt.optimize(path(f"{model}.onnx"), passes, output=out, calibration=calib)
    assert qdq_lint(graphopt.load(out)) == []
    return out, result


@pytest.mark.parametrize("method", ["entropy", "minmax", "percentile", "mse"])
def test_digits_cnn_int8_accuracy_within_one_point(tmp_path, method):
    out, result = quantize(tmp_path, "digits_cnn", f"int8{{method={method}}}")
    test = np.load(path("digits_cnn.test.npz"))
    fp32 = (run_ort(onnx.load(path("digits_cnn.onnx")), {"input": test["input"]})[0].argmax(1) == test["labels"]).mean()
    int8 = (run_ort(onnx.load(out), {"input": test["input"]})[0].argmax(1) == test["labels"]).mean()
    assert fp32 > 0.98
    assert 100 * (fp32 - int8) <= 1.0, (fp32, int8)
    layers = result.pass_reports["quantize-int8"]["layers"]
    assert len(layers) == 9 and all(L["precision"] == "int8" for L in layers)


def test_transformer_int8_cosine(tmp_path):
    out, result = quantize(tmp_path, "histogram_transformer")
    test = np.load(path("histogram_transformer.test.npz"))
    ref = run_ort(onnx.load(path("histogram_transformer.onnx")), {"tokens": test["tokens"]})[0]
    got = run_ort(onnx.load(out), {"tokens": test["tokens"]})[0]
    r, g = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
    cos = np.sum(r * g, 1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1))
    assert cos.mean() >= 0.99
    assert (ref.argmax(-1) == test["labels"]).mean() == 1.0
    assert (got.argmax(-1) == test["labels"]).mean() >= 0.99
    report = result.pass_reports["quantize-int8"]
    # the Linear layers and the head; with method=auto (the default) also the two reading a GELU
    assert sum(L["kind"] == "matmul" for L in report["layers"]) == 13


def test_budget_uses_labels_when_the_data_has_them(tmp_path):
    # calibrating on the labelled test file: held-out accuracy is real accuracy
    calib = CalibrationSettings(data=path("digits_cnn.test.npz"), holdout=0.5, progress=False)
    result = graphopt.optimize(path("digits_cnn.onnx"), "int8{max_drop=0.5}", calibration=calib, validate=False)
    acc = result.pass_reports["quantize-int8"]["accuracy"]
    assert acc["accuracy_ref"] is not None and acc["accuracy_ref"] > 98
    assert acc["drop"] == pytest.approx(acc["accuracy_ref"] - acc["accuracy"]) and acc["drop"] <= 0.5
