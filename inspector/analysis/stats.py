"""One-pass, chunked per-tensor statistics, accumulated in float64.

For each tensor the :class:`StatsAccumulator` sees every value once, chunk by chunk,
and keeps only O(1) state plus a bucket histogram of bounded size:

* counts of negative / zero / positive / NaN / ±Inf values (``-0.0`` is zero);
* min, max, sum of |x|, and mean / M2 merged across blocks (Chan et al.), so the
  population std stays accurate even when the mean is large;
* percentiles and the 64-bin plot histogram: symmetric about zero, over ±max|x|, or over
  ±HIST_SPAN x max(|p01|, |p99|) when outliers reach further (they count in the outer bins).

How, by element type:

* 8- and 16-bit types (bf16, f16, f8, int8/16, uint8/16, bool) with more than
  ``TABLE_MIN`` values: a count of every representable value (one ``bincount`` of
  the raw bits per chunk). Every statistic, percentiles and histogram included, is
  derived exactly from that table; no value is ever converted to float64.
* A tensor that fits in one chunk: exact percentiles (numpy's default linear
  interpolation) and an exact histogram.
* Larger tensors of wider types: percentiles from a histogram whose buckets are the
  leading bits of each value's binary representation:

  - float32: sign, exponent and 11 mantissa bits, so a reported percentile is
    within a relative 2**-11 (0.05 %) of the exact one;
  - float64 and 32/64-bit integers: sign, exponent and 8 mantissa bits of the
    float64 value, a relative 2**-8 (0.4 %).

  ``percentile_rel_error(dtype, numel, chunk)`` returns the bound that applies.

Chunks are processed in cache-sized blocks through reused float64 buffers. Moments
are folded per *part* of ``PART_CHUNKS`` chunks, so the parts of one large tensor can
be reduced on separate threads (:func:`part_ranges`, :meth:`StatsAccumulator.merge`)
and give the same bits as one sequential pass.

NaN and ±Inf are counted, then excluded from moments, extremes, norms,
percentiles and the histogram.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..dtypes import is_float
from . import kernels
from .exact import hist_counts, lerp, percentiles_and_hist, rank_positions

CHUNK_ELEMS = 1 << 20
BLOCK_ELEMS = 1 << 17  # values reduced together while they sit in cache
PART_CHUNKS = 16  # moments are folded per part of this many chunks
TABLE_MIN = 1 << 14  # 8/16-bit tensors larger than this use the value table
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
HIST_BINS = 64
HIST_SPAN = 4.0  # a histogram spans at most this times max(|p01|, |p99|) (see StatsAccumulator._hist_edges)

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


def part_ranges(numel: int, chunk_elems: int = CHUNK_ELEMS) -> list[tuple[int, int]]:
    """[start, stop) element ranges of a tensor's parts (see the module docstring)."""
    step = chunk_elems * PART_CHUNKS
    return [(s, min(s + step, numel)) for s in range(0, numel, step)]


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


@lru_cache(maxsize=32)
def _bucket_bounds(dtype: np.dtype, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest value of every bucket, as float64 (NaN for non-value buckets)."""
    keys = np.arange(size, dtype=np.uint64)
    with np.errstate(invalid="ignore", over="ignore"):
        lo, hi = _bounds_of_keys(dtype, keys)
    lo.flags.writeable = hi.flags.writeable = False
    return lo, hi


def _magnitude_major(vals: np.ndarray) -> np.ndarray:
    """Bucket of each float32/float64 value as ``(magnitude bits << 1) | sign``: the values of a
    chunk, whatever their signs, then fall into one narrow range of buckets."""
    bits = 8 * vals.itemsize
    u = vals.view(np.uint32 if bits == 32 else np.uint64)
    shift = _F32_SHIFT if bits == 32 else _F64_SHIFT
    t = u << 1
    t >>= shift + 1
    t <<= 1
    t |= u >> (bits - 1)
    return t if bits == 32 else t.view(np.int64)


def _key_of_magnitude_major(t: np.ndarray, size: int) -> np.ndarray:
    """The bucket key (sign, exponent, leading mantissa bits) of magnitude-major indices ``t``."""
    return (t >> 1) | ((t & 1) << (size.bit_length() - 2))


def _bounds_of_keys(dtype: np.dtype, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if dtype.itemsize <= 2:
        view_t = np.uint8 if dtype.itemsize == 1 else np.uint16
        vals = keys.astype(view_t).view(dtype).astype(np.float64)
        return vals, vals.copy()
    if dtype == np.float32:
        lo = (keys << _F32_SHIFT).astype(np.uint32).view(np.float32).astype(np.float64)
        hi = ((keys << _F32_SHIFT) | ((1 << _F32_SHIFT) - 1)).astype(np.uint32)
        hi = hi.view(np.float32).astype(np.float64)
    else:
        lo = (keys << np.uint64(_F64_SHIFT)).view(np.float64)
        hi = ((keys << np.uint64(_F64_SHIFT)) | np.uint64((1 << _F64_SHIFT) - 1)).view(np.float64)
    return np.minimum(lo, hi), np.maximum(lo, hi)


@lru_cache(maxsize=32)
def _table(dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For an 8/16-bit dtype: (codes of finite values sorted by value, their values, NaN codes, Inf codes)."""
    vals = _bucket_bounds(dtype, _Buckets.for_dtype(dtype).size)[0]
    finite = np.flatnonzero(np.isfinite(vals))
    order = finite[np.argsort(vals[finite], kind="stable")]
    return order, vals[order], np.flatnonzero(np.isnan(vals)), np.flatnonzero(np.isinf(vals))


class _Moments:
    """count, mean, M2 and sum of |x|, merged exactly the same way whatever the grouping."""

    __slots__ = ("n", "mean", "m2", "abs_sum")

    def __init__(self, n=0, mean=0.0, m2=0.0, abs_sum=0.0):
        self.n, self.mean, self.m2, self.abs_sum = n, mean, m2, abs_sum

    def add(self, other: "_Moments") -> None:
        if other.n == 0:
            return
        if self.n == 0:
            self.n, self.mean, self.m2, self.abs_sum = other.n, other.mean, other.m2, other.abs_sum
            return
        total = self.n + other.n
        delta = other.mean - self.mean
        self.mean += delta * other.n / total
        self.m2 += other.m2 + delta * delta * self.n * other.n / total
        self.abs_sum += other.abs_sum
        self.n = total


class StatsAccumulator:
    """Reduce one tensor, chunk by chunk, to the statistics of a tensor-table row."""

    def __init__(self, dtype: np.dtype, numel: int, chunk_elems: int = CHUNK_ELEMS):
        self.dtype = np.dtype(dtype).newbyteorder("=")  # chunks are read as native values (see update)
        self.numel = numel
        self.chunk_elems = chunk_elems
        self.table = self.dtype.itemsize <= 2 and (numel > TABLE_MIN or numel > chunk_elems)
        self.exact = numel <= chunk_elems or self.table
        self.key_dtype = self.dtype if self.dtype.itemsize <= 2 or self.dtype == np.float32 else np.dtype(np.float64)
        self.buckets = _Buckets.for_dtype(self.key_dtype)
        self.counts = None if self.exact and not self.table else np.zeros(self.buckets.size, dtype=np.int64)
        self._kept: list[np.ndarray] = []  # finite values of a one-chunk tensor
        self.neg = self.zero = self.nan = self.inf = 0
        self.neg_zero = 0  # -0.0 values, which sit in a negative bucket
        self.total, self.part = _Moments(), _Moments()
        self.min = math.inf
        self.max = -math.inf
        self.seen = 0
        self._buf = None

    # the totals, as before: n, mean, m2, abs_sum
    n = property(lambda self: self.total.n)
    mean = property(lambda self: self.total.mean)
    m2 = property(lambda self: self.total.m2)
    abs_sum = property(lambda self: self.total.abs_sum)

    # -- per chunk ---------------------------------------------------------------
    def update(self, chunk: np.ndarray) -> None:
        size = chunk.size
        if size == 0:
            return
        if not chunk.dtype.isnative:  # big-endian data: the bucket keys read native bits
            chunk = chunk.astype(chunk.dtype.newbyteorder("="))
        native = kernels.native
        if self.table:
            if native is not None:
                native.count_codes(kernels.raw(chunk), self.counts)
            else:
                view = np.uint8 if self.dtype.itemsize == 1 else np.uint16
                self.counts += np.bincount(chunk.reshape(-1).view(view), minlength=self.buckets.size)
        elif self.exact:
            for s in range(0, size, BLOCK_ELEMS):
                self._update_exact(chunk[s : s + BLOCK_ELEMS])
        elif native is not None:
            self._native_chunk(native, chunk)
        else:
            clean = self.nan + self.inf
            for s in range(0, size, BLOCK_ELEMS):
                self._block(chunk[s : s + BLOCK_ELEMS])
            self._count_buckets(chunk, finite_only=self.nan + self.inf > clean)
        self.seen += size
        if self.seen % (self.chunk_elems * PART_CHUNKS) == 0:
            self._fold()

    def _native_chunk(self, native, chunk: np.ndarray) -> None:
        """A chunk of a multi-chunk tensor through the compiled loop: moments per block, merged
        into one (n, mean, M2, |x| sum) for the chunk; extremes, counts and buckets."""
        src = chunk if chunk.dtype == self.key_dtype else chunk.astype(np.float64)
        n, mean, m2, abs_sum, lo, hi, nan, inf, zero, neg_zero = native.moments_buckets(
            kernels.raw(src), self.counts, BLOCK_ELEMS)
        self.nan += nan
        self.inf += inf
        self.zero += zero
        self.neg_zero += neg_zero
        if n:
            self.part.add(_Moments(n, mean, m2, abs_sum))
            self.min = min(self.min, lo)
            self.max = max(self.max, hi)

    def _fold(self) -> None:
        """Close the current part: add its moments to the totals."""
        self.total.add(self.part)
        self.part = _Moments()

    def _update_exact(self, c: np.ndarray) -> None:
        """One block of a one-chunk tensor: its finite values are kept (float32 or float64)."""
        src = c if c.dtype == np.float32 else c.astype(np.float64)
        src, lo, hi = self._finite(src)
        if src.size:
            self._kept.append(src.copy() if src.dtype == np.float32 else src)
            self._moments(src.astype(np.float64), None, src, lo, hi)

    def _finite(self, c: np.ndarray):
        """The block without its NaN / ±Inf values (which are counted), and its min and max."""
        lo, hi = c.min(), c.max()
        if not is_float(c.dtype) or np.isfinite(lo) and np.isfinite(hi):
            return c, lo, hi
        finite = np.isfinite(c)
        nans = int(np.count_nonzero(np.isnan(c)))
        self.nan += nans
        self.inf += c.size - int(np.count_nonzero(finite)) - nans
        c = c[finite]
        return (c, c.min(), c.max()) if c.size else (c, None, None)

    def _block(self, c: np.ndarray) -> None:
        """Moments of one block of a multi-chunk tensor."""
        c, lo, hi = self._finite(c)
        if c.size == 0:
            return
        if self._buf is None:
            self._buf = np.empty((2, BLOCK_ELEMS), dtype=np.float64)
        x = self._buf[0, : c.size]
        np.copyto(x, c, casting="unsafe")
        self._moments(x, self._buf[1, : c.size], c, lo, hi)

    def _count_buckets(self, chunk: np.ndarray, finite_only: bool) -> None:
        """Add a chunk to the bucket counts, kept magnitude-major (see :func:`_magnitude_major`)
        so that one ``bincount`` over the chunk's range of buckets does it."""
        src = chunk if chunk.dtype == self.key_dtype else chunk.astype(np.float64)
        if finite_only:
            src = src[np.isfinite(src)]
            if src.size == 0:
                return
        t = _magnitude_major(src)
        lo = int(t.min())
        t -= lo
        r = np.bincount(t)
        self.counts[lo : lo + r.size] += r
        if lo <= 1:  # buckets 0 and 1 hold +0.0 and -0.0 (and the tiniest subnormals)
            self.zero += int(np.count_nonzero(src == 0))
            self.neg_zero += int(np.count_nonzero(np.signbit(src) & (src == 0)))

    def _moments(self, x: np.ndarray, scratch, src: np.ndarray, lo, hi) -> None:
        """Fold one block into the current part: ``x`` its finite values as float64 (overwritten),
        ``src`` the same values in their own dtype, ``lo`` / ``hi`` their extremes. Signs are
        counted here unless bucket counts will give them (see :meth:`_count_buckets`)."""
        n = x.size
        if self.counts is None:
            self.neg += int(np.count_nonzero(src < 0))
            self.zero += int(np.count_nonzero(src == 0))
        self.min = min(self.min, float(lo))
        self.max = max(self.max, float(hi))
        a = np.abs(x, out=scratch)
        block = _Moments(n, float(x.sum()) / n, 0.0, float(a.sum()))
        x -= block.mean
        np.square(x, out=x)
        block.m2 = float(x.sum())
        self.part.add(block)

    def drop_buffers(self) -> None:
        """Free the scratch buffers (before sending the accumulator to another process)."""
        self._buf = None

    def merge(self, other: "StatsAccumulator") -> None:
        """Add the statistics of the next part of the same tensor (see :func:`part_ranges`)."""
        self._fold()
        other._fold()
        self.total.add(other.total)
        self.neg += other.neg
        self.neg_zero += other.neg_zero
        self.zero += other.zero
        self.nan += other.nan
        self.inf += other.inf
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.seen += other.seen
        if self.counts is not None:
            self.counts += other.counts

    # -- result ------------------------------------------------------------------
    def result(self) -> dict:
        self._fold()
        if self.table:
            self._table_moments()
        elif self.counts is not None:  # odd magnitude-major buckets are the negative values
            self.neg = int(self.counts[1::2].sum()) - self.neg_zero
        numel = self.numel
        n, mean, m2 = self.n, self.mean, self.m2
        pos = n - self.neg - self.zero
        row = {
            "numel": numel,
            "neg_count": self.neg,
            "zero_count": self.zero,
            "pos_count": pos,
            "neg_frac": self.neg / numel if numel else math.nan,
            "zero_frac": self.zero / numel if numel else math.nan,
            "pos_frac": pos / numel if numel else math.nan,
            "mean": mean if n else math.nan,
            "std": math.sqrt(max(m2, 0.0) / n) if n else math.nan,
            "min": self.min if n else math.nan,
            "max": self.max if n else math.nan,
            "abs_mean": self.abs_sum / n if n else math.nan,
            "l2_norm": math.sqrt(max(m2 + n * mean * mean, 0.0)) if n else (0.0 if numel == 0 else math.nan),
            "nan_count": self.nan,
            "inf_count": self.inf,
        }
        pct, hist = self._distribution()
        for q, v in zip(PERCENTILES, pct):
            row[f"p{q:02d}"] = v
        row["finite_count"] = n
        row["sum_sq"] = m2 + n * mean * mean if n else 0.0
        row["hist_edges"], row["hist_counts"] = hist
        return row

    def _table_moments(self) -> None:
        """Every moment of an 8/16-bit tensor from its table of value counts."""
        order, vals, nan_codes, inf_codes = _table(self.dtype)
        self.nan = int(self.counts[nan_codes].sum())
        self.inf = int(self.counts[inf_codes].sum())
        counts = self.counts[order]
        used = np.flatnonzero(counts)
        self._sorted = (counts[used], vals[used])
        c, v = self._sorted
        if c.size == 0:
            return
        cf = c.astype(np.float64)  # no np.dot: multithreaded BLAS is slow on such vectors
        n = int(c.sum())
        mean = float((cf * v).sum()) / n
        self.total = _Moments(n, mean, float((cf * np.square(v - mean)).sum()), float((cf * np.abs(v)).sum()))
        self.neg = int(c[v < 0].sum())
        self.zero = int(c[v == 0].sum())
        self.min, self.max = float(v[0]), float(v[-1])

    def _hist_edges(self, pct=None) -> np.ndarray:
        """HIST_BINS bins symmetric about zero (so zero is always a bin edge) over ±max|x|; or, when
        the extremes reach beyond HIST_SPAN times the larger of |p01| and |p99| (outliers), over
        that, the values beyond counting in the outer bins."""
        a = max(abs(self.min), abs(self.max)) if self.n else 0.0
        if pct is not None:
            reach = HIST_SPAN * max(abs(pct[0]), abs(pct[-1]))
            if 0 < reach < a:
                a = reach
        if not a > 0:
            a = 1.0
        return np.linspace(-a, a, HIST_BINS + 1)

    def _distribution(self):
        nan_p = [math.nan] * len(PERCENTILES)
        if self.n == 0:
            return nan_p, (self._hist_edges(), np.zeros(HIST_BINS, dtype=np.int64))
        if self.table:
            counts, vals = self._sorted
            cum = np.cumsum(counts)
            pct = [_quantile(q, self.n, cum, counts, vals, vals, False) for q in PERCENTILES]
            edges = self._hist_edges(pct)
            return pct, (edges, hist_counts(vals, edges, counts))
        if self.exact:
            kept = np.concatenate(self._kept)
            full = self._hist_edges()
            pct, hist = percentiles_and_hist(kept, PERCENTILES, full)
            edges = self._hist_edges(pct)
            if edges[-1] < full[-1]:  # outliers: the bins over the bulk, and the outliers in the outer ones
                hist = hist_counts(kept, edges)
            return pct, (edges, hist)
        counts, blo, bhi = self._sorted_buckets()
        cum = np.cumsum(counts)
        rnd = not is_float(self.dtype)
        pct = [_quantile(q, self.n, cum, counts, blo, bhi, rnd) for q in PERCENTILES]
        edges = self._hist_edges(pct)
        mids = np.clip((blo + bhi) / 2, self.min, self.max)
        return pct, (edges, hist_counts(mids, edges, counts))

    def _sorted_buckets(self):
        """Counts and (tightened) bounds of the used buckets, in value order."""
        used = np.flatnonzero(self.counts)  # bounds of the used buckets only
        keys = _key_of_magnitude_major(used.astype(np.int64), self.buckets.size).astype(np.uint64)
        with np.errstate(invalid="ignore", over="ignore"):
            lo, hi = _bounds_of_keys(self.key_dtype, keys)
        ok = np.isfinite(lo) & np.isfinite(hi)
        order = np.argsort((lo[ok] + hi[ok]) / 2, kind="stable")
        counts = self.counts[used[ok][order]]
        blo, bhi = lo[ok][order], hi[ok][order]
        # the extremes are known exactly: tighten the outer buckets
        blo[0] = max(blo[0], self.min)
        bhi[-1] = min(bhi[-1], self.max)
        # buckets of zero and subnormal values report 0.0; integers stay integers
        if np.issubdtype(self.key_dtype, np.floating):
            tiny = np.finfo(self.key_dtype).tiny
            sub = np.maximum(np.abs(blo), np.abs(bhi)) < tiny
            blo[sub] = bhi[sub] = 0.0
        return counts, blo, bhi


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
    """numpy's default (linear) percentile, on order statistics read from sorted buckets."""
    (h,) = rank_positions(n, (q,))
    i = math.floor(h)
    j = min(i + 1, n - 1)
    a = _order_stat(i, cum, counts, blo, bhi, integer)
    if j == i or h == i:
        return a
    b = _order_stat(j, cum, counts, blo, bhi, integer)
    return lerp(a, b, h - i)


def accumulate(record, chunk_elems: int = CHUNK_ELEMS, reducers=(), start: int = 0, stop: int | None = None):
    """A :class:`StatsAccumulator` fed the record's values [start, stop) (all by default).

    ``reducers`` are fed the same chunks, in order.
    """
    acc = StatsAccumulator(record.np_dtype, record.numel, chunk_elems)
    if start == 0 and stop in (None, record.numel):
        chunks = record.chunks(chunk_elems)
    else:
        chunks = record.range_chunks(start, stop, chunk_elems)
    for chunk in chunks:
        acc.update(chunk)
        for r in reducers:
            r.update(chunk)
    return acc


def row_of(acc: StatsAccumulator, reducers=()) -> dict:
    row = acc.result()
    for r in reducers:
        row.update(r.result())
    return row


def analyze(record, chunk_elems: int = CHUNK_ELEMS, reducers=()) -> dict:
    """All statistics of one record, from one pass over its chunks.

    ``reducers`` are further per-tensor reducers fed the same chunks, in order, from
    the same single read: objects with ``update(chunk)`` and ``result() -> dict``
    whose result keys become extra columns of the row.
    """
    return row_of(accumulate(record, chunk_elems, reducers), reducers)
