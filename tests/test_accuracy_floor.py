"""The default accuracy floor (issue 15): metrics large-magnitude outputs cannot fool, int8
climbing back to the floor by leaving layers in FP32, and failing (exit 3) when it cannot."""

from __future__ import annotations

import numpy as np
import pytest
from int8_models import sensitive_cnn

import graphopt
from graphopt.quant.budget import BelowFloor
from graphopt.quant.calibration import CalibrationSettings
from graphopt.runtime.metrics import compare
from graphopt.runtime.validate import LossyThresholds, check_thresholds


def cnn_feeds(n=48, seed=1):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(n)]


def detection_head(rng, n=16, classes=80, anchors=400):
    """(batch, 4 + classes, anchors): boxes in pixels up to 640, class scores in [0, 1]."""
    boxes = rng.uniform(0, 640, (n, 4, anchors))
    scores = rng.uniform(0, 1, (n, classes, anchors))
    return np.concatenate([boxes, scores], axis=1).astype(np.float32)


def test_box_coordinates_cannot_hide_wrong_class_scores():
    rng = np.random.default_rng(0)
    ref = detection_head(rng)
    new = ref.copy()
    new[:, 4:] = rng.permuted(new[:, 4:], axis=1)  # every class score wrong, boxes exact
    report = compare([{"y": ref}], [{"y": new}], [len(ref)])
    out = report.outputs[0]
    assert out.cosine > 0.98  # the raw cosine is fooled
    assert out.channel_axis == 1 and out.norm_cosine < 0.6
    problems = check_thresholds(report, LossyThresholds())
    assert any("channel-normalized cosine" in p and "'y'" in p for p in problems)
    # the twin: a faithful output passes the default floor
    close = ref + rng.normal(0, 1e-3, ref.shape).astype(np.float32)
    assert check_thresholds(compare([{"y": ref}], [{"y": close}], [len(ref)]), LossyThresholds()) == []


def test_class_scores_normalize_along_the_class_axis():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1, (8, 40, 50)).astype(np.float32)
    logits[..., 0] += 8  # a blank class, as a CTC recognizer's
    report = compare([{"p": logits}], [{"p": logits}], [8])
    assert report.outputs[0].channel_axis == 2 and report.outputs[0].norm_cosine == pytest.approx(1.0)


def test_floor_values_can_be_turned_off():
    t = LossyThresholds(min_cosine=0, min_top1=0).effective()
    assert t.min_cosine is None and t.min_top1 is None and t.min_norm_cosine == 0.8


def test_int8_climbs_back_to_the_floor(tmp_path):
    settings = CalibrationSettings(data=cnn_feeds(60), holdout=0.5, progress=False)
    out = tmp_path / "q.onnx"
    result = graphopt.optimize(sensitive_cnn(), "int8{per_channel=false}", calibration=settings, output=str(out))
    report = result.pass_reports["quantize-int8"]
    assert "conv2" in report["fallback"] and len(report["fallback"]) < len(report["layers"])
    assert check_thresholds(result.validation.accuracy, LossyThresholds()) == [] and out.exists()


def test_int8_below_the_floor_fails_naming_the_layers(tmp_path):
    settings = CalibrationSettings(data=cnn_feeds(60), holdout=0.5, progress=False)
    out = tmp_path / "q.onnx"
    with pytest.raises(BelowFloor, match=r"most sensitive: conv2") as e:
        graphopt.optimize(sensitive_cnn(), "int8{per_channel=false,max_fallback=0}", calibration=settings,
                          output=str(out))
    assert e.value.exit_code == 3 and "\n" not in str(e.value)
    assert not out.exists()
