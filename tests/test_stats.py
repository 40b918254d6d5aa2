"""The one-pass analyzer against the numpy reference, on awkward data and across chunk boundaries."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from inspector.analysis.stats import HIST_BINS, analyze, new_accumulator
from inspector.records import TensorRecord, array_reader

from .helpers import assert_stats_match

FLOATS = [np.float64, np.float32, np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2]
INTS = [np.int8, np.uint8, np.int16, np.int32, np.int64, np.bool_]


def record(arr, name="layer.weight", kind="weight") -> TensorRecord:
    arr = np.asarray(arr)
    return TensorRecord(name, kind, arr.dtype, arr.shape, array_reader(arr))


def awkward(dtype, n=5000, seed=0) -> np.ndarray:
    """Normal values with exact zeros, -0.0, NaN and ±Inf mixed in (where the dtype has them)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * 2.5
    x[::17] = 0.0
    x[3::17] = -0.0
    x[5::101] = np.nan
    x[7::211] = np.inf
    x[9::307] = -np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        return x.astype(dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("chunk", [1 << 20, 1000, 997, 7])
def test_float_dtypes_match_reference(dtype, chunk):
    x = awkward(dtype)
    row = analyze(record(x), chunk)
    assert_stats_match(row, x)


@pytest.mark.parametrize("dtype", INTS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("chunk", [1 << 20, 333])
def test_integer_and_bool_dtypes_match_reference(dtype, chunk):
    rng = np.random.default_rng(1)
    lo = 0 if dtype in (np.uint8, np.bool_) else -100
    x = rng.integers(lo, 100, size=4000).astype(dtype)
    row = analyze(record(x), chunk)
    assert_stats_match(row, x)


def test_negative_zero_counts_as_zero():
    x = np.array([-0.0, 0.0, -0.0, -1.0, 2.0], dtype=np.float32)
    row = analyze(record(x))
    assert (row["neg_count"], row["zero_count"], row["pos_count"]) == (1, 3, 1)


def test_nan_and_inf_are_counted_then_excluded():
    x = np.array([np.nan, np.inf, -np.inf, 1.0, -3.0], dtype=np.float32)
    row = analyze(record(x), chunk_elems=2)
    assert (row["nan_count"], row["inf_count"]) == (1, 2)
    assert (row["neg_count"], row["pos_count"], row["zero_count"]) == (1, 1, 0)
    assert row["neg_frac"] == pytest.approx(1 / 5)
    assert row["mean"] == -1.0 and row["min"] == -3.0 and row["max"] == 1.0
    assert row["l2_norm"] == pytest.approx(math.sqrt(10))


def test_all_nan_tensor_has_no_moments():
    x = np.full(10, np.nan, dtype=np.float32)
    row = analyze(record(x), chunk_elems=3)
    assert row["nan_count"] == 10 and row["finite_count"] == 0
    assert math.isnan(row["mean"]) and math.isnan(row["p50"]) and math.isnan(row["l2_norm"])


def test_empty_tensor():
    x = np.zeros((0, 4), dtype=np.float32)
    row = analyze(record(x))
    assert row["numel"] == 0 and row["neg_count"] == 0
    assert math.isnan(row["neg_frac"]) and math.isnan(row["mean"]) and row["l2_norm"] == 0.0


def test_zero_dim_tensor():
    x = np.array(-2.5, dtype=np.float32)
    row = analyze(record(x))
    assert row["numel"] == 1 and row["neg_count"] == 1
    assert row["mean"] == -2.5 and row["std"] == 0.0 and row["p50"] == -2.5


def test_std_is_accurate_when_mean_is_large():
    rng = np.random.default_rng(3)
    x = 1e6 + rng.standard_normal(20000)
    row = analyze(record(x), chunk_elems=999)
    assert row["std"] == pytest.approx(x.std(), rel=1e-9)


@pytest.mark.parametrize("n", [1, 999, 1000, 1001, 2000, 2001])
def test_chunk_boundaries(n):
    x = awkward(np.float32, n=n, seed=n)
    row = analyze(record(x), chunk_elems=1000)
    assert_stats_match(row, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("chunk", [1 << 20, 4096])
def test_percentiles_equal_numpy_beyond_a_chunk(dtype, chunk):
    """Tensors larger than a chunk get exact percentiles too: the buckets holding the wanted ranks
    are read a second time."""
    x = (np.random.default_rng(4).standard_normal(50_001) * 3).astype(dtype)
    row = analyze(record(x), chunk)
    assert [row[f"p{q:02d}"] for q in (1, 5, 25, 50, 75, 95, 99)] == np.percentile(
        x.astype(np.float64), [1, 5, 25, 50, 75, 95, 99]).tolist()


def test_bucketed_percentiles_are_exact_for_16_bit_floats():
    x = (np.random.default_rng(5).standard_normal(30000)).astype(ml_dtypes.bfloat16)
    row = analyze(record(x), chunk_elems=4096)
    ref = np.percentile(x.astype(np.float64), [1, 50, 99])
    assert [row["p01"], row["p50"], row["p99"]] == pytest.approx(list(ref), rel=1e-12)


def test_histogram_is_symmetric_and_counts_every_finite_value():
    x = awkward(np.float32, 3000)
    for chunk in (1 << 20, 500):
        row = analyze(record(x), chunk)
        edges, counts = row["hist_edges"], row["hist_counts"]
        assert len(edges) == HIST_BINS + 1 and edges[0] == -edges[-1]
        assert HIST_BINS // 2 in np.nonzero(edges == 0)[0]
        assert counts.sum() == row["finite_count"]


def test_histogram_matches_numpy_for_exact_path():
    x = np.random.default_rng(2).standard_normal(1000)
    row = analyze(record(x))
    ref = np.histogram(x, bins=row["hist_edges"])[0]
    assert np.array_equal(row["hist_counts"], ref)


def test_accumulator_ignores_empty_chunks():
    acc = new_accumulator(np.dtype(np.float32), 3, chunk_elems=2)
    acc.update(np.array([], dtype=np.float32))
    acc.update(np.array([1.0, -1.0], dtype=np.float32))
    acc.update(np.array([0.0], dtype=np.float32))
    acc.second_look([lambda: iter((np.array([1.0, -1.0, 0.0], dtype=np.float32),))])
    row = acc.result()
    assert (row["neg_count"], row["zero_count"], row["pos_count"]) == (1, 1, 1)
    assert row["p50"] == 0.0


def with_outliers(dtype, n: int, seed: int = 0) -> np.ndarray:
    """Normal weights (std 0.02) and three values hundreds of standard deviations out."""
    x = np.random.default_rng(seed).normal(0, 0.02, n)
    x[[5, n // 2, n - 3]] = [7.5, -3.0, 12.0]
    return x.astype(dtype)


@pytest.mark.parametrize("dtype,chunk", [
    (np.float32, 1 << 20),  # one chunk: exact percentiles and histogram
    (np.float64, 1 << 20),
    (ml_dtypes.bfloat16, 1 << 20),  # value table
    (np.float16, 4096),
    (np.float32, 4096),  # buckets: exact percentiles, histogram within a bucket
    (np.float64, 4096),
])
def test_outliers_do_not_set_the_histogram_range(dtype, chunk):
    x = with_outliers(dtype, 50_000)
    row = analyze(record(x), chunk)
    edges, counts = row["hist_edges"], row["hist_counts"]
    reach = 4.0 * max(abs(row["p01"]), abs(row["p99"]))
    assert edges[-1] == pytest.approx(reach, rel=1e-12) and edges[0] == -edges[-1]
    assert edges[-1] < 0.25 < row["max"]  # the bulk (|x| < 0.1) gets most of the 64 bins
    assert counts.sum() == x.size
    x64 = x.astype(np.float64)
    if chunk >= x.size or x.dtype.itemsize <= 2:  # exact paths: numpy on the clipped values
        assert np.array_equal(counts, np.histogram(np.clip(x64, edges[0], edges[-1]), edges)[0])
    else:  # buckets: each value within its bucket's width of the right bin
        want = np.histogram(np.clip(x64, edges[0], edges[-1]), edges)[0]
        assert np.abs(counts - want).sum() <= 0.01 * x.size
    assert counts[-1] >= 2 and counts[0] >= 1  # the outliers sit in the outer bins


def test_without_outliers_the_histogram_spans_the_extremes():
    for dtype, chunk in ((np.float32, 1 << 20), (np.float32, 4096), (ml_dtypes.bfloat16, 1 << 20)):
        x = np.random.default_rng(1).normal(0, 0.02, 50_000).astype(dtype)
        row = analyze(record(x), chunk)
        assert row["hist_edges"][-1] == max(abs(row["min"]), abs(row["max"]))


def test_hist_counts_puts_values_beyond_the_edges_in_the_outer_bins():
    from inspector.analysis.exact import hist_counts

    edges = np.linspace(-1, 1, 9)
    vals = np.array([-5.0, -1.0, -0.3, 0.0, 0.99, 1.0, 2.0, np.float64(1e300)])
    assert np.array_equal(hist_counts(vals, edges), np.histogram(np.clip(vals, -1, 1), edges)[0])
    assert np.array_equal(hist_counts(vals, edges, np.full(vals.size, 2.0)),
                          2 * np.histogram(np.clip(vals, -1, 1), edges)[0])


@pytest.mark.parametrize("n", [0, 1, 100, 2048, 2049, 30000])
def test_hist_counts_equal_numpy_histogram_few_values_or_many(n):
    """Few values are binned by searching the edges, many by computing their bins: the same counts."""
    from inspector.analysis.exact import hist_counts

    rng = np.random.default_rng(n)
    edges = np.linspace(-0.3, 0.3, 65)
    vals = rng.normal(0, 0.2, n)
    vals[: min(n, 65)] = edges[: min(n, 65)]  # values on the edges themselves
    weights = rng.integers(0, 5, n)
    clipped = np.clip(vals, edges[0], edges[-1])
    assert np.array_equal(hist_counts(vals, edges), np.histogram(clipped, edges)[0])
    assert np.array_equal(hist_counts(vals, edges, weights), np.histogram(clipped, edges, weights=weights)[0])


def test_hist_edges_are_numpy_linspace_to_the_bit():
    from inspector.analysis.exact import hist_edges

    rng = np.random.default_rng(0)
    reach = list(rng.random(3000) * 10.0 ** rng.integers(-320, 300, 3000)) + [5e-324, 1e-310, 0.1, 1.0, 3.0, 1e300]
    for a in reach:
        for bins in (64, 7):
            assert hist_edges(-a, a / 2, [0.0, 0.0], bins).tobytes() == np.linspace(-a, a, bins + 1).tobytes()
