"""Calibration: the range of every activation a quantized model will see (docs/ARCHITECTURE.md, TensorRT facts).

Data comes from an .npz keyed by input name (first axis = samples), a folder of them, or any
iterable of feed dicts (Python API). Without data, seeded random inputs stand in, with a loud
warning. Ranges are collected in one streaming pass over the data, in batches sized so the
requested activations of one batch fit a memory cap; per tensor only a fixed-size histogram
of |x| is kept, never the activations themselves. Ranges can be cached as JSON.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from graphopt.errors import UserInputError
from graphopt.ir import Model, Tensor, format_shape
from graphopt.runtime.inputs import InputSpec, Synthesizer, model_inputs

log = logging.getLogger("graphopt")

METHODS = ("auto", "minmax", "percentile", "entropy", "mse")
# method=auto: per tensor, these candidate ranges are scored by the error of the quantized
# consumer layer's output (quant/range_search.py); (method, percentile)
AUTO_CANDIDATES = (("minmax", None), ("percentile", 99.9), ("percentile", 99.99), ("percentile", 99.999),
                   ("entropy", None), ("mse", None))
AUTO_SAMPLES = 8  # calibration samples whose activations are kept to score the candidates
LABELS_KEY = "labels"  # an optional key in evaluation data: the expected class per sample
HISTOGRAM_BINS = 2048
HISTOGRAM_CHUNK = 1 << 16  # values binned at a time (buffers that stay in cache)
# Above this many values in a batch, a tensor's histogram bulk comes from seeded random blocks
# of HISTOGRAM_BLOCK values and only its tail from every value (AbsHistogram.add,
# docs/ARCHITECTURE.md, Lossy passes). The largest |x| always comes from every value.
HISTOGRAM_SAMPLE = 1 << 18
HISTOGRAM_BLOCK = 1 << 12
HISTOGRAM_TAIL = 1e-3  # the share of a sample above which bins are counted exactly
INT8_LEVELS = 128  # |q| levels of symmetric int8 (0..127), what the entropy method quantizes to
CACHE_VERSION = 1
HELD_OUT_MAX = 256


RANDOM = "random"  # --calib random / calibration="random": seeded synthesized inputs, only when asked for
CALIBRATION_REQUIRED = ("int8 needs calibration data: give --calib DATA.npz (or a folder of .npz; API: "
                        "calibration=...), or --calib random to calibrate on synthesized inputs, whose ranges "
                        "rarely fit real data")


class CalibrationError(UserInputError):
    """Calibration data that does not fit the model, or a calibration cache that cannot be used."""


class CalibrationRequired(UserInputError):
    """A pass that calibrates ran without data and without --calib random: a usage error."""

    exit_code = 2


@dataclass
class CalibrationSettings:
    """How to calibrate: from the CLI (--calib ...), a pipeline's `calibrate {}` block or the API."""

    data: Union[None, str, os.PathLike, Iterable[Mapping[str, np.ndarray]]] = None
    method: str = "auto"
    percentile: float = 99.99
    samples: int = 512  # calibration samples used at most
    batch_size: int = 32
    holdout: float = 0.2  # share of the samples kept back to measure accuracy, not calibrate on
    cache: Optional[str] = None  # JSON calibration cache: read if valid, written otherwise
    memory_mb: int = 1024  # activations of one calibration batch stay below this
    progress: bool = True
    seed: int = 0
    random_samples: int = 64  # used when there is no data

    def check(self) -> None:
        """One clear error for a setting no calibration can run with."""
        for name, ok, what in SETTING_RANGES:
            value = getattr(self, name)
            if not ok(value):
                raise CalibrationError(f"calibration setting {name}={value!r}: must be {what}")
        if self.method not in METHODS:
            raise CalibrationError(f"calibration method {self.method!r}: use one of {', '.join(METHODS)}")


# The settings a user gives, by the same names everywhere: a pipeline file's `calibrate {}` block
# (its schema: name -> type, or the allowed words), the API's CalibrationSettings, and the command
# line, whose flags for them are CLI_FLAGS (the others come from pipeline files or the API).
USER_SETTINGS: dict[str, object] = {"data": str, "method": METHODS, "samples": int, "percentile": float,
                                    "cache": str, "batch_size": int, "holdout": float, "memory_mb": int}
CLI_FLAGS = {"data": "--calib", "method": "--calib-method", "cache": "--calib-cache"}

# (setting, check, what it must be): shared with the pipeline language's `calibrate {}` block
SETTING_RANGES = (
    ("samples", lambda v: v >= 1, "at least 1"),
    ("batch_size", lambda v: v >= 1, "at least 1"),
    ("memory_mb", lambda v: v >= 1, "at least 1"),
    ("random_samples", lambda v: v >= 1, "at least 1"),
    ("holdout", lambda v: 0 <= v < 1, "at least 0 and below 1"),
    ("percentile", lambda v: 0 < v <= 100, "above 0 and at most 100"),
)


# ------------------------------------------------------------------------------ data
def model_input_specs(model: Model) -> list[InputSpec]:
    """The model's inputs (runtime/inputs.py), each a typed tensor of known rank: what samples need."""
    specs = model_inputs(model)
    for s in specs:
        if not s.is_tensor:
            raise CalibrationError(f"input {s.name!r} is not a typed tensor; cannot feed calibration data")
        if s.shape is None:
            raise CalibrationError(f"input {s.name!r} has no known rank; give its shape with --input-shape "
                                   f"{s.name}:DIMxDIM...")
    return specs


class SampleSet:
    """Samples to run, in chunks loaded one at a time (a folder of .npz files is never read at once).
    Each chunk is a dict input name -> array whose first axis is the sample axis. `stacked`: that
    axis is extra (each sample is a whole feed); otherwise it is the model's batch axis. A chunk
    may also hold `labels` (when no model input has that name): the expected class per sample."""

    def __init__(self, specs: Sequence[InputSpec], chunks: Sequence[Callable[[], dict]], counts: Sequence[int],
                 origin: str, fingerprint: Optional[str] = None, stacked: bool = False):
        self.specs = list(specs)
        self._chunks, self._counts = list(chunks), list(counts)
        self.origin = origin
        self.fingerprint = fingerprint
        self.stacked = stacked
        self.count = sum(counts)
        self._start, self._stop = 0, self.count
        self.labels_key = LABELS_KEY if all(sp.name != LABELS_KEY for sp in specs) else None

    @property
    def size(self) -> int:
        return self._stop - self._start

    @property
    def key(self) -> Optional[str]:
        """What the calibration cache compares: the data and the slice of it used."""
        return f"{self.fingerprint}:{self._start}-{self._stop}" if self.fingerprint else None

    @property
    def fixed_batch(self) -> Optional[int]:
        """The batch size the model demands (a fixed first dim), if any."""
        if self.stacked:
            return None
        return next((sp.shape[0] for sp in self.specs if sp.shape and isinstance(sp.shape[0], int)), None)

    def subset(self, start: int, stop: int) -> "SampleSet":
        s = SampleSet(self.specs, self._chunks, self._counts, self.origin, self.fingerprint, self.stacked)
        s._start, s._stop = self._start + start, self._start + min(stop, self.size)
        return s

    def split(self, holdout: float, limit: int) -> tuple["SampleSet", Optional["SampleSet"]]:
        """(calibration samples, held-out samples): the last `holdout` share is held out, in whole
        batches when the model's batch is fixed; at least one batch always calibrates."""
        unit = self.fixed_batch or 1
        total = self.size - self.size % unit  # a fixed batch never runs short
        limit = max(unit, limit - limit % unit)
        held = int(round(total * holdout / unit)) * unit if holdout > 0 else 0
        held = min(held, total - unit) if total >= 2 * unit else 0
        if holdout > 0 and total >= 2 * unit:
            held = max(held, unit)
        calib = self.subset(0, min(limit, total - held))
        return calib, (self.subset(total - held, total) if held else None)

    def batch_size(self, wanted: int) -> int:
        """The batch to run: a model with a fixed batch dim gets exactly that, stacked feeds one."""
        if self.stacked:
            return 1
        return self.fixed_batch or max(1, wanted)

    def batches(self, batch: int) -> Iterator[tuple[dict[str, np.ndarray], int, Optional[np.ndarray]]]:
        """(feed for the model, samples in it, their labels or None) for consecutive batches of
        at most `batch` samples; a model with a fixed batch dim only gets whole batches."""
        batch = self.batch_size(batch)
        names = [sp.name for sp in self.specs]
        pending: list[dict] = []
        have = 0
        offset = 0
        for load, n in zip(self._chunks, self._counts):
            lo, hi = max(self._start - offset, 0), min(self._stop - offset, n)
            offset += n
            if lo >= hi:
                continue
            chunk = load()
            keys = names + ([self.labels_key] if self.labels_key in chunk else [])
            while lo < hi:
                take = min(hi - lo, batch - have)
                pending.append({k: chunk[k][lo:lo + take] for k in keys})
                have += take
                lo += take
                if have == batch:
                    yield self._feed(pending, names), have, self._labels(pending)
                    pending, have = [], 0
        if pending and not self.fixed_batch:
            yield self._feed(pending, names), have, self._labels(pending)

    def _labels(self, parts: list[dict]) -> Optional[np.ndarray]:
        if self.labels_key is None or not all(self.labels_key in p for p in parts):
            return None  # labels for only part of a batch are no labels
        labels = [np.asarray(p[self.labels_key]) for p in parts]
        return labels[0][0] if self.stacked else np.concatenate(labels)

    def _feed(self, parts: list[dict], names: list[str]) -> dict:
        if self.stacked:  # one sample: the array without its sample axis is the feed
            return {k: np.asarray(parts[0][k][0]) for k in names}
        if len(parts) == 1:
            return {k: np.ascontiguousarray(parts[0][k]) for k in names}
        return {k: np.concatenate([p[k] for p in parts]) for k in names}


def load_samples(source, model: Model) -> SampleSet:
    """Calibration data from a path (.npz or a folder of them) or an iterable of feeds, checked
    against the model's inputs: names, dtypes and every fixed dim. One clear error otherwise."""
    import glob
    import hashlib

    specs = model_input_specs(model)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            files = sorted(glob.glob(os.path.join(path, "*.npz")))
            if not files:
                raise CalibrationError(f"calibration folder {path!r} has no .npz files")
        elif os.path.isfile(path):
            files = [path]
        else:
            raise CalibrationError(f"calibration data {path!r}: no such file or folder")
        chunks, counts, digest, stacked = [], [], hashlib.sha256(), set()
        for f in files:
            n, st = _check_npz(f, specs)
            stacked.add(st)
            info = os.stat(f)
            digest.update(f"{os.path.basename(f)}:{info.st_size}:{info.st_mtime_ns}".encode())
            chunks.append(_npz_loader(f))
            counts.append(n)
        if len(stacked) > 1:
            raise CalibrationError(f"calibration folder {path!r} mixes files with and without a sample axis")
        return SampleSet(specs, chunks, counts, path, digest.hexdigest()[:16], stacked.pop())
    if isinstance(source, Mapping):
        raise CalibrationError("calibration data must be a path or an iterable of feeds (dicts), not one dict")
    feeds = []
    digest = hashlib.sha256()
    for i, feed in enumerate(source):
        if not isinstance(feed, Mapping):
            raise CalibrationError(f"calibration feed {i} is a {type(feed).__name__}, not a dict of input name -> array")
        arrays = {k: np.asarray(v) for k, v in feed.items()}
        _check_arrays(arrays, specs, f"calibration feed {i}", batched=False)
        for k in sorted(arrays):
            digest.update(f"{k}:{arrays[k].dtype}:{arrays[k].shape}".encode())
            digest.update(np.ascontiguousarray(arrays[k]).tobytes())
        feeds.append({k: v[None] for k, v in arrays.items()})  # each feed is one stacked sample
    if not feeds:
        raise CalibrationError("the calibration data is empty")
    return SampleSet(specs, [lambda f=f: f for f in feeds], [1] * len(feeds), "feeds", digest.hexdigest()[:16],
                     stacked=True)


def _npz_loader(path: str) -> Callable[[], dict]:
    def load() -> dict:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return load


def _check_npz(path: str, specs: Sequence[InputSpec]) -> tuple[int, bool]:
    """Check an .npz's keys, dtypes and shapes from the array headers, without loading data.
    Returns (samples, stacked)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            headers = {}
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(f)
                headers[info.filename[:-4]] = (tuple(shape), np.dtype(dtype))
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise CalibrationError(f"calibration data {path!r} is not a readable .npz file ({e})") from None
    fake = {k: np.lib.stride_tricks.as_strided(np.zeros(1, dt), shape=sh, strides=(0,) * len(sh))
            for k, (sh, dt) in headers.items()}
    where = f"calibration data {os.path.basename(path)}"
    return _check_arrays(fake, specs, where, batched=True)


def _check_arrays(arrays: Mapping[str, np.ndarray], specs: Sequence[InputSpec], where: str,
                  batched: bool) -> tuple[int, bool]:
    """Check names, dtypes and fixed dims. `batched`: axis 0 of every array counts samples
    (it is the model's batch axis, or an extra axis when the array has one more dim than the
    input); otherwise each array is one feed as the model takes it. Returns (samples, stacked)."""
    names = {s.name for s in specs}
    for k in arrays:
        if k not in names and k != LABELS_KEY:
            raise CalibrationError(f"{where}: {k!r} is not a model input; inputs are {', '.join(sorted(names))}")
    count, stacked = None, set()
    for s in specs:
        if s.name not in arrays:
            raise CalibrationError(f"{where}: no data for input {s.name!r}")
        a = arrays[s.name]
        if a.dtype != s.dtype:
            raise CalibrationError(f"{where}: input {s.name!r} is {a.dtype}, the model takes {s.dtype}")
        shape = tuple(a.shape)
        if not batched:
            if not _fits(shape, s.shape):
                raise CalibrationError(f"{where}: input {s.name!r} has shape {list(shape)}; the model takes {format_shape(s.shape)}")
            n, st = 1, True
        else:
            n, st = _samples_of(shape, s)
            if n is None:
                raise CalibrationError(f"{where}: input {s.name!r} has shape {list(shape)}; the model takes "
                                       f"{format_shape(s.shape)} (samples along the first axis)")
        if count is not None and n != count:
            raise CalibrationError(f"{where}: inputs have different sample counts ({count} and {n} for {s.name!r})")
        count = n
        stacked.add(st)
    if len(stacked) > 1:
        raise CalibrationError(f"{where}: some inputs have an extra sample axis and some do not")
    labels = arrays.get(LABELS_KEY) if LABELS_KEY not in names else None
    if labels is not None and labels.dtype.kind not in "iu":
        raise CalibrationError(f"{where}: {LABELS_KEY!r} must hold integer class indices, not {labels.dtype}")
    if batched and labels is not None and count is not None and labels.shape[:1] != (count,):
        raise CalibrationError(f"{where}: {LABELS_KEY!r} has {labels.shape[0] if labels.ndim else 0} "
                               f"samples, the inputs {count}")
    if not count:
        raise CalibrationError(f"{where}: no samples")
    return count, stacked.pop() if stacked else False


def _samples_of(shape: tuple, spec: InputSpec) -> tuple[Optional[int], bool]:
    """(sample count, stacked) of an array for an input, or (None, False) if it does not fit."""
    if spec.shape and len(shape) == len(spec.shape) and _fits(shape[1:], spec.shape[1:]):
        first = spec.shape[0]
        if isinstance(first, int) and shape[0] % first:
            return None, False
        return shape[0], False
    if len(shape) == len(spec.shape) + 1 and _fits(shape[1:], spec.shape):
        return shape[0], True
    return None, False


def _fits(shape: tuple, dims: tuple) -> bool:
    return len(shape) == len(dims) and all(not isinstance(d, int) or d == s for s, d in zip(shape, dims))


def split_samples(settings: CalibrationSettings, model: Model) -> tuple[Optional[SampleSet], Optional[SampleSet]]:
    """(samples to calibrate on, samples held out to measure accuracy) of the run's data, the
    same split for every pass and for validation; (None, None) without data."""
    if settings.data is None:
        return None, None
    if isinstance(settings.data, str) and settings.data == RANDOM:
        return _cap(*random_samples(model, settings).split(settings.holdout, settings.samples))
    return _cap(*load_samples(settings.data, model).split(settings.holdout, settings.samples))


def _cap(calib: SampleSet, held: Optional[SampleSet]) -> tuple[SampleSet, Optional[SampleSet]]:
    """Accuracy needs a few hundred held-out samples at most: each candidate model runs them all."""
    if held is not None and held.size > HELD_OUT_MAX:
        held = held.subset(held.size - HELD_OUT_MAX, held.size)
    return calib, held


def random_samples(model: Model, settings: CalibrationSettings) -> SampleSet:
    """Seeded synthesized inputs (runtime/inputs.py: values that fit how the graph uses each
    input), `settings.random_samples` of them, each sample a whole feed."""
    specs = model_input_specs(model)
    feeds = Synthesizer(model).feeds(settings.random_samples, settings.seed)
    arrays = {s.name: np.stack([f[s.name] for f in feeds]) for s in specs}
    return SampleSet(specs, [lambda: arrays], [len(feeds)], "random",
                     f"random-{settings.seed}-{settings.random_samples}", stacked=True)


# ------------------------------------------------------------------------------ histograms
class AbsHistogram:
    """A streaming histogram of |x| over [0, width * bins). When a larger value arrives, `k`
    neighbouring bins merge into one (exact: counts only move into wider bins)."""

    def __init__(self, bins: int = HISTOGRAM_BINS, counting: bool = True):
        self.bins = bins
        self.counting = counting  # False: track the largest |x| only (all minmax needs)
        self.counts = np.zeros(bins, np.float64)
        self.width = 0.0
        self.amax = 0.0
        self.total = 0
        self.nonfinite = 0
        self._rng = np.random.default_rng(0)  # which blocks of a large tensor are binned: seeded

    def add(self, x: np.ndarray) -> None:
        """Add a batch of values. A large one (over HISTOGRAM_SAMPLE values) once the range is
        known is read from memory once: one pass finds its largest |x| and keeps the values
        above the histogram's current tail, the bulk comes from a sample."""
        x = np.asarray(x)
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        x = x.reshape(-1)
        if x.size == 0:
            return
        sampled = self.counting and self.width > 0.0 and x.size > HISTOGRAM_SAMPLE
        tail_from = self._tail_start() * self.width if sampled else None
        m, tail = self._scan(x, tail_from)
        if m is None or not math.isfinite(m):  # NaN or inf somewhere: count them, bin the rest
            a = np.abs(x)
            finite = np.isfinite(a)
            self.nonfinite += int(a.size - finite.sum())
            x = a[finite]
            if x.size == 0:
                return
            m, tail, tail_from, sampled = float(x.max()), None, None, False
        self.amax = max(self.amax, m)
        self.total += x.size
        if not self.counting:
            return
        if self.width == 0.0:
            if m == 0.0:
                self.counts[0] += x.size
                return
            self.width = m / self.bins * (1 + 1e-6)
        elif m >= self.width * self.bins:
            k = math.ceil(m / (self.width * self.bins) * (1 + 1e-6))
            if k >= self.bins:
                self.counts = np.concatenate([[self.counts.sum()], np.zeros(self.bins - 1)])
            else:
                padded = np.zeros(self.bins * k)
                padded[: self.bins] = self.counts
                self.counts = padded.reshape(self.bins, k).sum(axis=1)
            self.width *= k
        scale = np.float32(1.0 / self.width)
        if x.size <= HISTOGRAM_SAMPLE:
            self.counts += self._bin(x, scale)
            return
        # A large tensor: the bulk of the histogram is estimated from a sample, weighted to the
        # tensor's size; its tail is counted exactly over every value, so rare outliers move
        # percentiles, entropy and MSE as they would on all the data. The tail starts where the
        # histogram so far has its top HISTOGRAM_TAIL (one bin above: rounding at the edge);
        # on a first batch, where the sample's has it (and its values are read once more).
        sample = self._bin(self._sample(x), scale)
        if sampled:
            low = min(self.bins, math.ceil(tail_from / self.width) + 1)
            exact = self._bin(tail, scale, low) if tail.size else np.zeros(self.bins)
        else:
            above = np.cumsum(sample[::-1])[::-1]  # sample values in this bin or higher
            low = int(np.argmax(above <= HISTOGRAM_TAIL * above[0])) if above[-1] <= HISTOGRAM_TAIL * above[0] \
                else self.bins
            exact = self._bin(x, scale, low) if low < self.bins else None
        self.counts[:low] += sample[:low] * (x.size / sample.sum())
        if low < self.bins:
            self.counts[low:] += exact[low:]

    def _tail_start(self) -> int:
        """The first bin of the histogram's top HISTOGRAM_TAIL share (at least 1; `bins` when
        the top bin alone holds more: then only values past the range are the tail)."""
        above = np.cumsum(self.counts[::-1])[::-1]
        if above[-1] > HISTOGRAM_TAIL * above[0]:
            return self.bins
        return max(1, int(np.argmax(above <= HISTOGRAM_TAIL * above[0])))

    def _scan(self, x: np.ndarray, tail_from: Optional[float]) -> tuple[Optional[float], Optional[np.ndarray]]:
        """(largest |x|, the values with |x| >= tail_from when given) in one pass of cache-sized
        chunks; largest None when a value is NaN or infinite."""
        m, tails = 0.0, []
        step = min(x.size, HISTOGRAM_CHUNK)
        buf = np.empty(step, np.float32)
        mask = np.empty(step, bool) if tail_from is not None else None
        for start in range(0, x.size, step):
            part = x[start:start + step]
            b = buf[: part.size]
            np.abs(part, out=b)
            cm = float(b.max())
            if not math.isfinite(cm):
                return None, None
            m = max(m, cm)
            if mask is not None and cm >= tail_from:
                np.greater_equal(b, tail_from, out=mask[: part.size])
                tails.append(part[mask[: part.size]])
        if mask is None:
            return m, None
        return m, (np.concatenate(tails) if tails else np.zeros(0, np.float32))

    def _bin(self, x: np.ndarray, scale: np.float32, low: int = 0) -> np.ndarray:
        """Counts per bin of |x| (bin index floor(|x| * scale) = |trunc(x * scale)|, in float32;
        a value rounding onto the top edge counts in the last bin). With `low`, only values of
        bin `low` or above are counted (the others stay 0). In cache-sized chunks through reused
        buffers: the same numbers as one pass over the tensor, without its temporaries."""
        counts = np.zeros(self.bins, np.float64)
        n = x.size
        step = min(n, HISTOGRAM_CHUNK)
        buf, idx = np.empty(step, np.float32), np.empty(step, np.int32)
        mask = np.empty(step, bool) if low else None
        for start in range(0, n, step):
            part = x[start:start + step]
            b, i = buf[: part.size], idx[: part.size]
            np.multiply(part, scale, out=b)
            if low:
                np.abs(b, out=b)
                np.greater_equal(b, low, out=mask[: part.size])
                b = b[mask[: part.size]]
                if not b.size:
                    continue
                i = i[: b.size]
            np.copyto(i, b, casting="unsafe")
            np.abs(i, out=i)
            c = np.bincount(i)
            k = min(c.size, self.bins)
            counts[:k] += c[:k]
            if c.size > self.bins:
                counts[-1] += c[self.bins:].sum()
        return counts

    def _sample(self, x: np.ndarray) -> np.ndarray:
        """HISTOGRAM_SAMPLE values of `x`: random blocks (contiguous runs, not a fixed stride,
        which could fall on the same position of every row or channel)."""
        blocks = x.size // HISTOGRAM_BLOCK
        rows = x[: blocks * HISTOGRAM_BLOCK].reshape(blocks, HISTOGRAM_BLOCK)
        pick = np.sort(self._rng.choice(blocks, HISTOGRAM_SAMPLE // HISTOGRAM_BLOCK, replace=False))
        return rows[pick].reshape(-1)

    def threshold(self, method: str, percentile: float = 99.99) -> float:
        """The |x| range to quantize to by `method`; never above the largest value seen."""
        if method == "minmax" or self.amax == 0.0:
            return self.amax
        if method == "percentile":
            cdf = np.cumsum(self.counts) / self.counts.sum()
            i = int(np.searchsorted(cdf, percentile / 100.0))
            return min(self.amax, (i + 1) * self.width)
        if method == "entropy":
            if np.count_nonzero(self.counts) <= INT8_LEVELS:
                # a few distinct values (pixels in 1/16 steps, one-hot masks): KL divergence is
                # degenerate on such a histogram (clipping everything into one bin scores 0),
                # and INT8 levels cover the values anyway
                return self.amax
            return min(self.amax, _kl_threshold(self.counts) * self.width)
        if method == "mse":
            return min(self.amax, _mse_threshold(self.counts, self.width, self.amax))
        raise ValueError(f"unknown calibration method {method!r}")


def _kl_divergence(counts: np.ndarray, i: int) -> float:
    """KL(P||Q) of keeping the first `i` bins (outliers clipped into the last) and quantizing
    them to INT8_LEVELS levels, as TensorRT's entropy calibrator does."""
    p = counts[:i].copy()
    p[i - 1] += counts[i:].sum()
    nonzero = p > 0
    group = (np.arange(i) * INT8_LEVELS) // i
    sums = np.bincount(group, weights=counts[:i], minlength=INT8_LEVELS)
    used = np.bincount(group, weights=nonzero, minlength=INT8_LEVELS)
    q = np.where(nonzero, sums[group] / np.maximum(used[group], 1), 0.0)
    ps, qs = p.sum(), q.sum()
    if ps == 0 or qs == 0:
        return math.inf
    p, q = p / ps, q / qs
    mask = p > 0
    # P's clipped outlier bin may be where Q has nothing: smooth instead of returning infinity
    q = np.where(mask & (q == 0), 1e-10, q)
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def _kl_threshold(counts: np.ndarray) -> float:
    """Threshold (in bins) minimizing the KL divergence: a coarse scan, then finer ones.
    The first bin is flattened to its neighbour's count: the exact zeros a ReLU produces would
    otherwise dominate P and drag the threshold down (TensorRT's tools do the same)."""
    counts = counts.copy()
    counts[0] = counts[1]
    bins = len(counts)
    last = int(np.nonzero(counts)[0][-1]) + 1
    if last <= INT8_LEVELS:
        return last  # fewer occupied bins than levels: nothing to clip
    step = max(1, (last - INT8_LEVELS) // 48)
    candidates = range(INT8_LEVELS, last + 1, step)
    while True:  # scan, then rescan around the best at an eighth of the step, down to 1 bin
        best = min(candidates, key=lambda i: _kl_divergence(counts, i))
        if step == 1:
            return best + 0.5
        lo, hi = max(INT8_LEVELS, best - step), min(bins, best + step)
        step = max(1, step // 8)
        candidates = range(lo, hi + 1, step)


def _mse_threshold(counts: np.ndarray, width: float, amax: float) -> float:
    """Threshold minimizing the expected squared quantization error over the histogram."""
    centers = (np.arange(len(counts)) + 0.5) * width
    candidates = np.linspace(amax / 64, amax, 128)
    step = candidates[:, None] / 127.0
    clipped = np.maximum(centers[None, :] - candidates[:, None], 0.0) ** 2
    rounding = np.where(centers[None, :] <= candidates[:, None], step ** 2 / 12.0, 0.0)
    err = (clipped + rounding) @ counts
    return float(candidates[int(np.argmin(err))])


# ------------------------------------------------------------------------------ running
@dataclass
class CalibrationResult:
    amax: dict[str, float]  # tensor -> |x| range
    method: str
    samples: int
    seconds: float
    nonfinite: dict[str, int] = field(default_factory=dict)
    # method=auto: tensor -> {candidate name: range}, and the first AUTO_SAMPLES samples' values
    candidates: dict[str, dict[str, float]] = field(default_factory=dict)
    kept: dict[str, list] = field(default_factory=dict)  # batches as the model computes them


def collect_ranges(model: Model, tensors: Sequence[str], samples: SampleSet, settings: CalibrationSettings,
                   method: Optional[str] = None, bytes_per_sample: Optional[int] = None) -> CalibrationResult:
    """Run `model` over `samples` with every tensor in `tensors` exposed as an output and return
    each one's range by `method`. Streaming: one batch's activations in memory at a time."""
    from graphopt.onnx_io import emit as backend
    from graphopt.runtime.session import Session, usable_cores

    method = method or settings.method
    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}")
    start = time.perf_counter()
    m = model.clone()
    inputs = {v.name for v in m.graph.inputs}
    outputs = {v.name for v in m.graph.outputs}
    for name in tensors:
        if name not in inputs and name not in outputs:
            m.graph.outputs.append(m.graph.value(name))
    hists = {name: AbsHistogram(counting=method != "minmax") for name in tensors}
    batch = settings.batch_size
    if bytes_per_sample:
        batch = max(1, min(batch, settings.memory_mb * (1 << 20) // max(bytes_per_sample, 1)))
    done = 0
    kept: dict[str, list] = {name: [] for name in tensors} if method == "auto" else {}
    progress = _Progress(samples.size, f"calibrating ({method}, {len(tensors)} tensors)", settings.progress)
    # One batch at a time: onnxruntime runs it on every core, then its tensors are binned on
    # every core (numpy's elementwise work releases the GIL). Running the next batch while
    # binning this one was slower: both are memory-bound and onnxruntime's threads wait for the
    # busy core. The arena keeps one batch's buffers for the next (docs/ARCHITECTURE.md, Lossy
    # passes).
    fetch = [t for t in tensors if t not in inputs]
    with Session(backend.ort_view(m), optimized="all", arena=True) as sess, ThreadPoolExecutor(usable_cores()) as pool:
        for feed, n in ((f, n) for f, n, _ in samples.batches(batch)):
            out = sess.run(feed, fetch) if fetch else {}
            values = {name: out[name] if name in out else feed[name] for name in tensors}
            # largest tensors first, so the cores finish together
            list(pool.map(lambda item: hists[item[0]].add(item[1]),
                          sorted(values.items(), key=lambda item: -np.asarray(item[1]).size)))
            if kept and done < AUTO_SAMPLES:
                for name in tensors:
                    x = np.asarray(values[name])
                    kept[name].append(x if samples.stacked or x.ndim == 0 else x[: AUTO_SAMPLES - done])
            del out, values
            done += n
            progress.update(done)
    progress.close()
    if done == 0:
        fixed = f"; the model's batch is fixed at {samples.fixed_batch}" if samples.fixed_batch else ""
        raise CalibrationError(f"no samples left to calibrate on ({samples.origin}: {samples.count} samples{fixed})")
    nonfinite = {n: h.nonfinite for n, h in hists.items() if h.nonfinite}
    if method == "auto":
        cands = {name: {(m if p is None else f"{m}{p:g}"): h.threshold(m, p if p is not None else settings.percentile)
                        for m, p in AUTO_CANDIDATES} for name, h in hists.items()}
        amax = {name: c["mse"] for name, c in cands.items()}  # until range_search scores them
        return CalibrationResult(amax, method, done, time.perf_counter() - start, nonfinite=nonfinite,
                                 candidates=cands, kept=kept)
    amax = {name: h.threshold(method, settings.percentile) for name, h in hists.items()}
    return CalibrationResult(amax, method, done, time.perf_counter() - start, nonfinite=nonfinite)



class _Progress:
    """A one-line progress bar on stderr when it is a terminal; a log line otherwise."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label = total, label
        self.tty = enabled and sys.stderr.isatty()
        self.enabled = enabled
        self.last = 0.0

    def update(self, done: int) -> None:
        if not self.tty:
            return
        now = time.perf_counter()
        if now - self.last < 0.1 and done < self.total:
            return
        self.last = now
        frac = done / max(self.total, 1)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\rgraphopt: {self.label} [{bar:<30s}] {done}/{self.total}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
        elif self.enabled:
            log.info("%s: %d samples", self.label, self.total)


# ------------------------------------------------------------------------------ cache
def read_cache(path: str, method: str, settings: CalibrationSettings, data_fingerprint: Optional[str],
               model_fingerprint: str, tensors: Sequence[str]) -> Optional[dict[str, float]]:
    """Ranges from a cache written by an earlier run with the same method, data and model;
    None (with the reason logged) when it cannot be reused."""
    import json

    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            cache = json.load(f)
        ranges = {k: float(v) for k, v in cache["ranges"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CalibrationError(f"calibration cache {path!r} is not a graphopt calibration cache ({e})") from None
    want = {"version": CACHE_VERSION, "method": method, "percentile": settings.percentile,
            "data": data_fingerprint, "model": model_fingerprint}
    if data_fingerprint is None:
        log.warning("calibration cache %s: this data has no fingerprint; calibrating again", path)
        return None
    for key, value in want.items():
        if cache.get(key) != value:
            log.warning("calibration cache %s was made with a different %s; calibrating again", path, key)
            return None
    missing = [t for t in tensors if t not in ranges]
    if missing:
        log.warning("calibration cache %s has no range for %s; calibrating again", path, missing[0])
        return None
    return {t: ranges[t] for t in tensors}


def write_cache(path: str, method: str, settings: CalibrationSettings, data_fingerprint: Optional[str],
                model_fingerprint: str, ranges: Mapping[str, float]) -> None:
    import json

    cache = {"version": CACHE_VERSION, "method": method, "percentile": settings.percentile,
             "data": data_fingerprint, "model": model_fingerprint,
             "ranges": {k: float(ranges[k]) for k in sorted(ranges)}}
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(cache, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:
        raise CalibrationError(f"cannot write the calibration cache {path!r}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_cache_path(path: str) -> None:
    """Refuse a cache that could not be written, before spending time on calibration."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CalibrationError(f"calibration cache {path!r} is a folder")
    if not os.path.isdir(folder):
        raise CalibrationError(f"calibration cache {path!r}: folder {folder!r} does not exist")


def model_fingerprint(model: Model) -> str:
    """A hash of the main graph, for the cache: ops, attributes, value names and the bytes of
    every constant (the same graph with other weights has other ranges)."""
    import hashlib

    h = hashlib.sha256()
    for node in model.graph.toposort():
        h.update(node.op_type.encode())
        graphs = {name for name, _, _ in node.subgraphs()}  # their repr is not stable; calibration skips them
        for k in sorted(set(node.attrs) - graphs):
            value = node.attrs[k].value
            h.update(k.encode())
            for item in value if isinstance(value, (list, tuple)) else [value]:
                h.update(item.raw_bytes() if isinstance(item, Tensor) else repr(item).encode())
        for v in node.inputs + node.outputs:
            h.update(b"|" + (v.name.encode() if v is not None else b""))
    for v in sorted(model.graph.initializers, key=lambda v: v.name):
        h.update(f"{v.name}:{v.const.dtype}:{v.const.shape}".encode())
        h.update(v.const.raw_bytes())
    return h.hexdigest()[:16]
