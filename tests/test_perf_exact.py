"""Exact percentiles at every size: bucket counts, then a second look at the few buckets that decide them."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from inspector.analysis import kernels, numpy_kernels
from inspector.analysis.small import small_rows
from inspector.analysis.stats import PERCENTILES, analyze
from inspector.records import TensorRecord, array_range_reader, array_reader


def record(x: np.ndarray) -> TensorRecord:
    return TensorRecord("t.weight", "other", x.dtype, x.shape, array_reader(x), range_reader=array_range_reader(x))


def samples(n: int, seed: int):
    rng = np.random.default_rng(seed)
    yield "normal", rng.standard_normal(n)
    yield "uniform", rng.random(n) * 1e-3 - 2e-4
    yield "crowded", 1.0 + rng.random(n) * 1e-6  # every value in one bucket
    yield "few values", rng.integers(-3, 4, n).astype(np.float64)
    x = rng.standard_normal(n) * 1e-30
    x[::5] = -0.0
    x[1::5] = 0.0
    yield "tiny and zeros", x
    y = rng.standard_normal(n)
    y[: n // 2] = np.linspace(-1, 1, n // 2)  # values on the histogram edges
    yield "edge values", y
    z = rng.standard_normal(n) * 1e-3
    z[::3] = 0.0  # zeros at the ranks that matter
    z[5:7] = [np.nan, -np.inf] if n > 7 else z[5:7]
    z[-1:] = 3e38 if n > 20 else z[-1:]
    yield "sparse with outliers", z


@pytest.fixture(params=["compiled", "numpy"])
def either(request):
    """The compiled kernels (when built), then numpy's."""
    if request.param == "compiled":
        try:
            from inspector.analysis import _kernels as module
        except ImportError:
            pytest.skip("inspector.analysis._kernels is not built")
    else:
        module = numpy_kernels
    previous = kernels.use(module)
    yield request.param
    kernels.use(previous)


def finite_f64(x: np.ndarray) -> np.ndarray:
    f = x.astype(np.float64)
    return f[np.isfinite(f)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,chunk", [(1, 1 << 20), (5, 1 << 20), (100_003, 1 << 20),  # one chunk
                                     (5, 2), (100_003, 4096), (100_003, 99_999)])  # several
def test_percentiles_equal_numpy(either, dtype, n, chunk):
    for label, x in samples(n, seed=n):
        with np.errstate(over="ignore"):
            x = x.astype(dtype)
        row = analyze(record(x), chunk)
        want = np.percentile(finite_f64(x), PERCENTILES).tolist()
        assert [row[f"p{q:02d}"] for q in PERCENTILES] == want, label
        edges = row["hist_edges"]
        ref = np.histogram(np.clip(finite_f64(x), edges[0], edges[-1]), bins=edges)[0]
        if chunk >= n or edges[-1] == max(abs(row["min"]), abs(row["max"])):
            # one chunk, or no outliers (the edges are known before the second read): exact too
            assert np.array_equal(row["hist_counts"], ref), label
        else:  # each value of a bucket straddling an edge is counted in the bin of the bucket's middle
            assert row["hist_counts"].sum() == ref.sum(), label


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2,
                                   np.int8, np.uint16, np.int32, np.uint32, np.int64, np.bool_],
                         ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n,chunk", [(300, 1 << 20), (40_000, 1 << 20), (40_000, 1000)])
def test_every_dtype_equals_numpy(either, dtype, n, chunk):
    rng = np.random.default_rng(n)
    dtype = np.dtype(dtype)
    if dtype.kind in "iub":
        x = rng.integers(0 if dtype.kind in "ub" else -200, 2 if dtype.kind == "b" else 200, n).astype(dtype)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            x = (rng.standard_normal(n) * 3).astype(dtype)
    row = analyze(record(x), chunk)
    assert [row[f"p{q:02d}"] for q in PERCENTILES] == np.percentile(finite_f64(x), PERCENTILES).tolist()


def test_int64_beyond_float64_precision():
    x = np.array([2**62 + 1, 2**62 + 3, -(2**61), 5, 2**62 + 7] * 1000, dtype=np.int64)
    for chunk in (1 << 20, 333):
        row = analyze(record(x), chunk)
        assert [row[f"p{q:02d}"] for q in PERCENTILES] == np.percentile(x, PERCENTILES).tolist()


def test_small_batch_rows_equal_one_tensor_at_a_time():
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(k) * s for k, s in ((0, 1), (1, 1), (2, 1e-30), (3, 1e6), (256, 0.02), (300, 1),
                                                      (1000, 3), (4096, 1e-3))]
    arrays[4][[3, 9]] = [np.nan, np.inf]
    arrays[5][::4] = -0.0
    rows = small_rows([a.astype(np.float64) for a in arrays])
    for row, a in zip(rows, arrays):
        alone = analyze(record(a))
        for q in PERCENTILES:
            k = f"p{q:02d}"
            assert row[k] == alone[k] or (row[k] != row[k] and alone[k] != alone[k]), k
        assert np.array_equal(row["hist_edges"], alone["hist_edges"])
        assert np.array_equal(row["hist_counts"], alone["hist_counts"])
        for k in ("numel", "neg_count", "zero_count", "pos_count", "nan_count", "inf_count", "finite_count",
                  "min", "max"):
            assert row[k] == alone[k] or (row[k] != row[k] and alone[k] != alone[k]), k
        for k in ("mean", "std", "abs_mean", "l2_norm"):
            assert row[k] == pytest.approx(alone[k], rel=1e-12, nan_ok=True), k


@pytest.mark.parametrize("seed", range(20))
def test_a_small_tensors_row_is_the_same_bits_whatever_it_is_batched_with(seed):
    """Batches of a few tensors share one grid of the longest one's length, larger ones one grid per
    power-of-two length: either way each tensor's row is the bits it has reduced alone."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice([0, 1, 2, 7, 8, 9, 31, 100, 129, 300, 1000, 2048, 3000, 16384], size=rng.integers(1, 40))
    arrays = [rng.standard_normal(n) * 10 ** rng.uniform(-8, 8) + rng.choice([0.0, 1e6]) for n in sizes]
    for a in arrays[::3]:
        a[: min(3, a.size)] = [np.nan, np.inf, -0.0][: min(3, a.size)]
    for row, a in zip(small_rows(arrays), arrays):
        alone = small_rows([a])[0]
        assert row.keys() == alone.keys()
        for k, v in row.items():
            assert np.array_equal(v, alone[k], equal_nan=True), k


def test_a_file_that_changes_between_the_two_reads_is_reported(tmp_path):
    from inspector.errors import CorruptCheckpoint

    x = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    reads = []

    def reader(max_elems):
        reads.append(1)
        y = x if len(reads) == 1 else x * 1.0001 + 0.01  # the second read sees other values
        for s in range(0, y.size, max_elems):
            yield y[s : s + max_elems]

    with pytest.raises(CorruptCheckpoint, match="changed between two reads"):
        analyze(TensorRecord("t", "other", x.dtype, x.shape, reader), 1000)


def mid_binned_hist(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The histogram of a tensor read in several chunks when its straddling buckets are not looked at:
    each nonzero value of a bucket (sign, exponent, leading mantissa bits) whose values fall in two
    bins counts in the bin of the bucket's middle; every other value in its own bin."""
    f = x[np.isfinite(x)]
    bits, low = (np.uint32, 12) if f.dtype == np.float32 else (np.uint64, 44)
    u = f.view(bits)
    mask = bits((1 << low) - 1)
    ends = [np.where((u & ~mask) << bits(1) == 0, u | bits(1), u & ~mask), u | mask]  # the bucket's nonzero ends
    lo, hi = (e.view(f.dtype).astype(np.float64) for e in ends)

    def bin_of(v):
        return np.clip(np.searchsorted(edges, np.clip(v, edges[0], edges[-1]), side="right") - 1, 0, edges.size - 2)

    v = f.astype(np.float64)
    split = (bin_of(lo) != bin_of(hi)) & (v != 0)
    which = np.where(split, bin_of((lo + hi) / 2), bin_of(v))
    return np.bincount(which, minlength=edges.size - 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_straddling_buckets_beyond_the_limit_count_at_their_middle(either, dtype, monkeypatch):
    """A tensor of several chunks, no outliers, more straddling values than STRADDLE_MAX: the
    percentiles stay exact, and those values are binned by their bucket's middle."""
    from inspector.analysis import stats

    monkeypatch.setattr(stats, "STRADDLE_MAX", 0)
    rng = np.random.default_rng(11)
    x = rng.standard_normal(60_000).astype(dtype)
    x[:3] = [0.0, -0.0, 0.0]
    row = analyze(record(x), 4096)
    assert [row[f"p{q:02d}"] for q in PERCENTILES] == np.percentile(finite_f64(x), PERCENTILES).tolist()
    edges = row["hist_edges"]
    assert edges[-1] == max(abs(row["min"]), abs(row["max"]))  # no outliers: the edges were known
    exact = np.histogram(finite_f64(x), bins=edges)[0]
    assert np.array_equal(row["hist_counts"], mid_binned_hist(x, edges))
    assert not np.array_equal(row["hist_counts"], exact)  # (so that the middles made a difference)
