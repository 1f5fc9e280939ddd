"""Calibration: data loading and its errors, streaming histograms, the four methods, batching
under a memory cap, and the cache."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from int8_models import NO_FLOOR, REVIEW_RNG, build, fvi, qdq_count, small_cnn, w
from onnx import helper, numpy_helper

import graphopt
from graphopt.cli import main
from graphopt.quant import calibration
from graphopt.quant.calibration import (
    AbsHistogram,
    CalibrationError,
    CalibrationSettings,
    load_samples,
)


@pytest.fixture(scope="module")
def cnn():
    return graphopt.load(small_cnn())


def npz(tmp_path, name="calib.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def images(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)


# ------------------------------------------------------------------------------ data
def test_npz_samples_are_batched_along_the_first_axis(tmp_path, cnn):
    s = load_samples(npz(tmp_path, x=images(10)), cnn)
    assert s.count == 10 and not s.stacked
    sizes = [n for _, n, _ in s.batches(4)]
    assert sizes == [4, 4, 2]
    calib, held = s.split(0.2, limit=100)
    assert (calib.size, held.size) == (8, 2)
    first = next(held.batches(8))[0]["x"]
    np.testing.assert_array_equal(first, images(10)[8:])


def test_folder_of_npz_files_is_one_sample_set_read_file_by_file(tmp_path, cnn):
    (tmp_path / "d").mkdir()
    npz(tmp_path / "d", "a.npz", x=images(3, 1))
    npz(tmp_path / "d", "b.npz", x=images(4, 2))
    s = load_samples(str(tmp_path / "d"), cnn)
    assert s.count == 7
    feeds = [f["x"] for f, _, _ in s.batches(5)]
    assert [f.shape[0] for f in feeds] == [5, 2]
    np.testing.assert_array_equal(np.concatenate(feeds), np.concatenate([images(3, 1), images(4, 2)]))


def test_api_feeds_are_run_as_given(cnn):
    feeds = [{"x": images(2, i)} for i in range(3)]
    s = load_samples(feeds, cnn)
    assert s.stacked and s.count == 3
    assert [f["x"].shape for f, _, _ in s.batches(32)] == [(2, 3, 16, 16)] * 3


@pytest.mark.parametrize("arrays, message", [
    ({"y": images(4)}, "calibration data calib.npz: 'y' is not a model input; inputs are x"),
    ({"x": images(4).astype(np.float64)}, "calibration data calib.npz: input 'x' is float64, the model takes float32"),
    ({"x": images(4)[:, :2]}, "calibration data calib.npz: input 'x' has shape [4, 2, 16, 16]; the model takes "
                              "[N, 3, 16, 16] (samples along the first axis)"),
    ({"x": images(4), "labels": np.zeros(3, np.int64)}, "calibration data calib.npz: 'labels' has 3 samples, the inputs 4"),
    ({"x": images(0)}, "calibration data calib.npz: no samples"),
])
def test_calibration_data_that_does_not_fit_is_refused(tmp_path, cnn, arrays, message):
    with pytest.raises(CalibrationError) as e:
        load_samples(npz(tmp_path, **arrays), cnn)
    assert str(e.value) == message


def test_missing_or_unreadable_data(tmp_path, cnn):
    with pytest.raises(CalibrationError, match="no such file or folder"):
        load_samples(str(tmp_path / "nope.npz"), cnn)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CalibrationError, match="is not a readable .npz file"):
        load_samples(str(tmp_path / "bad.npz"), cnn)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="has no .npz files"):
        load_samples(str(tmp_path / "empty"), cnn)
    with pytest.raises(CalibrationError, match="calibration feed 1: no data for input 'x'"):
        load_samples([{"x": images(1)}, {}], cnn)


# ------------------------------------------------------------------------------ histograms
def test_histogram_grows_by_merging_bins_without_losing_counts():
    rng = np.random.default_rng(0)
    h = AbsHistogram(bins=64)
    parts = [rng.standard_normal(1000) * s for s in (0.1, 1.0, 30.0)]  # the range grows twice
    for p in parts:
        h.add(p)
    data = np.abs(np.concatenate(parts))
    assert h.total == data.size and h.counts.sum() == data.size
    assert h.amax == pytest.approx(data.max(), rel=1e-6)
    # every value lies in the bin its magnitude says, at the final width
    expect = np.bincount(np.minimum((data / h.width).astype(int), 63), minlength=64)
    np.testing.assert_array_equal(h.counts, expect)


def test_histogram_in_chunks_counts_as_one_pass_over_the_tensor(monkeypatch):
    # binning goes through small reused buffers: the counts must be those of the plain
    # one-pass formula (float32 |x| times 1/width, truncated, clipped to the last bin),
    # whatever the chunk size, with growing ranges, negative values and non-finite ones
    rng = np.random.default_rng(5)
    parts = [rng.standard_normal((3, 1000)).astype(np.float32) * s for s in (0.5, 4.0, 4.0, 300.0)]
    parts[2][1, 7], parts[2][2, 9] = np.nan, -np.inf
    parts.append(rng.standard_normal(10).astype(np.float64))  # another dtype: as float32

    def reference(bins):
        counts, width = np.zeros(bins), 0.0
        for p in parts:
            a = np.abs(np.asarray(p, np.float32).ravel())
            a = a[np.isfinite(a)]
            m = float(a.max())
            if width == 0.0:
                width = m / bins * (1 + 1e-6)
            elif m >= width * bins:
                k = int(np.ceil(m / (width * bins) * (1 + 1e-6)))
                counts = (np.concatenate([[counts.sum()], np.zeros(bins - 1)]) if k >= bins else
                          np.concatenate([counts, np.zeros(bins * (k - 1))]).reshape(bins, k).sum(axis=1))
                width *= k
            a *= np.float32(1.0 / width)
            counts += np.bincount(np.minimum(a.astype(np.int32), bins - 1), minlength=bins)
        return counts, width

    want, width = reference(256)
    for chunk in (7, 1000, 1 << 16):
        monkeypatch.setattr(calibration, "HISTOGRAM_CHUNK", chunk)
        h = AbsHistogram(bins=256)
        for p in parts:
            h.add(p)
        assert h.width == width and h.nonfinite == 2 and h.total == want.sum()
        np.testing.assert_array_equal(h.counts, want)
    minmax = AbsHistogram(counting=False)
    for p in parts:
        minmax.add(p)
    assert minmax.amax == max(float(np.nanmax(np.abs(np.where(np.isinf(p), np.nan, p)))) for p in parts)


def test_a_large_tensor_is_binned_from_a_sample_and_its_exact_tail(monkeypatch):
    # above HISTOGRAM_SAMPLE values, the histogram's bulk comes from seeded random blocks (never
    # a fixed stride, which could pick the same column of every row), weighted to the tensor's
    # size; the bins holding the sample's top HISTOGRAM_TAIL are counted over every value, so a
    # lone outlier outside the sample still sets the MSE and entropy ranges as on all the data
    monkeypatch.setattr(calibration, "HISTOGRAM_SAMPLE", 1 << 14)
    monkeypatch.setattr(calibration, "HISTOGRAM_BLOCK", 1 << 8)
    rng = np.random.default_rng(2)
    first = rng.laplace(0, 1, (4, 64, 1024)).astype(np.float32)
    later = rng.laplace(0, 1, (4, 64, 1024)).astype(np.float32)  # read once: range and tail together
    later[3, 63, 1000] = -50.0  # one outlier past the first batch's range: the bins merge
    small = first[:1, :8]  # under the cap: binned whole
    batches = (first, later, small)
    sampled, again = AbsHistogram(), AbsHistogram()
    for h in (sampled, again):
        for b in batches:
            h.add(b)
    np.testing.assert_array_equal(sampled.counts, again.counts)  # seeded: the same every run
    assert sampled.total == sum(b.size for b in batches) and sampled.amax == 50.0
    assert sampled.counts.sum() == pytest.approx(sampled.total, rel=0.01)
    monkeypatch.setattr(calibration, "HISTOGRAM_SAMPLE", first.size)
    full = AbsHistogram()
    for b in batches:
        full.add(b)
    assert full.width == sampled.width
    top = int(np.argmax(np.cumsum(full.counts[::-1])[::-1] <= 1e-3 * full.total)) + 2
    np.testing.assert_array_equal(sampled.counts[top:], full.counts[top:])  # the tail: exact
    for method, p in (("percentile", 99.0), ("percentile", 99.99), ("entropy", None), ("mse", None)):
        got, want = sampled.threshold(method, p or 99.99), full.threshold(method, p or 99.99)
        assert got == pytest.approx(want, rel=0.05), method
    nan = later.copy()
    nan[0, 0, :3] = (np.nan, np.inf, -np.inf)  # a large batch with non-finite values: binned whole
    sampled.add(nan)
    full.add(nan)
    assert sampled.nonfinite == full.nonfinite == 3 and sampled.total == full.total


def test_methods_order_on_a_heavy_tailed_distribution():
    rng = np.random.default_rng(1)
    h = AbsHistogram()
    h.add(rng.laplace(0, 1, 200_000))
    mm, p9999, p99 = h.threshold("minmax"), h.threshold("percentile", 99.99), h.threshold("percentile", 99.0)
    ent, mse = h.threshold("entropy"), h.threshold("mse")
    assert mm == h.amax
    assert p99 < p9999 <= mm
    assert p99 == pytest.approx(np.log(100), rel=0.02)  # Laplace(1): P(|x| > t) = exp(-t)
    for t in (ent, mse):  # both clip the long tail, but not into the bulk
        assert 3.0 < t < mm


def test_nonfinite_values_are_counted_not_binned():
    h = AbsHistogram()
    h.add(np.array([1.0, np.inf, np.nan, -2.0]))
    assert h.nonfinite == 2 and h.amax == 2.0 and h.total == 2


def test_all_zero_tensor_has_zero_range():
    h = AbsHistogram()
    h.add(np.zeros(10))
    assert h.threshold("entropy") == 0.0


# ------------------------------------------------------------------------------ running
def test_batches_shrink_to_fit_the_memory_cap(cnn, monkeypatch):
    from graphopt.runtime.session import Session

    calls = []
    real_run = Session.run

    def counting(self, feed, names=None):
        calls.append(feed["x"].shape[0])
        return real_run(self, feed, names)

    monkeypatch.setattr(Session, "run", counting)
    samples = calibration.SampleSet(calibration.model_input_specs(cnn), [lambda: {"x": images(12)}], [12], "test")
    settings = CalibrationSettings(batch_size=8, memory_mb=1, progress=False)
    # a third of the 1 MiB cap per sample: batches of 3
    calibration.collect_ranges(cnn, ["x", "a0"], samples, settings, "minmax", bytes_per_sample=(1 << 20) // 3)
    assert calls == [3, 3, 3, 3]
    calls.clear()
    # small activations: the batch size asked for
    calibration.collect_ranges(cnn, ["x", "a0"], samples, settings, "minmax", bytes_per_sample=4096)
    assert calls == [8, 4]


def test_ranges_match_the_data(cnn):
    x = images(6)
    samples = calibration.SampleSet(calibration.model_input_specs(cnn), [lambda: {"x": x}], [6], "test")
    r = calibration.collect_ranges(cnn, ["x"], samples, CalibrationSettings(progress=False), "minmax")
    assert r.amax["x"] == pytest.approx(float(np.abs(x).max()), rel=1e-6) and r.samples == 6


def test_cache_is_written_then_reused_and_invalidated(tmp_path):
    data = npz(tmp_path, x=images(20))
    cache = str(tmp_path / "calib.json")
    settings = CalibrationSettings(data=data, cache=cache, progress=False)
    first = graphopt.optimize(small_cnn(), "int8", calibration=settings, validate=False)
    assert first.pass_reports["quantize-int8"]["calibration"]["source"].startswith("calibrated")
    saved = json.load(open(cache))
    assert saved["method"] == "auto" and saved["ranges"] and all(v > 0 for v in saved["ranges"].values())
    again = graphopt.optimize(small_cnn(), "int8", calibration=settings, validate=False)
    assert again.pass_reports["quantize-int8"]["calibration"]["source"] == f"cache {cache}"
    same = [L["inputs"] for L in again.pass_reports["quantize-int8"]["layers"]]
    assert same == [L["inputs"] for L in first.pass_reports["quantize-int8"]["layers"]]
    # another method, or another model, calibrates again
    other = graphopt.optimize(small_cnn(), "int8{method=minmax}", calibration=settings, validate=False)
    assert other.pass_reports["quantize-int8"]["calibration"]["source"].startswith("calibrated")
    changed = graphopt.optimize(small_cnn(seed=5), "int8", calibration=settings, validate=False)
    assert changed.pass_reports["quantize-int8"]["calibration"]["source"].startswith("calibrated")


def test_a_corrupt_cache_is_an_error(tmp_path):
    cache = tmp_path / "calib.json"
    cache.write_text("{not json")
    settings = CalibrationSettings(data=npz(tmp_path, x=images(8)), cache=str(cache))
    with pytest.raises(CalibrationError, match="is not a graphopt calibration cache"):
        graphopt.optimize(small_cnn(), "int8", calibration=settings, validate=False)


def test_no_data_is_a_usage_error_naming_calib(tmp_path, capsys):
    from graphopt.cli.main import main
    from graphopt.quant.calibration import CalibrationRequired

    with pytest.raises(CalibrationRequired, match="--calib"):
        graphopt.optimize(small_cnn(), "int8", validate=False)
    path = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), path)
    code = main([str(path), "-p", "fuse,int8", "-q", "-o", str(tmp_path / "o.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "--calib" in err and err.count("\n") == 1 and not (tmp_path / "o.onnx").exists()


def test_random_calibration_only_when_asked_for(caplog):
    result = graphopt.optimize(small_cnn(), "int8", calibration=CalibrationSettings(data="random", random_samples=8),
                               validate=False, thresholds=NO_FLOOR)
    assert "calibrating on 8 random samples (--calib random)" in caplog.text
    assert result.pass_reports["quantize-int8"]["calibration"]["data"] == "random"


def test_entropy_keeps_the_full_range_of_a_few_discrete_values():
    """Pixels in 1/16 steps: KL divergence would clip everything into one bin (score 0)."""
    rng = np.random.default_rng(2)
    h = AbsHistogram()
    h.add(rng.integers(0, 17, 50_000) / 16.0 * (rng.random(50_000) < 0.4))
    assert h.threshold("entropy") == h.amax == 1.0


def test_fixed_batch_model_calibrates_in_whole_batches(tmp_path):
    model = build([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                  [fvi("x", [4, 8, 6, 6])], [fvi("y", [4, 8, 6, 6])], {"w": w(8, 8, 3, 3)})
    np.savez(tmp_path / "c.npz", x=REVIEW_RNG.standard_normal((44, 8, 6, 6)).astype(np.float32))
    result = graphopt.optimize(model, "int8", calibration=str(tmp_path / "c.npz"))
    cal = result.pass_reports["quantize-int8"]["calibration"]
    assert cal["samples"] % 4 == 0 and cal["held_out"] % 4 == 0 and cal["samples"] + cal["held_out"] == 44
    assert qdq_count(result) == 1
    np.savez(tmp_path / "one.npz", x=REVIEW_RNG.standard_normal((4, 8, 6, 6)).astype(np.float32))
    one = graphopt.optimize(model, "int8", calibration=str(tmp_path / "one.npz"))
    assert one.pass_reports["quantize-int8"]["calibration"]["held_out"] == 0  # one batch: all of it calibrates
    np.savez(tmp_path / "few.npz", x=REVIEW_RNG.standard_normal((6, 8, 6, 6)).astype(np.float32))
    with pytest.raises(CalibrationError, match=r"has shape \[6, 8, 6, 6\]; the model takes \[4, 8, 6, 6\]"):
        graphopt.optimize(model, "int8", calibration=str(tmp_path / "few.npz"), validate=False)

def test_cache_tells_models_and_feeds_apart(tmp_path):
    cache = str(tmp_path / "c.json")
    feeds = [{"x": REVIEW_RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(10)]

    def source(model, data):
        r = graphopt.optimize(model, "int8", calibration=CalibrationSettings(data=data, cache=cache), validate=False)
        return r.pass_reports["quantize-int8"]["calibration"]["source"]

    assert source(small_cnn(), feeds).startswith("calibrated")
    assert source(small_cnn(), feeds) == f"cache {cache}"
    heavier = small_cnn()
    for t in heavier.graph.initializer:
        if t.name.endswith("_w"):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 10, t.name))
    assert source(heavier, feeds).startswith("calibrated")  # same graph, other weights
    other = [{"x": f["x"] * 3} for f in feeds]
    assert source(heavier, other).startswith("calibrated")  # same model, other feeds

def test_cache_that_cannot_be_written_is_an_error(tmp_path, capsys):
    path = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), path)
    out = tmp_path / "o.onnx"
    code = main([str(path), "-p", "int8", "--calib", "random", "--calib-cache", str(tmp_path / "nope" / "c.json"),
                 "-o", str(out), "--no-validate"])
    err = capsys.readouterr().err
    assert code == 1 and "calibration cache" in err and "does not exist" in err and not out.exists()

@pytest.mark.parametrize("settings, message", [
    ({"holdout": 1.0}, "calibration setting holdout=1.0: must be at least 0 and below 1"),
    ({"samples": 0}, "calibration setting samples=0: must be at least 1"),
    ({"percentile": 0.0}, "calibration setting percentile=0.0: must be above 0 and at most 100"),
])
def test_calibration_settings_are_checked(settings, message):
    with pytest.raises(CalibrationError) as e:
        graphopt.optimize(small_cnn(), "int8", calibration=CalibrationSettings(**settings))
    assert str(e.value) == message

def test_folder_mixing_labelled_and_unlabelled_files(tmp_path):
    (tmp_path / "d").mkdir()
    x = REVIEW_RNG.standard_normal((10, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "d" / "a.npz", x=x[:6], labels=np.zeros(6, np.int64))
    np.savez(tmp_path / "d" / "b.npz", x=x[6:])
    result = graphopt.optimize(small_cnn(), "int8", calibration=CalibrationSettings(data=str(tmp_path / "d"), holdout=0.5))
    assert result.validation.ok

def test_labels_must_be_integers(tmp_path):
    np.savez(tmp_path / "c.npz", x=REVIEW_RNG.standard_normal((4, 3, 16, 16)).astype(np.float32), labels=np.array(list("abcd")))
    with pytest.raises(CalibrationError, match="'labels' must hold integer class indices, not <U1"):
        graphopt.optimize(small_cnn(), "int8", calibration=str(tmp_path / "c.npz"), validate=False)

def test_input_of_unknown_rank_asks_for_its_shape():
    model = build([helper.make_node("MatMul", ["x", "w"], ["y"])], [fvi("x", None)], [fvi("y", None)], {"w": w(16, 8)},
                  check=False)
    with pytest.raises(CalibrationError, match="input 'x' has no known rank; give its shape with --input-shape x:"):
        graphopt.optimize(model, "int8", calibration="random", validate=False)
    result = graphopt.optimize(model, "int8", calibration="random", input_shapes={"x": (2, 16)}, validate=False)
    assert qdq_count(result) == 1

def test_input_named_labels_is_an_input():
    model = build([helper.make_node("MatMul", ["labels", "w"], ["y"], name="mm")],
                  [fvi("labels", ["N", 16])], [fvi("y", ["N", 8])], {"w": w(16, 8)})
    feeds = [{"labels": REVIEW_RNG.standard_normal((1, 16)).astype(np.float32)} for _ in range(8)]
    result = graphopt.optimize(model, "int8", calibration=feeds)
    assert qdq_count(result) == 1 and result.validation.ok
