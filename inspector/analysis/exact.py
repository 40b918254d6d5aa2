"""Exact percentiles and histogram of finite values held in memory, without sorting them.

``np.percentile`` partitions and ``np.histogram`` (with given edges) sorts: tens of
nanoseconds per value. Here one ``bincount`` of each value's leading 16 bits (sign,
exponent and leading mantissa bits, read through a view: no arithmetic) puts the
values into 65536 ordered coarse buckets. Only the values of the few buckets that
hold a wanted order statistic, or that straddle a histogram edge, are then looked
at one by one; every other bucket's count goes to its histogram bin whole. Results
equal numpy's to the bit: the same order statistics and interpolation, the same
half-open bins with a closed last bin.
"""

from __future__ import annotations

import math
import sys
from functools import lru_cache

import numpy as np

SMALL = 1 << 14  # below this many values numpy's own routines are cheaper
_PCT, _EDGE = 1, 2  # flags of a coarse bucket that needs a closer look


def lerp(a: float, b: float, t: float) -> float:
    """numpy's percentile interpolation, to the bit."""
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def rank_positions(n: int, percentiles) -> list[float]:
    """numpy's 'linear' virtual index of each percentile among n sorted values."""
    return [(n - 1) * (q / 100.0) for q in percentiles]


def hist_counts(vals: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``np.histogram(np.clip(vals, edges[0], edges[-1]), bins=edges, weights=weights)[0]`` as int64,
    for evenly spaced edges symmetric about zero: computed bin indices, corrected against the edges
    themselves. Values beyond the edges count in the outer bins."""
    bins = edges.size - 1
    a = edges[-1]
    if vals.size and (vals.min() < -a or vals.max() > a):
        vals = np.clip(vals, -a, a)
    idx = ((vals + a) * (bins / (2 * a))).astype(np.intp)
    np.clip(idx, 0, bins - 1, out=idx)
    idx -= vals < edges[idx]
    idx += (vals >= edges[idx + 1]) & (idx < bins - 1)
    return np.bincount(idx, weights=weights, minlength=bins)[:bins].astype(np.int64)


def _high16(vals: np.ndarray) -> np.ndarray:
    """The leading 16 bits of each float32/float64 value (a view where the byte order allows)."""
    words = vals.dtype.itemsize // 2
    if sys.byteorder == "little":
        return vals.view(np.uint16)[words - 1 :: words]
    return vals.view(np.uint16)[::words]


@lru_cache(maxsize=4)
def _coarse(dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coarse-bucket keys in value order, and each bucket's lowest and highest value."""
    keys = np.concatenate((np.arange(0xFFFF, 0x7FFF, -1), np.arange(0x8000))).astype(np.uint64)
    bits = 8 * dtype.itemsize - 16
    uint = np.uint32 if dtype.itemsize == 4 else np.uint64
    with np.errstate(invalid="ignore", over="ignore"):
        a = (keys << np.uint64(bits)).astype(uint).view(dtype).astype(np.float64)
        b = ((keys << np.uint64(bits)) | np.uint64((1 << bits) - 1)).astype(uint).view(dtype).astype(np.float64)
        return keys.astype(np.intp), np.fmin(a, b), np.fmax(a, b)


def percentiles_and_hist(vals: np.ndarray, percentiles, edges: np.ndarray) -> tuple[list[float], np.ndarray]:
    """Exact ``np.percentile(vals, percentiles)`` and ``np.histogram(vals, edges)[0]`` of finite
    float32/float64 values (``edges``: see :func:`hist_counts`)."""
    n = vals.size
    pos = rank_positions(n, percentiles)
    ranks = sorted({math.floor(h) for h in pos} | {min(math.floor(h) + 1, n - 1) for h in pos})
    if n < SMALL or vals.dtype not in (np.float32, np.float64):
        got = dict(zip(ranks, np.partition(vals, ranks)[ranks].tolist()))
        return _interpolate(pos, got, n), hist_counts(vals, edges)
    order, lo, hi = _coarse(vals.dtype)
    keys = _high16(vals)
    counts = np.bincount(keys, minlength=65536)[order]
    cum = np.cumsum(counts)
    flags = np.zeros(65536, dtype=np.uint8)
    where = np.searchsorted(cum, ranks, side="right")
    flags[order[where]] |= _PCT
    used = counts > 0
    bin_lo, bin_hi = (np.clip(np.searchsorted(edges, v, side="right") - 1, 0, edges.size - 2) for v in (lo, hi))
    straddle = used & (bin_lo != bin_hi)
    flags[order[straddle]] |= _EDGE
    whole = used & ~straddle
    hist = np.bincount(bin_lo[whole], weights=counts[whole], minlength=edges.size - 1).astype(np.int64)
    picked = flags[keys]
    mask = picked != 0
    if np.count_nonzero(mask) > n // 2:  # values crowd into few buckets: numpy's way is as good
        got = dict(zip(ranks, np.partition(vals, ranks)[ranks].tolist()))
        return _interpolate(pos, got, n), hist_counts(vals, edges)
    cand, cflags, ckeys = vals[mask], picked[mask], keys[mask]
    hist += hist_counts(cand[(cflags & _EDGE) != 0], edges)
    got = _ranks_in_buckets(ranks, where, cum, counts, order, cand, ckeys)
    return _interpolate(pos, got, n), hist


def _ranks_in_buckets(ranks, where, cum, counts, order, cand, ckeys) -> dict[int, float]:
    got, sorted_by_key = {}, {}
    for r, w in zip(ranks, where.tolist()):
        key = int(order[w])
        if key not in sorted_by_key:
            sorted_by_key[key] = np.sort(cand[ckeys == key])
        got[r] = float(sorted_by_key[key][r - (cum[w] - counts[w])])
    return got


def _interpolate(pos: list[float], got: dict[int, float], n: int) -> list[float]:
    out = []
    for h in pos:
        i = math.floor(h)
        out.append(lerp(got[i], got[min(i + 1, n - 1)], h - i))
    return out
