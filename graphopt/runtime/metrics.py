"""Accuracy of a lossy model (int8, prune, fp16) against its FP32 reference (docs/ARCHITECTURE.md, Validation):
cosine similarity, signal-to-noise ratio, top-1 agreement and, when labels are known, accuracy.

Outputs are compared per sample. Class scores are rank-2 or rank-3 outputs (batch, [positions,]
classes) with more than one class; top-1 is their argmax along the last axis.

Raw cosine and SNR are dominated by an output's largest channels (a detector's box coordinates
up to 640 hide its class scores in [0, 1]), so every float output also gets a channel-normalized
cosine and SNR: each channel is z-scored with the reference's mean and deviation over the
held-out samples before comparing. The channel axis is the axis whose channels' magnitudes
differ the most (the last axis of class scores, the channel axis of a (batch, 4 + classes,
anchors) detection head). The default accuracy floor (runtime/validate.py) is on these.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np


@dataclass
class OutputAccuracy:
    name: str
    cosine: float  # mean over samples
    min_cosine: float
    snr_db: float
    top1_agreement: Optional[float] = None  # percent, for class-score outputs
    norm_cosine: Optional[float] = None  # mean over samples, each channel z-scored by the reference
    norm_snr_db: Optional[float] = None
    channel_axis: Optional[int] = None  # the axis normalized


@dataclass
class AccuracyReport:
    samples: int
    outputs: list[OutputAccuracy] = field(default_factory=list)
    accuracy_ref: Optional[float] = None  # percent, when the data has labels
    accuracy: Optional[float] = None

    @property
    def cosine(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)

    @property
    def snr_db(self) -> float:
        return min((o.snr_db for o in self.outputs), default=math.inf)

    @property
    def norm_cosine(self) -> float:
        return min((o.norm_cosine for o in self.outputs if o.norm_cosine is not None), default=1.0)

    @property
    def norm_snr_db(self) -> float:
        return min((o.norm_snr_db for o in self.outputs if o.norm_snr_db is not None), default=math.inf)

    @property
    def top1_agreement(self) -> Optional[float]:
        vals = [o.top1_agreement for o in self.outputs if o.top1_agreement is not None]
        return min(vals) if vals else None

    def drop(self) -> float:
        """The loss `max_drop` budgets, in points: accuracy when labels are known, else top-1
        disagreement with the reference, else (1 - cosine) x 100."""
        if self.accuracy is not None and self.accuracy_ref is not None:
            return self.accuracy_ref - self.accuracy
        if self.top1_agreement is not None:
            return 100.0 - self.top1_agreement
        return (1.0 - self.cosine) * 100.0

    def summary(self) -> str:
        parts = [f"cosine {self.cosine:.5f}", f"channel-normalized cosine {self.norm_cosine:.5f}",
                 f"SNR {self.snr_db:.1f} dB"]
        if self.top1_agreement is not None:
            parts.append(f"top-1 agreement {self.top1_agreement:.2f}%")
        if self.accuracy is not None:
            parts.append(f"accuracy {self.accuracy:.2f}% (FP32 {self.accuracy_ref:.2f}%)")
        return ", ".join(parts) + f" on {self.samples} samples"

    def to_dict(self) -> dict:
        d = {"samples": self.samples, "cosine": self.cosine, "snr_db": _finite(self.snr_db),
             "norm_cosine": self.norm_cosine, "norm_snr_db": _finite(self.norm_snr_db),
             "top1_agreement": self.top1_agreement, "accuracy_ref": self.accuracy_ref,
             "accuracy": self.accuracy, "drop": self.drop(), "outputs": [asdict(o) for o in self.outputs]}
        for o in d["outputs"]:
            o["snr_db"] = _finite(o["snr_db"])
            o["norm_snr_db"] = _finite(o["norm_snr_db"]) if o["norm_snr_db"] is not None else None
        return d


def _finite(x: float):
    return x if math.isfinite(x) else None  # JSON has no infinity


class _Accumulator:
    def __init__(self):
        self.cos_sum = 0.0
        self.cos_min = 1.0
        self.n = 0
        self.signal = 0.0
        self.noise = 0.0
        self.agree = 0
        self.positions = 0
        self.predictions = True  # class scores or integer predictions in every batch


def _predictions(r: np.ndarray) -> Optional[np.ndarray]:
    """What an output predicts: the argmax of class scores, an integer output itself."""
    if r.dtype.kind in "iub":
        return r
    if r.dtype.kind == "f" and r.ndim in (2, 3) and r.shape[-1] > 1:  # (batch, [positions,] classes)
        return r.argmax(axis=-1)
    return None


def compare(ref: Sequence[dict], new: Sequence[dict], counts: Sequence[int],
            labels: Optional[Sequence[Optional[np.ndarray]]] = None,
            prepared: Optional["Prepared"] = None) -> AccuracyReport:
    """Compare per-batch outputs. `counts` says how many samples each batch holds (the leading
    axis of every output is the sample axis when it matches; otherwise the batch is one sample).
    Float outputs get cosine and SNR; predictions (class scores, integer outputs) get agreement,
    and the first of them is checked against `labels` where the batch has them. `prepared`
    (Prepared(ref, counts)): the reference's side computed once, for many candidates."""
    acc: dict[str, _Accumulator] = {}
    correct_ref = correct_new = labelled = 0
    first_prediction: Optional[str] = None
    axes: dict[str, Optional[int]] = {}
    fast: dict[str, _RefOutput] = {}
    if prepared is not None and ref:
        for name in ref[0]:
            po = prepared.output(name)
            if po is not None and po.fits([n_all[name] for n_all in new]):
                fast[name] = po
    for b, (r_all, n_all, count) in enumerate(zip(ref, new, counts)):
        for name, r in r_all.items():
            r, n = np.asarray(r), np.asarray(n_all[name])
            a = acc.setdefault(name, _Accumulator())
            po = fast.get(name)
            if po is not None:
                po.add_float(a, b, n)
            elif r.dtype.kind == "f":
                _add_float(a, r, n, count)
            if name not in axes:
                axes[name] = po.axis if po is not None else (
                    channel_axis(r) if r.dtype.kind == "f" and r.ndim == 3 and r.shape[0] == count else None)
            # a (batch, channels, anchors) detection head: its last axis holds positions, not classes
            pr, pn = (None, None) if axes[name] not in (None, r.ndim - 1) else (
                po.predictions[b] if po is not None else _predictions(r), _predictions(n))
            if pr is None or pn is None or pr.shape != pn.shape:
                a.predictions = False
                continue
            a.agree += int(np.sum(pr == pn))
            a.positions += pr.size
            if first_prediction in (None, name):
                first_prediction = name
                lab = labels[b] if labels is not None else None
                if lab is not None and np.asarray(lab).size == pr.size:
                    lab = np.asarray(lab).reshape(pr.shape)
                    correct_ref += int(np.sum(pr == lab))
                    correct_new += int(np.sum(pn == lab))
                    labelled += lab.size
    report = AccuracyReport(samples=int(sum(counts)))
    for name, a in acc.items():
        top1 = 100.0 * a.agree / a.positions if a.predictions and a.positions else None
        if a.n == 0 and top1 is None:
            continue
        snr = math.inf if a.noise == 0 else 10 * math.log10(a.signal / a.noise) if a.signal > 0 else -math.inf
        cosine = a.cos_sum / a.n if a.n else 1.0
        out = OutputAccuracy(name, cosine, a.cos_min, snr, top1)
        if a.n:
            out.norm_cosine, out.norm_snr_db, out.channel_axis = fast[name].normalized([n[name] for n in new]) \
                if name in fast else _normalized([r[name] for r in ref], [n[name] for n in new], counts)
        report.outputs.append(out)
    if labelled:
        report.accuracy_ref = 100.0 * correct_ref / labelled
        report.accuracy = 100.0 * correct_new / labelled
    return report


def _add_float(a: _Accumulator, r: np.ndarray, n: np.ndarray, count: int) -> None:
    """Cosine per sample and the signal/noise sums. NaN or inf where the reference has the
    same value count as equal; elsewhere a non-finite value is all noise."""
    per = count if r.ndim and r.shape[0] == count else 1
    rf = r.astype(np.float64).reshape(per, -1)
    nf = n.astype(np.float64).reshape(per, -1)
    same = (rf == nf) | (np.isnan(rf) & np.isnan(nf))
    bad = ~np.isfinite(rf) | ~np.isfinite(nf)
    rf, nf = np.where(bad & same, 0.0, rf), np.where(bad & same, 0.0, nf)
    rf, nf = np.where(bad & ~same, 1.0, rf), np.where(bad & ~same, -1.0, nf)  # disagreeing non-finite: opposite
    dots = np.einsum("ij,ij->i", rf, nf)
    norms = np.linalg.norm(rf, axis=1) * np.linalg.norm(nf, axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1), np.where(np.all(rf == nf, axis=1), 1.0, 0.0))
    a.cos_sum += float(cos.sum())
    a.cos_min = min(a.cos_min, float(cos.min()))
    a.n += per
    a.signal += float(np.sum(rf * rf))
    a.noise += float(np.sum((rf - nf) ** 2))


NORM_FLOOR = 1e-3
MIN_PER_CHANNEL = 8  # values per channel (samples x positions) needed to normalize it  # a channel's deviation counts as at least this share of the largest one's


def channel_axis(r: np.ndarray) -> Optional[int]:
    """The axis (not the leading sample axis) whose channels' magnitudes differ the most: the
    ratio of the largest to the median per-channel RMS. None for rank < 2."""
    if r.ndim < 2:
        return None
    best, best_spread = r.ndim - 1, -1.0
    for ax in range(1, r.ndim):
        if r.shape[ax] < 2:
            continue
        rms = np.sqrt(np.mean(np.square(r, dtype=np.float64), axis=tuple(i for i in range(r.ndim) if i != ax)))
        med = float(np.median(rms))
        spread = float(rms.max()) / med if med > 0 else (math.inf if rms.max() > 0 else 0.0)
        if spread > best_spread * 1.5 or (ax == r.ndim - 1 and spread >= best_spread / 1.5):
            best, best_spread = ax, spread  # ties go to the last axis
    return best


def _normalized(ref: list, new: list, counts: Sequence[int]):
    """(mean per-sample cosine, SNR in dB, channel axis) of an output with every channel z-scored
    by the reference's statistics over all samples; (None, None, None) when it cannot be stacked."""
    try:
        arrays_r = [np.asarray(r, np.float64) for r in ref]
        arrays_r = [a if a.ndim and a.shape[0] == c else a[None] for a, c in zip(arrays_r, counts)]
        arrays_n = [np.asarray(n, np.float64).reshape(a.shape) for n, a in zip(new, arrays_r)]
        r, n = np.concatenate(arrays_r), np.concatenate(arrays_n)
    except (ValueError, TypeError):
        return None, None, None
    finite = np.isfinite(r) & np.isfinite(n)
    r, n = np.where(finite, r, 0.0), np.where(finite, n, 0.0)
    ax = channel_axis(r) if r.ndim >= 2 else None
    if ax is not None and r.size // r.shape[ax] < MIN_PER_CHANNEL:
        return None, None, None  # too few values per channel to estimate its statistics
    if ax is not None:
        others = tuple(i for i in range(r.ndim) if i != ax)
        mu = r.mean(axis=others, keepdims=True)
        sd = r.std(axis=others, keepdims=True)
        sd = np.maximum(sd, NORM_FLOOR * max(float(sd.max()), 1e-30))
        zr, zn = (r - mu) / sd, (n - mu) / sd
    else:
        zr, zn = r, n
    zr, zn = zr.reshape(len(zr), -1), zn.reshape(len(zn), -1)
    dots = np.einsum("ij,ij->i", zr, zn)
    norms = np.linalg.norm(zr, axis=1) * np.linalg.norm(zn, axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1), np.where(np.all(zr == zn, axis=1), 1.0, 0.0))
    signal, noise = float(np.sum(zr * zr)), float(np.sum((zr - zn) ** 2))
    snr = math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal > 0 else -math.inf
    return float(cos.mean()), snr, ax


# ------------------------------------------------------------------------------ many candidates, one reference
CHUNK_VALUES = 1 << 20  # values compared at a time in the prepared path (float64 buffers of a few MB)
Z_CACHE_BYTES = 512 << 20  # a prepared output's z-scored reference is kept up to this size


class Prepared:
    """The reference's side of compare() computed once, for the accuracy budget that compares many
    candidates with one reference: per float output its per-sample norms, signal, predictions,
    channel axis and z-score statistics. A candidate is then compared a few samples at a time,
    with no full-size float64 copies. The numbers are compare()'s: per-sample cosines are
    the same row computations; sums over all values (SNR) differ at most by rounding. Outputs that
    are not finite floats (or whose candidate is not) take compare()'s general path."""

    def __init__(self, ref: Sequence[dict], counts: Sequence[int]):
        self.ref, self.counts = ref, list(counts)
        self._outputs: dict[str, Optional[_RefOutput]] = {}
        self._lock = threading.Lock()  # candidates may be compared from several threads

    def output(self, name: str) -> Optional["_RefOutput"]:
        with self._lock:
            if name not in self._outputs:
                self._outputs[name] = _RefOutput.build([np.asarray(r[name]) for r in self.ref], self.counts)
            return self._outputs[name]


class _RefOutput:
    def __init__(self, rs: list, counts: list):
        self.rs, self.counts = rs, counts
        self.per = [c if r.ndim and r.shape[0] == c else 1 for r, c in zip(rs, counts)]
        self.rnorms, self.signal = [], []
        for r, per in zip(rs, self.per):
            rf = r.astype(np.float64).reshape(per, -1)
            self.rnorms.append(np.linalg.norm(rf, axis=1))
            self.signal.append(float(np.sum(rf * rf)))
            del rf
        first = rs[0]
        self.axis = channel_axis(first) if first.ndim == 3 and first.shape[0] == counts[0] else None
        self.predictions = [_predictions(r) for r in rs]
        self._prepare_normalized()

    @classmethod
    def build(cls, rs: list, counts: list) -> Optional["_RefOutput"]:
        if not rs or any(r.dtype.kind != "f" for r in rs) or not all(bool(np.isfinite(r).all()) for r in rs):
            return None
        return cls(rs, counts)

    def fits(self, new: list) -> bool:
        """Whether a candidate's arrays can take the prepared path: same shapes, finite floats."""
        for r, n in zip(self.rs, new):
            n = np.asarray(n)
            if n.shape != r.shape or n.dtype.kind != "f" or not bool(np.isfinite(n).all()):
                return False
        return len(new) == len(self.rs)

    def add_float(self, a: _Accumulator, b: int, n: np.ndarray) -> None:
        """_add_float of batch `b` for a finite candidate."""
        per = self.per[b]
        r2, n2 = self.rs[b].reshape(per, -1), np.asarray(n).reshape(per, -1)
        step = max(1, CHUNK_VALUES // max(r2.shape[1], 1))
        parts, noise = [], 0.0
        for s in range(0, per, step):
            rf, nf = r2[s:s + step].astype(np.float64), n2[s:s + step].astype(np.float64)
            parts.append(_row_cosines(rf, nf, self.rnorms[b][s:s + step]))
            np.subtract(rf, nf, out=nf)
            np.square(nf, out=nf)
            noise += float(np.sum(nf))
        cos = np.concatenate(parts)
        a.cos_sum += float(cos.sum())
        a.cos_min = min(a.cos_min, float(cos.min()))
        a.n += per
        a.signal += self.signal[b]
        a.noise += noise

    def _prepare_normalized(self) -> None:
        self.norm_ok = False
        try:
            arrays = [np.asarray(r, np.float64) for r in self.rs]
            arrays = [a if a.ndim and a.shape[0] == c else a[None] for a, c in zip(arrays, self.counts)]
            r = np.concatenate(arrays)
        except (ValueError, TypeError):
            return
        del arrays
        ax = channel_axis(r) if r.ndim >= 2 else None
        if ax is not None and r.size // r.shape[ax] < MIN_PER_CHANNEL:
            return
        self.mu = self.sd = None
        if ax is not None:
            others = tuple(i for i in range(r.ndim) if i != ax)
            self.mu = r.mean(axis=others, keepdims=True)
            sd = r.std(axis=others, keepdims=True)
            self.sd = np.maximum(sd, NORM_FLOOR * max(float(sd.max()), 1e-30))
            r -= self.mu  # in place: r is this function's own copy
            r /= self.sd
        zr = r.reshape(len(r), -1)
        self.zr_norms = np.linalg.norm(zr, axis=1)
        self.zsignal = float(np.sum(zr * zr))
        self.norm_axis, self.norm_ok = ax, True
        self.zr = zr if zr.nbytes <= Z_CACHE_BYTES else None  # else recomputed for every candidate

    def _rows(self, arrays: list):
        for a, c in zip(arrays, self.counts):
            a = np.asarray(a)
            yield a if a.ndim and a.shape[0] == c else a[None]

    def normalized(self, new: list):
        """_normalized for a finite candidate."""
        if not self.norm_ok:
            return None, None, None
        parts, noise, row = [], 0.0, 0
        for rb, nb in zip(self._rows(self.rs), self._rows(new)):
            step = max(1, CHUNK_VALUES // max(rb[0].size if len(rb) else 1, 1))
            for s in range(0, len(rb), step):
                zn = nb[s:s + step].astype(np.float64)
                k = len(zn)
                if self.zr is not None:
                    zr = self.zr[row:row + k]
                else:
                    zr = rb[s:s + step].astype(np.float64)
                    if self.mu is not None:
                        zr -= self.mu
                        zr /= self.sd
                    zr = zr.reshape(k, -1)
                if self.mu is not None:
                    zn -= self.mu
                    zn /= self.sd
                zn = zn.reshape(k, -1)
                parts.append(_row_cosines(zr, zn, self.zr_norms[row:row + k]))
                np.subtract(zr, zn, out=zn)
                np.square(zn, out=zn)
                noise += float(np.sum(zn))
                row += k
        cos = np.concatenate(parts)
        snr = math.inf if noise == 0 else 10 * math.log10(self.zsignal / noise) if self.zsignal > 0 else -math.inf
        return float(cos.mean()), snr, self.norm_axis


def _row_cosines(rf: np.ndarray, nf: np.ndarray, rnorms: np.ndarray) -> np.ndarray:
    """Per-row cosine as _add_float and _normalized compute it, the reference rows' norms given."""
    dots = np.einsum("ij,ij->i", rf, nf)
    norms = rnorms * np.linalg.norm(nf, axis=1)
    if bool(np.all(norms > 0)):
        return dots / norms
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1), np.where(np.all(rf == nf, axis=1), 1.0, 0.0))
