"""Exact order statistics, numpy's percentile interpolation, and the plot histogram.

Percentiles are numpy's default ('linear'): the virtual index ``(n - 1) * q / 100`` among
the n sorted finite values, interpolated between the two order statistics around it exactly
as ``numpy.percentile`` does, so that results equal numpy's to the bit.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

_FEW = 2048  # hist_counts of at most this many values searches the edges
HIST_SPAN = 4.0  # a histogram spans at most this times max(|p01|, |p99|) (see hist_edges)


def lerp(a: float, b: float, t: float) -> float:
    """numpy's percentile interpolation, to the bit."""
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def rank_positions(n: int, percentiles) -> list[float]:
    """numpy's 'linear' virtual index of each percentile among n sorted values."""
    return [(n - 1) * (q / 100.0) for q in percentiles]


def needed_ranks(n: int, percentiles) -> list[int]:
    """The 0-based order statistics the percentiles of n values interpolate between."""
    return list(_needed_ranks(n, tuple(percentiles)))


@lru_cache(maxsize=1024)  # (the tensors of a model share a few sizes)
def _needed_ranks(n: int, percentiles: tuple) -> tuple[int, ...]:
    pos = rank_positions(n, percentiles)
    return tuple(sorted({math.floor(h) for h in pos} | {min(math.floor(h) + 1, n - 1) for h in pos}))


def percentiles_from(got: dict[int, float], n: int, percentiles) -> list[float]:
    """Percentiles of n values from their order statistics ``got`` (rank -> value, see needed_ranks)."""
    out = []
    for h in rank_positions(n, percentiles):
        i = math.floor(h)
        out.append(lerp(got[i], got[min(i + 1, n - 1)], h - i))
    return out


def order_statistics(cum: np.ndarray, vals: np.ndarray, n: int, percentiles) -> dict[int, float]:
    """The needed order statistics of values given as distinct sorted ``vals`` with cumulative counts ``cum``."""
    ranks = needed_ranks(n, percentiles)
    where = np.searchsorted(cum, ranks, side="right")
    return dict(zip(ranks, vals[where].tolist()))


def hist_edges(lo: float, hi: float, pct, bins: int) -> np.ndarray:
    """``bins`` bins symmetric about zero (so zero is always a bin edge) over ±max|x|; or, when the
    extremes reach beyond HIST_SPAN times the larger of |p01| and |p99| (outliers), over that, the
    values beyond counting in the outer bins. (``np.linspace(-a, a, bins + 1)``, to the bit, without its
    overhead.)"""
    a = hist_reach(lo, hi, pct)
    step = (a - -a) / bins
    if not (step > 0 and math.isfinite(step)):
        return np.linspace(-a, a, bins + 1)
    edges = _counting(bins + 1) * step  # (as linspace: i * step - a, the last edge a itself)
    edges -= a
    edges[-1] = a
    return edges


@lru_cache(maxsize=8)
def _counting(n: int) -> np.ndarray:
    """0.0, 1.0, ... n - 1 (read-only)."""
    out = np.arange(n, dtype=np.float64)
    out.flags.writeable = False
    return out


def hist_reach(lo: float, hi: float, pct) -> float:
    """The outer edge of :func:`hist_edges`' bins (which are those of ±this)."""
    a = max(abs(lo), abs(hi))
    reach = HIST_SPAN * max(abs(pct[0]), abs(pct[-1]))
    if 0 < reach < a:
        a = reach
    if not a > 0:
        a = 1.0
    return a


def empty_distribution(percentiles: int, bins: int) -> tuple[list[float], tuple[np.ndarray, np.ndarray]]:
    """Percentiles and histogram of a tensor without finite values."""
    return [math.nan] * percentiles, (np.linspace(-1.0, 1.0, bins + 1), np.zeros(bins, dtype=np.int64))


def hist_counts(vals: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``np.histogram(np.clip(vals, edges[0], edges[-1]), bins=edges, weights=weights)[0]`` as int64,
    for evenly spaced edges symmetric about zero: computed bin indices, corrected against the edges
    themselves. Values beyond the edges count in the outer bins."""
    bins = edges.size - 1
    if vals.size <= _FEW:  # few values: a binary search each, fewer numpy calls
        idx = np.searchsorted(edges, vals, side="right")
        idx = np.minimum(np.maximum(idx - 1, 0), bins - 1)
        return np.bincount(idx, weights=weights, minlength=bins)[:bins].astype(np.int64)
    a = edges[-1]
    if vals.size and (vals.min() < -a or vals.max() > a):
        vals = np.minimum(np.maximum(vals, -a), a)  # (np.clip, without its overhead on small arrays)
    idx = ((vals + a) * (bins / (2 * a))).astype(np.intp)
    idx = np.minimum(np.maximum(idx, 0), bins - 1)
    idx -= vals < edges[idx]
    idx += (vals >= edges[idx + 1]) & (idx < bins - 1)
    return np.bincount(idx, weights=weights, minlength=bins)[:bins].astype(np.int64)
