"""The analyzer's inner loops in numpy: the same functions, arguments and results as the
compiled ``_kernels`` module (see :mod:`~inspector.analysis.kernels`), used where it is not built.

Moments are folded per block of ``block`` values exactly as the C loops fold them, so the
two give the same counts, extremes, bucket counts and selections, and moments equal to
rounding (the C sums run in eight lanes).
"""

from __future__ import annotations

import numpy as np

BUCKETS = 1 << 20
CODES = 1 << 20  # bits of select_buckets' bitmap
_SHIFT = {4: 12, 8: 44}  # low mantissa bits a bucket key drops, by item size


def _check(arr: np.ndarray, dtypes, what: str) -> None:
    if not isinstance(arr, np.ndarray) or arr.dtype not in dtypes:
        raise TypeError(f"{what}, not {getattr(arr, 'dtype', type(arr).__name__)}")


def _counts(counts: np.ndarray, need: int, what: str) -> None:
    _check(counts, (np.dtype(np.int64),), "counts must be int64")
    if counts.size < need:
        raise ValueError(f"{what}: counts must have at least {need} entries")


def bucket_keys(vals: np.ndarray) -> np.ndarray:
    """Magnitude-major bucket key of each float32/float64 value: (leading magnitude bits << 1) | sign."""
    bits = 8 * vals.itemsize
    u = vals.view(np.uint32 if bits == 32 else np.uint64)
    t = u << 1
    t >>= _SHIFT[vals.itemsize] + 1
    t <<= 1
    t |= u >> (bits - 1)
    return t.astype(np.intp)


def count_codes(src: np.ndarray, counts: np.ndarray) -> None:
    """``counts += bincount(src)`` for uint8 / uint16 codes."""
    _check(src, (np.dtype(np.uint8), np.dtype(np.uint16)), "count_codes: src must be uint8 or uint16 codes")
    _counts(counts, 1 << (8 * src.itemsize), "count_codes")
    counts[: 1 << (8 * src.itemsize)] += np.bincount(src.reshape(-1), minlength=1 << (8 * src.itemsize))


def moments_buckets(src: np.ndarray, counts: np.ndarray, block: int) -> tuple:
    """(n, mean, m2, abs_sum, min, max, nan, inf, zero, neg_zero, klo, khi) of float32/float64 values,
    their bucket counts added to ``counts``; klo > khi when no value was finite."""
    _check(src, (np.dtype(np.float32), np.dtype(np.float64)), "moments_buckets: src must be float32 or float64")
    _counts(counts, BUCKETS, "moments_buckets")
    if block <= 0:
        raise ValueError("moments_buckets: block must be positive")
    s = Summary()
    for start in range(0, src.size, block):
        s.add_block(src[start : start + block], counts)
    return s.n, s.mean, s.m2, s.abs_sum, s.min, s.max, s.nan, s.inf, s.zero, s.neg_zero, s.klo, s.khi


class Summary:
    """The running state of :func:`moments_buckets`."""

    def __init__(self):
        self.n, self.mean, self.m2, self.abs_sum = 0, 0.0, 0.0, 0.0
        self.min, self.max = np.inf, -np.inf
        self.nan = self.inf = self.zero = self.neg_zero = 0
        self.klo, self.khi = BUCKETS, -1

    def add_block(self, x: np.ndarray, counts: np.ndarray) -> None:
        lo, hi = x.min(), x.max()
        if not (np.isfinite(lo) and np.isfinite(hi)):
            finite = np.isfinite(x)
            nans = int(np.count_nonzero(np.isnan(x)))
            self.nan += nans
            self.inf += x.size - int(np.count_nonzero(finite)) - nans
            x = x[finite]
            if x.size == 0:
                return
            lo, hi = x.min(), x.max()
        keys = bucket_keys(x)
        k0 = int(keys.min())
        r = np.bincount(keys - k0)
        counts[k0 : k0 + r.size] += r
        self.klo, self.khi = min(self.klo, k0), max(self.khi, k0 + r.size - 1)
        if k0 <= 1:  # buckets 0 and 1 hold +0.0 and -0.0 (and the tiniest subnormals)
            zeros = x == 0
            self.zero += int(np.count_nonzero(zeros))
            self.neg_zero += int(np.count_nonzero(zeros & np.signbit(x)))
        self._moments(x.astype(np.float64), float(lo), float(hi))

    def _moments(self, x: np.ndarray, lo: float, hi: float) -> None:
        n = x.size
        mean = float(x.sum()) / n
        abs_sum = float(np.abs(x).sum())
        x -= mean
        m2 = float(np.square(x, out=x).sum())
        if self.n == 0:
            self.n, self.mean, self.m2, self.abs_sum = n, mean, m2, abs_sum
        else:
            total = self.n + n
            delta = mean - self.mean
            self.mean += delta * n / total
            self.m2 += m2 + delta * delta * self.n * n / total
            self.abs_sum += abs_sum
            self.n = total
        self.min, self.max = min(self.min, lo), max(self.max, hi)


def bucket_codes(keys: np.ndarray) -> np.ndarray:
    """The 20-bit code of each bucket key: its sign bit above its 19 magnitude bits, as the value's own
    leading bits are (``select_buckets`` tests a value's ``bits >> (width - 20)`` against them)."""
    keys = np.asarray(keys, dtype=np.int64)
    codes = keys & 1
    codes <<= 19
    codes |= keys >> 1
    return codes


def bucket_bitmap(keys: np.ndarray) -> np.ndarray:
    """``select_buckets``' bitmap (2^20 bits as uint64 words) with the bits of these bucket keys set."""
    codes = bucket_codes(keys)
    words = np.zeros(CODES // 64, dtype=np.uint64)
    np.bitwise_or.at(words, codes >> 6, np.uint64(1) << (codes & 63).astype(np.uint64))
    return words


def select_buckets(src: np.ndarray, bitmap: np.ndarray, out: np.ndarray) -> int:
    """The nonzero values whose bucket has its bit set in ``bitmap`` (see :func:`bucket_bitmap`), in order,
    into ``out`` (as many as fit); returns how many there were."""
    _check(src, (np.dtype(np.float32), np.dtype(np.float64)), "select_buckets: src must be float32 or float64")
    _check(bitmap, (np.dtype(np.uint64),), "select_buckets: bitmap must be uint64")
    if bitmap.size < CODES // 64:
        raise ValueError(f"select_buckets: bitmap must have at least {CODES // 64} words")
    _check(out, (src.dtype,), "select_buckets: out must have src's type")
    bits = 8 * src.itemsize
    codes = src.view(np.uint32 if bits == 32 else np.uint64) >> (bits - 20)
    flagged = np.unpackbits(bitmap[: CODES // 64].astype("<u8", copy=False).view(np.uint8), bitorder="little")
    picked = src[flagged.view(bool)[codes] & (src != 0)]
    out[: min(picked.size, out.size)] = picked[: out.size]
    return int(picked.size)


def row_signs(src: np.ndarray, code: str, inner: int, neg: np.ndarray, pos: np.ndarray) -> None:
    """Negative and positive counts of each run of ``inner`` values (codes: see ``kernels.row_code``)."""
    want = {"b": np.uint16, "e": np.uint16, "f": np.float32, "d": np.float64}.get(code)
    if want is None or inner <= 0:
        raise ValueError("row_signs: code must be one of b, e, f, d and inner positive")
    _check(src, (np.dtype(want),), "row_signs: src must hold values of the code's type")
    if src.size % inner:
        raise ValueError("row_signs: src must hold whole rows")
    rows = src.size // inner
    _counts(neg, rows, "row_signs")
    _counts(pos, rows, "row_signs")
    if code in "be":
        from ml_dtypes import bfloat16

        src = src.view(bfloat16 if code == "b" else np.float16).astype(np.float32)
    grid = src.reshape(rows, inner)
    with np.errstate(invalid="ignore"):
        neg[:rows] = np.count_nonzero(grid < 0, axis=1)
        pos[:rows] = np.count_nonzero(grid > 0, axis=1)


def value_order(counts: np.ndarray, klo: int, zero: int, neg_zero: int) -> tuple[np.ndarray, int]:
    """The bucket counts of keys klo.. in value order: the odd (negative) keys by falling magnitude, the
    zeros (+0.0 and -0.0, which leave keys 1 and 0) as one bucket, the even keys by rising magnitude;
    and the number of odd keys (the position of the zeros)."""
    odd0, even0 = klo | 1, klo + (klo & 1)
    odd, even = counts[odd0 - klo :: 2], counts[even0 - klo :: 2]
    order = np.concatenate((odd[::-1], [zero], even)).astype(np.int64)
    if odd0 == 1:
        order[odd.size - 1] -= neg_zero
    if even0 == 0 and even.size:
        order[odd.size + 1] -= zero - neg_zero
    return order, odd.size


def edge_keys(edges: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """For each edge: the bucket key of the least value (float32 for width 4, else float64) >= it, and
    whether the greatest value below it has the same key (then that bucket straddles the edge)."""
    kind = np.dtype(np.float32 if width == 4 else np.float64)
    with np.errstate(over="ignore"):
        above = edges.astype(kind)
        above = np.where(above.astype(np.float64) < edges, np.nextafter(above, kind.type(np.inf)), above)
        below = np.nextafter(above, kind.type(-np.inf))
    keys = bucket_keys(above)
    return keys, keys == bucket_keys(below)


def locate(counts: np.ndarray, klo: int, zero: int, neg_zero: int, ranks: np.ndarray, edges: np.ndarray,
           width: int) -> tuple:
    """One look at bucket counts of keys klo.. in value order (see :func:`value_order`): for each rank
    (sorted) the position of its bucket, the count before that bucket and its count; the positions, in
    order, of the buckets (with values, not the zeros') straddling an edge (see :func:`edge_keys`), and
    their counts; the bin counts of the buckets not located (neither a rank's, nor straddling an edge,
    nor the zeros'), each within one bin: bin k (of len(edges) + 1) holds the buckets from that of the
    least value >= edge k - 1 to that of edge k; and the count of negative values. Lists of ints, but
    the last: (where, before, count, straddling, straddling_count, hist, neg)."""
    _check(counts, (np.dtype(np.int64),), "locate: counts must be int64")
    _check(ranks, (np.dtype(np.int64),), "locate: ranks must be int64")
    _check(edges, (np.dtype(np.float64),), "locate: edges must be float64")
    if width not in (4, 8):
        raise ValueError("locate: width must be 4 or 8")
    if np.any(ranks[1:] < ranks[:-1]):
        raise ValueError("locate: ranks must be sorted")
    if np.isnan(edges).any():
        raise ValueError("locate: edges must not be NaN")
    order, n_odd = value_order(counts, klo, zero, neg_zero)
    cum = np.cumsum(order)
    if ranks.size and ranks[-1] >= cum[-1]:
        raise ValueError("locate: ranks must be below the number of values counted")
    where = np.searchsorted(cum, ranks, side="right")
    keys, same = edge_keys(edges, width)
    odd0, even0 = klo | 1, klo + (klo & 1)
    steps = np.maximum((keys - np.where(keys & 1, odd0, even0)) // 2, -1)  # -1: nearer zero than all
    pos = np.clip(np.where(keys & 1, n_odd - 1 - steps, n_odd + 1 + steps), 0, order.size)
    straddled = np.where(same & (pos < order.size) & (pos != n_odd), order[np.minimum(pos, order.size - 1)], 0)
    hist = np.diff(np.concatenate(([0], np.where(pos > 0, cum[pos - 1], 0), cum[-1:])))
    spots = np.unique(np.concatenate(([n_odd], where[where != n_odd], pos[straddled > 0])))
    np.subtract.at(hist, (pos[None, :] <= spots[:, None]).sum(axis=1), order[spots])
    neg = int(cum[n_odd - 1]) if n_odd else 0
    across = np.unique(pos[straddled > 0])
    return (where.tolist(), (cum[where] - order[where]).tolist(), order[where].tolist(), across.tolist(),
            order[across].tolist(), hist.tolist(), neg)
