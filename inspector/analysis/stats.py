"""One-pass, chunked per-tensor statistics, accumulated in float64.

For each tensor the :class:`StatsAccumulator` sees every value once, chunk by chunk,
and keeps only O(1) state plus a bucket histogram of bounded size:

* counts of negative / zero / positive / NaN / ±Inf values (``-0.0`` is zero);
* min, max, sum of |x|, and mean / M2 merged across chunks (Chan et al.), so the
  population std stays accurate even when the mean is large;
* percentiles. A tensor that fits in one chunk gets exact percentiles (numpy's
  default linear interpolation). Larger tensors get them from a histogram whose
  buckets are the leading bits of each value's binary representation:

  - 8- and 16-bit floats and integers, and bool: one bucket per representable
    value, so percentiles are exact;
  - float32: sign, exponent and 11 mantissa bits, so a reported percentile is
    within a relative 2**-11 (0.05 %) of the exact one;
  - float64 and 32/64-bit integers: sign, exponent and 8 mantissa bits of the
    float64 value, a relative 2**-8 (0.4 %).

  ``percentile_rel_error(dtype, numel, chunk)`` returns the bound that applies.

NaN and ±Inf are counted, then excluded from moments, extremes, norms,
percentiles and the histogram.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..dtypes import is_float

CHUNK_ELEMS = 1 << 20
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
HIST_BINS = 64

_F32_SHIFT = 12  # keep 1 + 8 + 11 bits of a float32
_F64_SHIFT = 44  # keep 1 + 11 + 8 bits of a float64


def percentile_rel_error(dtype: np.dtype, numel: int, chunk_elems: int = CHUNK_ELEMS) -> float:
    """Largest relative error of a reported percentile for this tensor (0.0 = exact)."""
    dtype = np.dtype(dtype)
    if numel <= chunk_elems or dtype.itemsize <= 2:
        return 0.0
    if dtype == np.float32:
        return 2.0**-11
    return 2.0**-8


@dataclass
class _Buckets:
    """How values map to histogram buckets for one dtype."""

    size: int
    exact: bool

    @staticmethod
    def for_dtype(dtype: np.dtype) -> "_Buckets":
        if dtype.itemsize == 1:
            return _Buckets(256, True)
        if dtype.itemsize == 2:
            return _Buckets(65536, True)
        return _Buckets(1 << 20, False)


def _bucket_keys(values: np.ndarray) -> np.ndarray:
    """Bucket index of every value (see module docstring); float64 for wide types."""
    dt = values.dtype
    if dt.itemsize == 1:
        return values.view(np.uint8)
    if dt.itemsize == 2:
        return values.view(np.uint16)
    if dt == np.float32:
        return values.view(np.uint32) >> _F32_SHIFT
    return (values.view(np.uint64) >> np.uint64(_F64_SHIFT)).astype(np.intp)


def _bucket_bounds(dtype: np.dtype, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest value of every bucket, as float64 (NaN for non-value buckets)."""
    keys = np.arange(size, dtype=np.uint64)
    with np.errstate(invalid="ignore", over="ignore"):
        return _bounds_of_keys(dtype, keys)


def _bounds_of_keys(dtype: np.dtype, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if dtype.itemsize <= 2:
        view_t = np.uint8 if dtype.itemsize == 1 else np.uint16
        vals = keys.astype(view_t).view(dtype).astype(np.float64)
        return vals, vals
    if dtype == np.float32:
        lo = (keys << _F32_SHIFT).astype(np.uint32).view(np.float32).astype(np.float64)
        hi = ((keys << _F32_SHIFT) | ((1 << _F32_SHIFT) - 1)).astype(np.uint32)
        hi = hi.view(np.float32).astype(np.float64)
    else:
        lo = (keys << np.uint64(_F64_SHIFT)).view(np.float64)
        hi = ((keys << np.uint64(_F64_SHIFT)) | np.uint64((1 << _F64_SHIFT) - 1)).view(np.float64)
    return np.minimum(lo, hi), np.maximum(lo, hi)


class StatsAccumulator:
    """Reduce one tensor, chunk by chunk, to the statistics of a tensor-table row."""

    def __init__(self, dtype: np.dtype, numel: int, chunk_elems: int = CHUNK_ELEMS):
        self.dtype = np.dtype(dtype)
        self.numel = numel
        self.exact = numel <= chunk_elems
        self.key_dtype = self.dtype if self.dtype.itemsize <= 2 or self.dtype == np.float32 else np.dtype(np.float64)
        self.buckets = _Buckets.for_dtype(self.key_dtype)
        self.counts = None if self.exact else np.zeros(self.buckets.size, dtype=np.int64)
        self.exact_values: np.ndarray | None = None
        self.n = self.neg = self.zero = self.pos = self.nan = self.inf = 0
        self.mean = self.m2 = self.abs_sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.seen = 0

    # -- per chunk ---------------------------------------------------------------
    def update(self, chunk: np.ndarray) -> None:
        size = chunk.size
        if size == 0:
            return
        self.seen += size
        x = chunk.astype(np.float64)
        finite = None
        if is_float(chunk.dtype):
            lo, hi = x.min(), x.max()
            if not (math.isfinite(lo) and math.isfinite(hi)):
                finite = np.isfinite(x)
                nans = int(np.count_nonzero(np.isnan(x)))
                n_fin = int(np.count_nonzero(finite))
                self.nan += nans
                self.inf += size - n_fin - nans
                x = x[finite]
        self._moments(x)
        if self.exact:
            self.exact_values = x
        else:
            self._histogram(chunk, x, finite)

    def _moments(self, x: np.ndarray) -> None:
        n = x.size
        if n == 0:
            return
        neg = int(np.count_nonzero(x < 0))
        pos = int(np.count_nonzero(x > 0))
        self.neg += neg
        self.pos += pos
        self.zero += n - neg - pos
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        self.abs_sum += float(np.abs(x).sum())
        c_mean = float(x.sum()) / n
        d = x - c_mean
        c_m2 = float(np.dot(d, d))
        total = self.n + n
        delta = c_mean - self.mean
        self.mean += delta * n / total
        self.m2 += c_m2 + delta * delta * self.n * n / total
        self.n = total

    def _histogram(self, chunk: np.ndarray, x: np.ndarray, finite) -> None:
        if chunk.dtype == self.key_dtype:
            keys = _bucket_keys(chunk)
            if finite is not None:
                keys = keys[finite]
        else:  # wide integers: keyed on their (finite) float64 values
            keys = _bucket_keys(x)
        self.counts += np.bincount(keys, minlength=self.buckets.size)[: self.buckets.size]

    # -- result ------------------------------------------------------------------
    def result(self) -> dict:
        numel = self.numel
        n = self.n
        row = {
            "numel": numel,
            "neg_count": self.neg,
            "zero_count": self.zero,
            "pos_count": self.pos,
            "neg_frac": self.neg / numel if numel else math.nan,
            "zero_frac": self.zero / numel if numel else math.nan,
            "pos_frac": self.pos / numel if numel else math.nan,
            "mean": self.mean if n else math.nan,
            "std": math.sqrt(max(self.m2, 0.0) / n) if n else math.nan,
            "min": self.min if n else math.nan,
            "max": self.max if n else math.nan,
            "abs_mean": self.abs_sum / n if n else math.nan,
            "l2_norm": math.sqrt(max(self.m2 + n * self.mean * self.mean, 0.0)) if n else (0.0 if numel == 0 else math.nan),
            "nan_count": self.nan,
            "inf_count": self.inf,
        }
        pct, hist = self._distribution()
        for q, v in zip(PERCENTILES, pct):
            row[f"p{q:02d}"] = v
        row["finite_count"] = n
        row["sum_sq"] = self.m2 + n * self.mean * self.mean if n else 0.0
        row["hist_edges"], row["hist_counts"] = hist
        return row

    def _hist_edges(self) -> np.ndarray:
        """HIST_BINS bins symmetric about zero, so zero is always a bin edge."""
        a = max(abs(self.min), abs(self.max)) if self.n else 0.0
        if not a > 0:
            a = 1.0
        return np.linspace(-a, a, HIST_BINS + 1)

    def _distribution(self):
        nan_p = [math.nan] * len(PERCENTILES)
        if self.n == 0:
            return nan_p, (self._hist_edges(), np.zeros(HIST_BINS, dtype=np.int64))
        edges = self._hist_edges()
        if self.exact:
            vals = self.exact_values
            pct = [float(v) for v in np.percentile(vals, PERCENTILES)]
            hist = np.histogram(vals, bins=edges)[0]
            return pct, (edges, hist)
        lo, hi = _bucket_bounds(self.key_dtype, self.buckets.size)
        used = np.nonzero(self.counts)[0]
        used = used[np.isfinite(lo[used]) & np.isfinite(hi[used])]
        order = np.argsort((lo[used] + hi[used]) / 2, kind="stable")
        idx = used[order]
        counts = self.counts[idx]
        blo, bhi = lo[idx], hi[idx]
        # the extremes are known exactly: tighten the outer buckets
        blo[0] = max(blo[0], self.min)
        bhi[-1] = min(bhi[-1], self.max)
        # buckets of zero and subnormal values report 0.0; integers stay integers
        if np.issubdtype(self.key_dtype, np.floating):
            tiny = np.finfo(self.key_dtype).tiny
            sub = np.maximum(np.abs(blo), np.abs(bhi)) < tiny
            blo[sub] = bhi[sub] = 0.0
        cum = np.cumsum(counts)
        rnd = not is_float(self.dtype)
        pct = [_quantile(q, self.n, cum, counts, blo, bhi, rnd) for q in PERCENTILES]
        mids = np.clip((blo + bhi) / 2, self.min, self.max)
        hist = np.histogram(mids, bins=edges, weights=counts)[0].astype(np.int64)
        return pct, (edges, hist)


def _order_stat(i: int, cum, counts, blo, bhi, integer: bool) -> float:
    """Estimate of the i-th smallest value (0-based) from sorted buckets."""
    b = int(np.searchsorted(cum, i, side="right"))
    before = cum[b] - counts[b]
    if blo[b] == bhi[b]:
        return float(blo[b])
    pos = (i - before + 0.5) / counts[b]
    v = float(blo[b] + pos * (bhi[b] - blo[b]))
    if integer:  # the nearest integer inside the bucket
        v = min(max(float(round(v)), math.ceil(blo[b])), math.floor(bhi[b]))
    return v


def _quantile(q: float, n: int, cum, counts, blo, bhi, integer: bool) -> float:
    h = (n - 1) * q / 100.0
    i = math.floor(h)
    j = min(i + 1, n - 1)
    a = _order_stat(i, cum, counts, blo, bhi, integer)
    if j == i or h == i:
        return a
    b = _order_stat(j, cum, counts, blo, bhi, integer)
    return a + (h - i) * (b - a)


def analyze(record, chunk_elems: int = CHUNK_ELEMS, reducers=()) -> dict:
    """All statistics of one record, from one pass over its chunks.

    ``reducers`` are further per-tensor reducers fed the same chunks, in order, from
    the same single read: objects with ``update(chunk)`` and ``result() -> dict``
    whose result keys become extra columns of the row.
    """
    acc = StatsAccumulator(record.np_dtype, record.numel, chunk_elems)
    for chunk in record.chunks(chunk_elems):
        acc.update(chunk)
        for r in reducers:
            r.update(chunk)
    row = acc.result()
    for r in reducers:
        row.update(r.result())
    return row
