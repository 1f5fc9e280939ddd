"""Helpers shared by the fusion passes: per-channel constants and weight scaling."""

from __future__ import annotations

from typing import Optional

import numpy as np


def per_channel(c: np.ndarray, rank: int, channels: int, axis: int = 1) -> Optional[np.ndarray]:
    """`c` as a vector of length `channels` if, broadcast against a rank-`rank` tensor, it varies
    only along `axis` (or is a scalar); None if it would broadcast any other way."""
    if c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + tuple(c.shape)
    for i, d in enumerate(shape):
        if i != axis and d != 1:
            return None
    if shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1), (channels,)).astype(np.float64)


def scale_output_channels(op_type: str, w: np.ndarray, s: np.ndarray, group: int = 1) -> np.ndarray:
    """Conv/ConvTranspose weight with every output channel multiplied by `s`. The factor is
    computed in float64 and rounded once; the product is taken in the weight's own dtype (one
    more rounding), which keeps large weights from being copied to float64."""
    s = s.astype(w.dtype)
    if op_type == "Conv":  # [Cout, Cin/g, k...]
        return w * s.reshape((-1,) + (1,) * (w.ndim - 1))
    # ConvTranspose: [Cin, Cout/g, k...]; output channel = group index * Cout/g + j
    cin, cout_g = w.shape[0], w.shape[1]
    ws = w.reshape((group, cin // group, cout_g) + w.shape[2:])
    ss = s.reshape((group, 1, cout_g) + (1,) * (w.ndim - 2))
    return (ws * ss).reshape(w.shape)


def out_channels(op_type: str, w: np.ndarray, group: int = 1) -> int:
    return w.shape[0] if op_type == "Conv" else w.shape[1] * group
