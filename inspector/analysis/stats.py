"""One-pass, chunked per-tensor statistics, accumulated in float64, with exact percentiles.

For each tensor an accumulator sees every value once, chunk by chunk, and keeps only O(1)
state plus a table of counts of bounded size:

* counts of negative / zero / positive / NaN / ±Inf values (``-0.0`` is zero);
* min, max, sum of |x|, and mean / M2 merged across blocks (Chan et al.), so the
  population std stays accurate even when the mean is large;
* percentiles, equal to ``numpy.percentile`` (linear interpolation) of the finite values;
* the 64-bin plot histogram: symmetric about zero, over ±max|x|, or over
  ±HIST_SPAN x max(|p01|, |p99|) when outliers reach further (they count in the outer bins).

Two strategies, chosen by :func:`new_accumulator` from the element type and size:

* :class:`TableStats`, 8- and 16-bit types (bf16, f16, f8, int8/16, uint8/16, bool) with more
  than ``TABLE_MIN`` values: a count of every representable value (one ``count_codes`` of the
  raw bits per chunk). Every statistic, percentiles and histogram included, comes exactly
  from that table; no value is converted to float64.
* :class:`BucketStats`, everything else (float32, float64, 32/64-bit integers as float64):
  moments and a count of each value's bucket: its sign, exponent and leading mantissa bits
  (``kernels.moments_buckets``). The buckets holding the wanted order statistics are then
  looked at again, value by value (``kernels.select_buckets``): while the chunk is still in
  hand for a tensor of one chunk, by reading the tensor a second time otherwise
  (:meth:`BucketStats.second_look`). Percentiles are exact at every size; so is the histogram
  of a tensor of one chunk (the buckets straddling a bin edge are looked at too); for larger
  ones each value of a bucket straddling an edge counts in the bin of the bucket's middle.

Tensors of at most ``small.SMALL_MAX`` values are reduced many at a time instead
(:mod:`~inspector.analysis.small`), with the same results.

Moments are folded per *part* of ``PART_CHUNKS`` chunks, so the parts of one large tensor can
be reduced on separate threads (:func:`part_ranges`, :meth:`Accumulator.merge`) and give the
same bits as one sequential pass. NaN and ±Inf are counted, then excluded from moments,
extremes, norms, percentiles and the histogram.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_right
from functools import lru_cache, partial
from itertools import accumulate as running_sums

import numpy as np

from ..errors import CorruptCheckpoint
from . import kernels
from .exact import (HIST_SPAN, empty_distribution, hist_counts, hist_edges, hist_reach, needed_ranks,
                    order_statistics, percentiles_from)

CHUNK_ELEMS = 1 << 20
BLOCK_ELEMS = 1 << 17  # values reduced together while they sit in cache
PART_CHUNKS = 16  # moments are folded per part of this many chunks
TABLE_MIN = 1 << 14  # 8/16-bit tensors larger than this use the value table
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
HIST_BINS = 64
STRADDLE_MAX = 1 << 20  # beyond a chunk, values of buckets straddling a bin edge looked at up to this many
_SHIFT = {4: 12, 8: 44}  # low mantissa bits a bucket key drops (see numpy_kernels.bucket_keys)
_POOL: list[np.ndarray] = []  # zeroed bucket tables, reused (see BucketStats)
_POOL_MAX = 8


def part_ranges(numel: int, chunk_elems: int = CHUNK_ELEMS) -> list[tuple[int, int]]:
    """[start, stop) element ranges of a tensor's parts (see the module docstring)."""
    step = chunk_elems * PART_CHUNKS
    return [(s, min(s + step, numel)) for s in range(0, numel, step)]


class Moments:
    """count, mean, M2 and sum of |x|, merged exactly the same way whatever the grouping."""

    __slots__ = ("n", "mean", "m2", "abs_sum")

    def __init__(self, n=0, mean=0.0, m2=0.0, abs_sum=0.0):
        self.n, self.mean, self.m2, self.abs_sum = n, mean, m2, abs_sum

    def add(self, other: "Moments") -> None:
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


def moments_row(numel: int, m: Moments, neg: int, zero: int, nan: int, inf: int, lo: float, hi: float) -> dict:
    """The count, fraction and moment columns of a tensor-table row."""
    n, mean, m2 = m.n, m.mean, m.m2
    pos = n - neg - zero
    return {
        "numel": numel,
        "neg_count": neg,
        "zero_count": zero,
        "pos_count": pos,
        "neg_frac": neg / numel if numel else math.nan,
        "zero_frac": zero / numel if numel else math.nan,
        "pos_frac": pos / numel if numel else math.nan,
        "mean": mean if n else math.nan,
        "std": math.sqrt(max(m2, 0.0) / n) if n else math.nan,
        "min": lo if n else math.nan,
        "max": hi if n else math.nan,
        "abs_mean": m.abs_sum / n if n else math.nan,
        "l2_norm": math.sqrt(max(m2 + n * mean * mean, 0.0)) if n else (0.0 if numel == 0 else math.nan),
        "nan_count": nan,
        "inf_count": inf,
    }


class Accumulator:
    """Reduce one tensor, chunk by chunk, to the statistics of a tensor-table row (a strategy
    implements ``_add(chunk)`` and ``_distribution() -> (percentiles, (edges, counts))``)."""

    def __init__(self, dtype: np.dtype, numel: int, chunk_elems: int = CHUNK_ELEMS):
        self.dtype = np.dtype(dtype).newbyteorder("=")  # chunks are read as native values (see update)
        self.numel = numel
        self.chunk_elems = chunk_elems
        self.neg = self.zero = self.nan = self.inf = 0
        self.total, self.part = Moments(), Moments()
        self.min = math.inf
        self.max = -math.inf
        self.seen = 0

    def update(self, chunk: np.ndarray) -> None:
        if chunk.size == 0:
            return
        if not chunk.dtype.isnative:  # big-endian data: the kernels read native bits
            chunk = chunk.astype(chunk.dtype.newbyteorder("="))
        self._add(chunk.reshape(-1))
        self.seen += chunk.size
        if self.seen % (self.chunk_elems * PART_CHUNKS) == 0:
            self._fold()

    def _fold(self) -> None:
        """Close the current part: add its moments to the totals."""
        self.total.add(self.part)
        self.part = Moments()

    def end_pass(self) -> None:
        """The pass over this accumulator's values is over (it may now go to another thread)."""

    def needs_look(self) -> bool:
        """Whether :meth:`second_look` must read the values again before :meth:`result`."""
        return False

    def merge(self, other: "Accumulator") -> None:
        """Add the statistics of the next part of the same tensor (see :func:`part_ranges`)."""
        self._fold()
        other._fold()
        self.total.add(other.total)
        for name in ("neg", "zero", "nan", "inf", "seen"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def result(self) -> dict:
        self._fold()
        self._finish()
        n = self.total.n
        row = moments_row(self.numel, self.total, self.neg, self.zero, self.nan, self.inf, self.min, self.max)
        pct, hist = self._distribution() if n else empty_distribution(len(PERCENTILES), HIST_BINS)
        return {**row, **dict(zip(PCT_COLUMNS, pct)), "finite_count": n, "hist_edges": hist[0],
                "hist_counts": hist[1]}

    def _finish(self) -> None:
        """Derive what the pass left for the end."""


PCT_COLUMNS = tuple(f"p{q:02d}" for q in PERCENTILES)


@lru_cache(maxsize=32)
def _table(dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For an 8/16-bit dtype: (codes of finite values sorted by value, their values, NaN codes, Inf codes)."""
    view = np.uint8 if dtype.itemsize == 1 else np.uint16
    with np.errstate(invalid="ignore", over="ignore"):
        vals = np.arange(1 << (8 * dtype.itemsize)).astype(view).view(dtype).astype(np.float64)
    finite = np.flatnonzero(np.isfinite(vals))
    order = finite[np.argsort(vals[finite], kind="stable")]
    return order, vals[order], np.flatnonzero(np.isnan(vals)), np.flatnonzero(np.isinf(vals))


class TableStats(Accumulator):
    """8/16-bit types: a count of every representable value; everything exact from it."""

    def __init__(self, dtype: np.dtype, numel: int, chunk_elems: int = CHUNK_ELEMS):
        super().__init__(dtype, numel, chunk_elems)
        self.counts = np.zeros(1 << (8 * self.dtype.itemsize), dtype=np.int64)

    def _add(self, chunk: np.ndarray) -> None:
        kernels.count_codes(kernels.raw(chunk), self.counts)

    def merge(self, other: "TableStats") -> None:
        super().merge(other)
        self.counts += other.counts

    def _finish(self) -> None:
        order, vals, nan_codes, inf_codes = _table(self.dtype)
        self.nan = int(self.counts[nan_codes].sum())
        self.inf = int(self.counts[inf_codes].sum())
        counts = self.counts[order]
        used = np.flatnonzero(counts)
        c, v = counts[used], vals[used]
        self._sorted = c, v
        if c.size == 0:
            return
        cf = c.astype(np.float64)  # no np.dot: multithreaded BLAS is slow on such vectors
        n = int(c.sum())
        mean = float((cf * v).sum()) / n
        self.total = Moments(n, mean, float((cf * np.square(v - mean)).sum()), float((cf * np.abs(v)).sum()))
        self.neg = int(c[v < 0].sum())
        self.zero = int(c[v == 0].sum())
        self.min, self.max = float(v[0]), float(v[-1])

    def _distribution(self):
        counts, vals = self._sorted
        cum = np.cumsum(counts)
        n = self.total.n
        pct = percentiles_from(order_statistics(cum, vals, n, PERCENTILES), n, PERCENTILES)
        edges = hist_edges(self.min, self.max, pct, HIST_BINS)
        return pct, (edges, hist_counts(vals, edges, counts))


def _take_table() -> np.ndarray:
    try:
        return _POOL.pop()
    except IndexError:
        return np.zeros(kernels.BUCKETS, dtype=np.int64)


def _give_table(table: np.ndarray, lo: int, hi: int) -> None:
    table[lo : hi + 1] = 0
    if len(_POOL) < _POOL_MAX:
        _POOL.append(table)


class BucketStats(Accumulator):
    """float32, float64 and wide integers: moments and bucket counts in one pass; the values of the
    buckets holding the wanted order statistics looked at once more (see the module docstring)."""

    def __init__(self, dtype: np.dtype, numel: int, chunk_elems: int = CHUNK_ELEMS):
        super().__init__(dtype, numel, chunk_elems)
        self.key_dtype = np.dtype(np.float32) if self.dtype == np.float32 else np.dtype(np.float64)
        self.neg_zero = 0  # -0.0 values, which sit in a negative bucket
        self._table = None  # a pooled table of 2**20 counts while the pass runs
        self.klo, self.khi = kernels.BUCKETS, -1
        self.counts = np.zeros(0, dtype=np.int64)  # counts of keys klo..khi once the pass is over
        self._dist = None

    def _add(self, chunk: np.ndarray) -> None:
        src = chunk if chunk.dtype == self.key_dtype else chunk.astype(np.float64)
        if self._table is None:
            self._table = _take_table()
        n, mean, m2, abs_sum, lo, hi, nan, inf, zero, neg_zero, klo, khi = kernels.moments_buckets(
            src, self._table, BLOCK_ELEMS)
        self.nan += nan
        self.inf += inf
        self.zero += zero
        self.neg_zero += neg_zero
        self.klo, self.khi = min(self.klo, klo), max(self.khi, khi)
        if n:
            self.part.add(Moments(n, mean, m2, abs_sum))
            self.min = min(self.min, lo)
            self.max = max(self.max, hi)
        if chunk.size == self.numel:  # the whole tensor is in hand: look at it now, in the table itself
            self._fold()
            self.counts = self._table[self.klo : self.khi + 1] if self.khi >= self.klo else self.counts
            if self.total.n:
                self._dist = self._look([lambda: iter((src,))], lambda fn, xs: [fn(x) for x in xs], exact_hist=True)
            self.counts = np.zeros(0, dtype=np.int64)
            self._release()

    def end_pass(self) -> None:
        if self._table is not None:
            if self.khi >= self.klo:
                self.counts = self._table[self.klo : self.khi + 1].copy()
            self._release()

    def _release(self) -> None:
        _give_table(self._table, self.klo, self.khi)
        self._table = None

    def merge(self, other: "BucketStats") -> None:
        super().merge(other)
        self.end_pass()
        other.end_pass()
        self.neg_zero += other.neg_zero
        if other.khi < other.klo:
            return
        lo, hi = min(self.klo, other.klo), max(self.khi, other.khi)
        counts = np.zeros(hi - lo + 1, dtype=np.int64)
        for part in (self, other):
            if part.khi >= part.klo:
                counts[part.klo - lo : part.khi - lo + 1] += part.counts
        self.klo, self.khi, self.counts = lo, hi, counts

    def needs_look(self) -> bool:
        return self._dist is None and (self.total.n + self.part.n) > 0

    def second_look(self, readers, run=None) -> None:
        """Read the tensor's values again for its percentiles: ``readers`` are zero-argument callables
        giving iterators over consecutive pieces of them; ``run(fn, readers)`` is ``[fn(r) for r in
        readers]``, or the same on other threads."""
        self.end_pass()
        self._fold()
        self._dist = self._look(readers, run or (lambda fn, xs: [fn(x) for x in xs]), exact_hist=False)

    def _finish(self) -> None:
        self.end_pass()
        if self.needs_look():
            raise RuntimeError("BucketStats.result() before second_look()")

    def _distribution(self):
        return self._dist

    def _look(self, readers, run, exact_hist: bool):
        """Percentiles and histogram from the bucket counts and the values of the buckets that matter:
        those holding the wanted ranks and, when the counts already fix the bin edges (no outliers) and
        they are not too many, those straddling an edge (binned where they are read, see _pick). Counts
        the negative values too (the walk over the counts that finds the ranks' buckets passes them)."""
        b = ValueOrder(self.klo, self.counts, self.zero, self.neg_zero, self.key_dtype)
        n = self.total.n
        ranks = needed_ranks(n, PERCENTILES)
        guess = hist_edges(self.min, self.max, [0.0, 0.0], HIST_BINS)
        where, before = b.locate(ranks, guess)
        self.neg = b.neg
        want = _union([w for w in where if w != b.n_odd])
        edges = guess if self._edges_fixed(b, ranks, where) else None
        straddle = _minus(b.straddling(edges), want) if edges is not None else ()
        binned = ()  # buckets whose values are binned as they are picked
        if straddle and (exact_hist or b.total(straddle) <= STRADDLE_MAX):
            binned, straddle = straddle, ()
        if len(readers) == 1:  # one reader: its few straddling values are sorted with the rest, not split off
            want, binned = _union(want, binned), ()
        both = _union(want, binned) if binned else want
        for which in (both, want, binned) if binned else (want,):
            b.bitmap(which)  # (made here, once, rather than on each worker)
        got = run(partial(self._pick, b, want, binned, both, edges), readers)
        picked = np.sort(np.concatenate([g[1] for g in got]) if len(got) != 1 else got[0][1])
        if sum(g[0] for g in got) != b.total(want) + b.total(binned):
            raise CorruptCheckpoint("a tensor's values changed between two reads of it; is the file being written?")
        pct = b.percentiles(n, PERCENTILES, want, picked, (ranks, where, before))
        binned_hist = sum(g[2] for g in got if g[2] is not None)
        if edges is None or hist_reach(self.min, self.max, pct) != edges[-1]:  # (the edges the counts fixed)
            edges = hist_edges(self.min, self.max, pct, HIST_BINS)
            straddle, binned_hist = _minus(b.straddling(edges), want), 0  # buckets of unknown values
        hist = b.whole_hist(edges) + hist_counts(picked.astype(np.float64), edges)
        return pct, (edges, hist + binned_hist + self._straddling_hist(b, straddle, edges, readers, exact_hist))

    def _straddling_hist(self, b: "ValueOrder", straddle: tuple, edges: np.ndarray, readers, exact: bool):
        """Bin counts of the values of the buckets at ``straddle``: read again when ``exact``, else each
        counted at its bucket's middle."""
        if not straddle:
            return 0
        if exact:
            values = np.concatenate([b.select(self._converted(rd), straddle) for rd in readers])
            return hist_counts(values.astype(np.float64), edges)
        return hist_counts(b.mids(straddle), edges, np.array(b.counts(straddle), dtype=np.int64))

    def _pick(self, b: "ValueOrder", want: tuple, binned: tuple, both: tuple, edges, reader) -> tuple:
        """One reader's values of the buckets at ``want`` and ``binned`` (``both``): (how many, those of
        ``want`` unsorted, the bin counts of those of ``binned`` or None). Runs on a worker when there are
        several readers."""
        values = b.select(self._converted(reader), both)
        if not binned:
            return values.size, values, None
        out = np.empty(values.size, dtype=values.dtype)
        kept = kernels.select_buckets(values, b.bitmap(want), out)
        rest = kernels.select_buckets(values, b.bitmap(binned), values)  # (in place)
        return values.size, out[:kept], hist_counts(values[:rest].astype(np.float64), edges)

    def _edges_fixed(self, b: "ValueOrder", ranks: list, where: list) -> bool:
        """Whether the bucket counts decide the histogram's edges already (as those of the extremes):
        when p01 and p99 cannot be near enough zero for the edges to stop short of the extremes.
        (``ranks`` are the needed ranks, in order, and ``where`` the positions of their buckets.)"""
        n = self.total.n
        at = dict(zip(ranks, where))
        near = 0.0
        for q in (PERCENTILES[0], PERCENTILES[-1]):
            first = math.floor((n - 1) * (q / 100.0))
            lo, hi = b.bounds(at[first])[0], b.bounds(at[min(first + 1, n - 1)])[1]  # the percentile is within
            near = max(near, 0.0 if lo <= 0.0 <= hi else min(abs(lo), abs(hi)))
        return HIST_SPAN * near >= max(abs(self.min), abs(self.max))

    def _converted(self, reader):
        """The chunks of ``reader()`` as the kernels take them: native float32, or float64."""
        for c in reader():
            c = c.reshape(-1)
            if not c.dtype.isnative:
                c = c.astype(c.dtype.newbyteorder("="))
            yield c if c.dtype == self.key_dtype else c.astype(np.float64)


class ValueOrder:
    """The bucket counts of a :class:`BucketStats` in value order: the negative keys by falling
    magnitude, then the zeros (+0.0 and -0.0) as a bucket of their own, then the positive keys
    (``numpy_kernels.value_order``). Positions in that order are ints, sets of them sorted tuples."""

    def __init__(self, klo, counts, zero, neg_zero, key_dtype):
        self.odd0, self.even0 = klo | 1, klo + (klo & 1)  # the first odd and even keys
        self.n_odd = len(range(self.odd0 - klo, counts.size, 2))
        self.size = self.n_odd + 1 + len(range(self.even0 - klo, counts.size, 2))  # buckets, the zeros' included
        self.klo, self.raw, self.zero, self.neg_zero, self.key_dtype = klo, counts, zero, neg_zero, key_dtype
        self.neg = 0  # negative values (see locate)
        self._edges: dict = {}  # edges (as bytes) -> (positions of the buckets straddling them, bin counts)
        self._ranks: list = []  # the ranks located
        self._bitmaps: dict = {}  # positions -> their bitmap
        self._known: dict = {}  # position -> count, of the buckets located

    def locate(self, ranks: list, edges: np.ndarray | None = None) -> tuple[list, list]:
        """The positions of the buckets of ``ranks`` (sorted) and the counts before them; notes what
        ``edges`` need (see _edge_info) and the number of negative values."""
        where, before, count, across, across_count, hist, self.neg = kernels.locate(
            self.raw, self.klo, self.zero, self.neg_zero, np.array(ranks, dtype=np.int64),
            _NO_EDGES if edges is None else edges[1:-1], self.key_dtype.itemsize)
        self._ranks = ranks
        self._known.update(zip(where, count))
        if edges is not None:
            self._known.update(zip(across, across_count))
            self._edges[edges.tobytes()] = tuple(across), hist
        return where, before

    def _edge_info(self, edges: np.ndarray) -> tuple[tuple, list]:
        """The positions of the buckets (with values) straddling an inner edge (holding values below and
        above it), and the bin counts of the buckets not located (see whole_hist)."""
        key = edges.tobytes()
        if key not in self._edges:
            self.locate(self._ranks, edges)
        return self._edges[key]

    def key_at(self, p: int) -> int:
        """The bucket key at a value-order position (not the zero bucket's)."""
        return self.odd0 + 2 * (self.n_odd - 1 - p) if p < self.n_odd else self.even0 + 2 * (p - self.n_odd - 1)

    def count(self, p: int) -> int:
        """The count of the bucket at position ``p``."""
        if p in self._known:
            return self._known[p]
        if p == self.n_odd:
            return self.zero
        key = self.key_at(p)
        c = int(self.raw[key - self.klo])
        return c - self.neg_zero if key == 1 else c - (self.zero - self.neg_zero) if key == 0 else c

    def counts(self, positions: tuple) -> list[int]:
        """The counts of the buckets at ``positions``."""
        known = self._known
        return [known[p] if p in known else self.count(p) for p in positions]

    def total(self, positions: tuple) -> int:
        return sum(self.counts(positions))

    def select(self, chunks, which: tuple) -> np.ndarray:
        """The values of the buckets at ``which`` among ``chunks``, unsorted. Memory: what is picked and
        one chunk's worth of scratch."""
        want = self.total(which)
        if want == 0:
            return np.empty(0, dtype=self.key_dtype)
        bitmap = self.bitmap(which)
        pieces, got, scratch = [], 0, np.empty(0, dtype=self.key_dtype)
        for c in chunks:
            if scratch.size < min(c.size, want):
                scratch = np.empty(min(c.size, want), dtype=self.key_dtype)
            k = kernels.select_buckets(c, bitmap, scratch)
            got += k
            if k > scratch.size or got > want:
                raise CorruptCheckpoint("a tensor's values changed between two reads of it; is the file being written?")
            pieces.append(scratch[:k].copy())
        return np.concatenate(pieces) if len(pieces) != 1 else pieces[0]

    def bitmap(self, which: tuple) -> np.ndarray:
        """``select_buckets``' bitmap of the buckets at ``which`` (made once, for every part's look)."""
        if which not in self._bitmaps:
            top, odd0, even0 = self.n_odd - 1, self.odd0, self.even0 - 2 * (self.n_odd + 1)  # (see key_at)
            keys = [odd0 + 2 * (top - p) if p <= top else even0 + 2 * p for p in which]
            self._bitmaps[which] = kernels.bucket_bitmap(keys)
        return self._bitmaps[which]

    def percentiles(self, n: int, percentiles, want: tuple, picked: np.ndarray, located) -> list[float]:
        """Exact percentiles from the bucket counts and the sorted values of the buckets at ``want``
        (sorted positions); ``located``: the needed ranks, the positions of their buckets and the counts
        before those."""
        ranks, where, before = located
        if not want:  # every needed rank is a zero
            return percentiles_from(dict.fromkeys(ranks, 0.0), n, percentiles)
        start = dict(zip(want, running_sums(self.counts(want), initial=0)))  # -> values in earlier buckets
        last, zeros = picked.size - 1, self.n_odd
        at = [min(max(start[p] + r - ahead, 0), last) for r, p, ahead in zip(ranks, where, before) if p != zeros]
        picks = iter(picked[at].tolist() if at and picked.size else [0.0] * len(at))
        return percentiles_from({r: 0.0 if p == zeros else next(picks) for r, p in zip(ranks, where)}, n, percentiles)

    def straddling(self, edges: np.ndarray) -> tuple:
        """Positions of the buckets (with values) holding values of two bins: at most one per inner edge."""
        return self._edge_info(edges)[0]

    def whole_hist(self, edges: np.ndarray) -> np.ndarray:
        """Bin counts of the buckets not located (neither holding a needed rank, nor straddling an edge),
        each within one bin: bin k holds the buckets from the one of inner edge k to that of edge k + 1,
        values beyond the edges counting in the outer bins; and the zeros in their bin."""
        hist = np.array(self._edge_info(edges)[1], dtype=np.int64)
        hist[bisect_right(edges[1:-1].tolist(), 0.0)] += self.zero
        return hist

    def bounds(self, p: int) -> tuple[float, float]:
        """Lowest and highest value the bucket at ``p`` can hold (the zeros: 0 and 0)."""
        if p == self.n_odd:
            return 0.0, 0.0
        key = max(self.key_at(p), 0)
        shift = _SHIFT[self.key_dtype.itemsize]
        low = (key >> 1) << shift
        a, b = _as_float(low, self.key_dtype.itemsize), _as_float(low | ((1 << shift) - 1), self.key_dtype.itemsize)
        return (-b, -a) if key & 1 else (a, b)

    def mids(self, positions: tuple) -> np.ndarray:
        """The middle of the buckets at ``positions``."""
        return np.array([(lo + hi) / 2 for lo, hi in map(self.bounds, positions)], dtype=np.float64)


_NO_EDGES = np.zeros(0, dtype=np.float64)
_FLOAT_OF = {4: (struct.Struct("=I"), struct.Struct("=f")), 8: (struct.Struct("=Q"), struct.Struct("=d"))}


def _as_float(bits: int, width: int) -> float:
    """The float32 (width 4) or float64 value of these bits."""
    as_uint, as_float = _FLOAT_OF[width]
    return as_float.unpack(as_uint.pack(bits))[0]


def _union(*positions) -> tuple:
    """The sorted distinct positions of a few small sets."""
    return tuple(sorted(set().union(*positions)))


def _minus(positions: tuple, leave_out: tuple) -> tuple:
    """``positions`` (sorted) but those in ``leave_out``."""
    return tuple(p for p in positions if p not in leave_out)


def new_accumulator(dtype: np.dtype, numel: int, chunk_elems: int = CHUNK_ELEMS) -> Accumulator:
    """The strategy for a tensor of this element type and size (see the module docstring)."""
    dtype = np.dtype(dtype)
    if dtype.itemsize <= 2 and (numel > TABLE_MIN or numel > chunk_elems):
        return TableStats(dtype, numel, chunk_elems)
    return BucketStats(dtype, numel, chunk_elems)


def accumulate(record, chunk_elems: int = CHUNK_ELEMS, reducers=(), start: int = 0, stop: int | None = None):
    """An accumulator fed the record's values [start, stop) (all by default), its pass ended.

    ``reducers`` are fed the same chunks, in order.
    """
    acc = new_accumulator(record.np_dtype, record.numel, chunk_elems)
    if start == 0 and stop in (None, record.numel):
        chunks = record.chunks(chunk_elems)
    else:
        chunks = record.range_chunks(start, stop, chunk_elems)
    for chunk in chunks:
        acc.update(chunk)
        for r in reducers:
            r.update(chunk)
    acc.end_pass()
    return acc


def row_of(acc: Accumulator, reducers=()) -> dict:
    row = acc.result()
    for r in reducers:
        row.update(r.result())
    return row


def analyze(record, chunk_elems: int = CHUNK_ELEMS, reducers=()) -> dict:
    """All statistics of one record, from one pass over its chunks (and, for a tensor larger than a
    chunk, a second read of the few values that decide its percentiles).

    ``reducers`` are further per-tensor reducers fed the same chunks, in order, from
    the same single read: objects with ``update(chunk)`` and ``result() -> dict``
    whose result keys become extra columns of the row.
    """
    acc = accumulate(record, chunk_elems, reducers)
    if acc.needs_look():
        acc.second_look([lambda: record.chunks(chunk_elems)])
    return row_of(acc, reducers)
