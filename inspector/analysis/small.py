"""Many small tensors reduced at once: the same statistics as :mod:`~inspector.analysis.stats`.

Biases, norm scales and small convolutions are most of the tensors of many models, and
each would pay a buffer, a bucket table and a few dozen numpy calls of its own. Here the
values of up to thousands of them sit as the rows of one float64 grid (one grid per
power-of-two length, padded with NaN), and every statistic is one numpy call over the
grid: counts, moments (two passes about each row's mean), extremes, one sort along the
rows for the exact percentiles (numpy's linear interpolation), the histogram edges and
one ``bincount`` for all the histograms.
"""

from __future__ import annotations

import numpy as np

from .exact import HIST_SPAN
from .stats import HIST_BINS, PCT_COLUMNS, PERCENTILES

SMALL_MAX = 1 << 14  # tensors of at most this many values are reduced together
BATCH_ELEMS = 1 << 19  # values per batch, about
BATCH_TENSORS = 4096  # tensors per batch, at most
SINGLE_GRID_CELLS = 1 << 15  # a batch of at most this many cells (rows x longest) is one grid


def small_rows(arrays: list[np.ndarray]) -> list[dict]:
    """Statistics rows (as ``Accumulator.result``) of 1-D float64 arrays, in their order."""
    rows: list[dict | None] = [None] * len(arrays)
    for length, idx in _groups(arrays).items():
        for i, row in zip(idx, _grid_rows([arrays[i] for i in idx], length)):
            rows[i] = row
    return rows


def _groups(arrays: list[np.ndarray]) -> dict[int, list[int]]:
    """The grids of ``arrays`` (row length -> indices): one per power-of-two length, or a single one of
    the longest when its padding is small or the grids are small enough for numpy's cost per call to
    outweigh it (a model's few biases and small weights: about 40 calls a grid)."""
    groups: dict[int, list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(1 << max(a.size - 1, 0).bit_length(), []).append(i)
    longest = max(groups, default=1)
    if len(groups) > 1 and len(arrays) * longest <= max(SINGLE_GRID_CELLS, 2 * sum(a.size for a in arrays)):
        return {longest: list(range(len(arrays)))}
    return groups


def _grid_rows(arrays: list[np.ndarray], length: int) -> list[dict]:
    x = np.full((len(arrays), length), np.nan)
    numel = np.empty(len(arrays), dtype=np.int64)
    for i, a in enumerate(arrays):
        x[i, : a.size] = a
        numel[i] = a.size
    nan = np.count_nonzero(np.isnan(x), axis=1) - (length - numel)
    inf_mask = np.isinf(x)
    inf = np.count_nonzero(inf_mask, axis=1)
    x[inf_mask] = np.nan
    finite = ~np.isnan(x)
    n = np.count_nonzero(finite, axis=1)
    z = np.where(finite, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = z.sum(axis=1) / n
        d = np.where(finite, z - mean[:, None], 0.0)
    lo, hi = np.fmin.reduce(x, axis=1), np.fmax.reduce(x, axis=1)
    pct = _percentiles(np.sort(x, axis=1), n)
    edges = _edges(lo, hi, pct)
    hist = _hists(x, finite, edges)
    counts = (np.count_nonzero(x < 0, axis=1), np.count_nonzero(x == 0, axis=1))
    cols = _columns(numel, n, mean, np.square(d).sum(axis=1), np.abs(z).sum(axis=1), counts, nan, inf, lo, hi)
    keys = (*cols, *PCT_COLUMNS, "finite_count")
    values = zip(*cols.values(), *pct.T.tolist(), n.tolist())
    return [{**dict(zip(keys, v)), "hist_edges": e, "hist_counts": h} for v, e, h in zip(values, edges, hist)]


def _columns(numel, n, mean, m2, abs_sum, counts, nan, inf, lo, hi) -> dict[str, list]:
    """The columns of ``stats.moments_row``, for every row at once, as lists of Python numbers."""
    neg, zero = counts
    pos = n - neg - zero
    has, none = n > 0, np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        fracs = {f"{k}_frac": np.where(numel > 0, c / numel, none) for k, c in (("neg", neg), ("zero", zero),
                                                                                 ("pos", pos))}
        cols = {
            "numel": numel, "neg_count": neg, "zero_count": zero, "pos_count": pos, **fracs,
            "mean": np.where(has, mean, none),
            "std": np.where(has, np.sqrt(np.maximum(m2, 0.0) / n), none),
            "min": np.where(has, lo, none),
            "max": np.where(has, hi, none),
            "abs_mean": np.where(has, abs_sum / n, none),
            "l2_norm": np.where(has, np.sqrt(np.maximum(m2 + n * mean * mean, 0.0)), np.where(numel == 0, 0.0, none)),
            "nan_count": nan,
            "inf_count": inf,
        }
    return {k: v.tolist() for k, v in cols.items()}


def _percentiles(s: np.ndarray, n: np.ndarray) -> np.ndarray:
    """numpy.percentile of each row's first n values (sorted), to the bit; NaN where n is 0."""
    rows = np.arange(s.shape[0])
    out = np.full((s.shape[0], len(PERCENTILES)), np.nan)
    has = n > 0
    for j, q in enumerate(PERCENTILES):
        h = (n - 1) * (q / 100.0)
        i = np.floor(h).astype(np.int64)
        a = s[rows, np.clip(i, 0, None)]
        b = s[rows, np.clip(np.minimum(i + 1, n - 1), 0, None)]
        t = h - i
        diff = b - a
        v = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
        out[has, j] = v[has]
    return out


def _edges(lo: np.ndarray, hi: np.ndarray, pct: np.ndarray) -> np.ndarray:
    """Each row's histogram edges, as ``exact.hist_edges``."""
    a = np.fmax(np.abs(lo), np.abs(hi))
    reach = HIST_SPAN * np.fmax(np.abs(pct[:, 0]), np.abs(pct[:, -1]))
    a = np.where((reach > 0) & (reach < a), reach, a)
    a = np.where(a > 0, a, 1.0)
    return np.linspace(-a, a, HIST_BINS + 1, axis=1)


def _hists(x: np.ndarray, finite: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each row's histogram of its finite values, as ``exact.hist_counts``: computed bins, corrected
    against the edges themselves; values beyond the edges in the outer bins."""
    rows, bins = x.shape[0], HIST_BINS
    a = edges[:, -1:]
    v = np.clip(x, -a, a)
    with np.errstate(invalid="ignore"):
        idx = np.nan_to_num((v + a) * (bins / (2 * a)), nan=0.0).astype(np.intp)
    np.clip(idx, 0, bins - 1, out=idx)
    base = (np.arange(rows, dtype=np.intp) * (bins + 1))[:, None]
    flat_edges = edges.reshape(-1)
    idx -= v < flat_edges[idx + base]
    idx += (v >= flat_edges[idx + base + 1]) & (idx < bins - 1)
    idx[~finite] = bins  # one more bin per row for the NaN padding, dropped below
    counts = np.bincount((idx + base).reshape(-1), minlength=rows * (bins + 1))
    return counts.reshape(rows, bins + 1)[:, :bins]


def small_max(chunk_elems: int) -> int:
    """Records of at most this many values are reduced in batches."""
    return min(SMALL_MAX, chunk_elems)


def batch_full(count: int, values: int) -> bool:
    return count >= BATCH_TENSORS or values >= BATCH_ELEMS


def read_small(record, chunk_elems: int, reducers) -> np.ndarray:
    """A small record's values as float64 (``reducers`` fed its chunks on the way)."""
    parts = []
    for chunk in record.chunks(chunk_elems):
        parts.append(chunk.reshape(-1).astype(np.float64))
        for r in reducers:
            r.update(chunk)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0)


def reduce_batch(items, chunk_elems: int) -> list[dict]:
    """Rows of (record, reducers) pairs of small records, in order, their reducers' columns added."""
    rows = small_rows([read_small(rec, chunk_elems, reducers) for rec, reducers in items])
    for row, (_, reducers) in zip(rows, items):
        for r in reducers:
            row.update(r.result())
    return rows


__all__ = ["SMALL_MAX", "small_rows", "reduce_batch", "small_max", "batch_full"]
