"""The compiled kernels and their numpy twins give the same results, and the analyzer the same table with either."""

from __future__ import annotations

import math
import os
import threading

import ml_dtypes
import numpy as np
import pytest

from inspector.analysis import kernels, numpy_kernels
from inspector.analysis.stats import BLOCK_ELEMS, analyze
from inspector.analysis.units import UnitSigns
from tests.test_perf_stats import FLOATS, INTS, check, record, values

# awkward values cast to 16-bit floats overflow to ±Inf, and NaN codes are cast, on purpose
pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")]

NO_KERNELS = os.environ.get("WINSPECT_NO_KERNELS") not in (None, "", "0")
try:
    from inspector.analysis import _kernels as compiled
except ImportError:
    compiled = None
IMPLS = {"compiled": compiled, "numpy": numpy_kernels}


def _module(name: str):
    if IMPLS[name] is None:
        pytest.skip("inspector.analysis._kernels is not built")
    return IMPLS[name]


@pytest.fixture(params=list(IMPLS))
def impl(request):
    """Each implementation of the kernel functions in turn."""
    return _module(request.param)


@pytest.fixture(params=list(IMPLS))
def mode(request):
    """Run a test with the analyzer on the compiled kernels, then on numpy's."""
    previous = kernels.use(_module(request.param))
    yield request.param
    kernels.use(previous)


def test_the_kernels_are_built():
    """`pip install` builds them here and they are used; a run without them is slower, not different."""
    if NO_KERNELS:
        assert kernels.impl is numpy_kernels
    else:
        assert compiled is not None, "inspector.analysis._kernels was not built (is a C compiler installed?)"
        assert kernels.impl is compiled and kernels.COMPILED


def awkward(dtype, n: int, seed: int = 0) -> np.ndarray:
    """Normal values with zeros, -0.0, NaN, ±Inf, subnormals and a few huge values."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * 0.02
    pick = rng.random(n)
    x[pick < 0.03] = 0.0
    x[(pick >= 0.03) & (pick < 0.05)] = -0.0
    x[(pick >= 0.05) & (pick < 0.06)] = np.nan
    x[(pick >= 0.06) & (pick < 0.065)] = np.inf
    x[(pick >= 0.065) & (pick < 0.07)] = -np.inf
    x[(pick >= 0.07) & (pick < 0.08)] = 1e-40 * rng.standard_normal(int(((pick >= 0.07) & (pick < 0.08)).sum()))
    x[(pick >= 0.08) & (pick < 0.082)] = 1e30
    return x.astype(dtype)


# --- the kernels against numpy -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 1000, 70_001])
def test_count_codes_adds_a_bincount(impl, dtype, n):
    rng = np.random.default_rng(n)
    size = 1 << (8 * np.dtype(dtype).itemsize)
    codes = rng.integers(0, size, n).astype(dtype)
    codes[: n // 3] = 7  # a long run of one code
    counts = np.arange(size, dtype=np.int64)  # added to, not overwritten
    impl.count_codes(codes, counts)
    assert np.array_equal(counts, np.arange(size) + np.bincount(codes, minlength=size))


def moments_oracle(x: np.ndarray, block: int):
    """The kernel's results the plain way: per block, Chan-merged (as _Moments.add)."""
    n, mean, m2, abs_sum = 0, 0.0, 0.0, 0.0
    for s in range(0, x.size, block):
        b = x[s : s + block].astype(np.float64)
        b = b[np.isfinite(b)]
        if b.size == 0:
            continue
        bm = b.mean()
        bm2 = float(((b - bm) ** 2).sum())
        if n == 0:
            n, mean, m2, abs_sum = b.size, bm, bm2, float(np.abs(b).sum())
            continue
        total = n + b.size
        delta = bm - mean
        mean += delta * b.size / total
        m2 += bm2 + delta * delta * n * b.size / total
        abs_sum += float(np.abs(b).sum())
        n = total
    return n, mean, m2, abs_sum


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,block", [(0, 8), (1, 8), (7, 8), (8, 8), (9, 8), (17, 16), (1000, 64), (5000, 1 << 17),
                                     (40_000, 1000)])
@pytest.mark.parametrize("kind", ["normal", "awkward"])
def test_moments_buckets_matches_numpy(impl, dtype, n, block, kind):
    x = values(dtype, n, seed=n) if kind == "normal" else awkward(dtype, n, seed=n)
    counts = np.zeros(1 << 20, dtype=np.int64)
    got = impl.moments_buckets(x, counts, block)
    fn, fmean, fm2, fabs, lo, hi, nan, inf, zero, neg_zero, klo, khi = got
    f = x[np.isfinite(x)]
    assert (nan, inf) == (int(np.isnan(x).sum()), int(np.isinf(x).sum()))
    assert zero == int((f == 0).sum()) and neg_zero == int(((f == 0) & np.signbit(f)).sum())
    keys = numpy_kernels.bucket_keys(f)
    assert np.array_equal(counts, np.bincount(keys, minlength=1 << 20))
    assert (klo, khi) == ((int(keys.min()), int(keys.max())) if f.size else (1 << 20, -1))
    n_ref, mean, m2, abs_sum = moments_oracle(x, block)
    assert fn == n_ref == f.size
    if f.size == 0:
        assert (lo, hi) == (math.inf, -math.inf)
        return
    assert (lo, hi) == (float(f.min()), float(f.max()))
    scale = float(np.abs(f.astype(np.float64)).max())
    assert fmean == pytest.approx(mean, rel=1e-12, abs=1e-15 * scale)
    assert fm2 == pytest.approx(m2, rel=1e-10, abs=1e-15 * scale * scale)
    assert fabs == pytest.approx(abs_sum, rel=1e-12)


def test_moments_of_float64_whose_sum_overflows(impl):
    x = np.array([1e308, 1e308, -1.0, 2.0], dtype=np.float64)
    counts = np.zeros(1 << 20, dtype=np.int64)
    with np.errstate(over="ignore"):
        n, mean, m2, abs_sum, lo, hi, nan, inf, zero, neg_zero, *_ = impl.moments_buckets(x, counts, 8)
    assert (n, lo, hi, nan, inf) == (4, -1.0, 1e308, 0, 0)
    with np.errstate(over="ignore"):
        assert mean == x.mean() and abs_sum == np.abs(x).sum()  # inf, as numpy says
    assert counts.sum() == 4


def signs_oracle(x: np.ndarray, inner: int):
    grid = x.astype(np.float64).reshape(-1, inner)
    return (grid < 0).sum(axis=1), (grid > 0).sum(axis=1)


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16, np.float32, np.float64],
                         ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("inner", [1, 3, 16, 33])
def test_row_signs_matches_numpy(impl, dtype, inner):
    x = awkward(dtype, inner * 50, seed=inner)
    x[:inner] = -0.0  # a row of negative zeros: neither sign
    neg, pos = np.empty((2, 50), dtype=np.int64)
    impl.row_signs(kernels.raw(x), kernels.row_code(x.dtype), inner, neg, pos)
    want_neg, want_pos = signs_oracle(x, inner)
    assert np.array_equal(neg, want_neg) and np.array_equal(pos, want_pos)
    assert neg[0] == pos[0] == 0


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_row_signs_of_every_16_bit_code(impl, dtype):
    """Each of the 65536 codes, NaNs and infinities included, is classed as numpy classes it."""
    x = np.arange(65536, dtype=np.uint16).view(dtype)
    neg, pos = np.empty((2, 65536), dtype=np.int64)
    impl.row_signs(x.view(np.uint16), kernels.row_code(x.dtype), 1, neg, pos)
    want_neg, want_pos = signs_oracle(x, 1)
    assert np.array_equal(neg, want_neg) and np.array_equal(pos, want_pos)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 100, 5000])
def test_select_buckets_picks_the_nonzero_values_of_flagged_buckets(impl, dtype, n):
    x = awkward(dtype, n, seed=n)
    keys = numpy_kernels.bucket_keys(x)
    finite = np.isfinite(x)
    klo = int(keys[finite].min()) if finite.any() else 0
    flags = np.zeros(int(keys[finite].max()) - klo + 1 if finite.any() else 1, dtype=np.uint8)
    flags[::3] = 1
    flags[:2] = 1  # the buckets of zero and the tiniest subnormals: their zeros are never picked
    bitmap = numpy_kernels.bucket_bitmap(np.flatnonzero(flags) + klo)
    hit = finite & (x != 0) & (keys - klo < flags.size) & (keys >= klo)
    hit[hit] = flags[keys[hit] - klo] == 1
    out = np.full(n + 1, 7, dtype=dtype)
    assert impl.select_buckets(x, bitmap, out) == int(hit.sum())
    assert np.array_equal(out[: hit.sum()], x[hit]) and (out[hit.sum():] == 7).all()
    short = np.empty(max(int(hit.sum()) - 1, 0), dtype=dtype)
    assert impl.select_buckets(x, bitmap, short) == int(hit.sum())  # says how many there were


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_select_buckets_of_one_bucket_each_side_of_zero(impl, dtype):
    """A bucket's bit is its sign over its magnitude bits: a flagged negative bucket does not pick the
    positive values of the same magnitude, nor the next buckets, nor NaN or Inf."""
    x = np.array([0.5, -0.5, 0.5000001, -0.75, np.nan, -np.inf, 0.25, -0.5], dtype=dtype)
    keys = numpy_kernels.bucket_keys(x[np.isfinite(x)])
    out = np.zeros(8, dtype=dtype)
    got = impl.select_buckets(x, numpy_kernels.bucket_bitmap([keys[1]]), out)  # the bucket of -0.5
    assert got == 2 and (out[:2] == -0.5).all()
    got = impl.select_buckets(x, numpy_kernels.bucket_bitmap([keys[0], keys[3]]), out)  # 0.5, -0.75
    assert got == 3 and np.array_equal(out[:3], np.array([0.5, 0.5000001, -0.75], dtype=dtype))
    assert impl.select_buckets(x, np.zeros(1 << 14, dtype=np.uint64), out) == 0


def bucket_table(x: np.ndarray) -> tuple:
    """(counts of keys klo.., klo, zero, neg_zero) of a tensor's values, as moments_buckets counts them."""
    counts = np.zeros(numpy_kernels.BUCKETS, dtype=np.int64)
    r = numpy_kernels.moments_buckets(x, counts, 1000)
    klo, khi = (r[10], r[11]) if r[11] >= r[10] else (0, -1)
    return counts[klo : khi + 1].copy(), klo, r[8], r[9]


def bucket_bounds(klo: int, n_odd: int, p: int, dtype) -> tuple[float, float]:
    """The least and greatest value of the bucket at value-order position p (not the zeros')."""
    key = (klo | 1) + 2 * (n_odd - 1 - p) if p < n_odd else klo + (klo & 1) + 2 * (p - n_odd - 1)
    shift, uint = (12, np.uint32) if np.dtype(dtype).itemsize == 4 else (44, np.uint64)
    low = (key >> 1) << shift
    a, b = (np.array([low, low | ((1 << shift) - 1)], dtype=uint).view(dtype).astype(np.float64))
    return (-b, -a) if key & 1 else (a, b)


def some_edges(x: np.ndarray, rng) -> np.ndarray:
    """Edges as the histogram has them, around zero, and awkward ones: ±0, ±Inf, beyond float32, subnormal."""
    finite = x[np.isfinite(x)]
    a = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
    odd = [0.0, -0.0, np.inf, -np.inf, 1e39, -1e39, 3.4028235e38, -3.4028236e38, 5e-324, -1e-45, 1e-46]
    return np.concatenate((np.linspace(-a, a, 65), rng.normal(0, a, 20), odd))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 100, 5000, 70000])
def test_locate_finds_the_buckets_of_ranks_and_edges(impl, dtype, n):
    """Against the sorted values: each rank's value lies in the bucket found for it (the zeros' for a
    zero), with the counts before and of that bucket around the rank; the negative count; and the
    compiled walk and numpy's cumulative sums agree on everything, edges included."""
    rng = np.random.default_rng(n)
    x = awkward(dtype, n, seed=n)
    x[: n // 3] = np.abs(x[: n // 3]) * 1e-30 if n > 100 else x[: n // 3]  # (keys far apart)
    counts, klo, zero, neg_zero = bucket_table(x)
    finite = np.sort(x[np.isfinite(x)])
    ranks = np.unique(rng.integers(0, max(finite.size, 1), 30)) if finite.size else np.zeros(0, dtype=np.int64)
    edges = some_edges(x, rng)
    for width in (4, 8) if dtype == np.float32 else (8,):
        got = impl.locate(counts, klo, zero, neg_zero, ranks, edges, width)
        assert got == numpy_kernels.locate(counts, klo, zero, neg_zero, ranks, edges, width)
    edges = np.linspace(-1.0, 1.0, 9) * (np.abs(finite).max() if finite.size else 1.0)
    where, before, count, across, across_count, hist, neg = impl.locate(counts, klo, zero, neg_zero, ranks,
                                                                       edges, x.itemsize)
    assert neg == int(np.count_nonzero(finite < 0))
    order, n_odd = numpy_kernels.value_order(counts, klo, zero, neg_zero)
    for r, p, b, c in zip(ranks.tolist(), where, before, count):
        v = finite[r]
        assert (p == n_odd) if v == 0 else (numpy_kernels.bucket_keys(finite[r : r + 1])[0] ==
                                           (klo | 1) + 2 * (n_odd - 1 - p) if p < n_odd else
                                           klo + (klo & 1) + 2 * (p - n_odd - 1))
        assert b <= r < b + c and c == order[p] and b == order[:p].sum()
    assert across == sorted(set(across)) and across_count == [order[p] for p in across] and all(across_count)
    for p in across:  # a straddling bucket holds values of two bins
        lo, hi = bucket_bounds(klo, n_odd, p, x.dtype)
        assert np.searchsorted(edges, lo, side="right") != np.searchsorted(edges, hi, side="right")
    located = {n_odd, *where, *across}
    v = finite[finite != 0]  # the values of buckets not located lie within one bin: bin them one by one
    keys = numpy_kernels.bucket_keys(v)
    at = np.where(keys & 1, n_odd - 1 - (keys - (klo | 1)) // 2, n_odd + 1 + (keys - klo - (klo & 1)) // 2)
    v = v[~np.isin(at, list(located))]
    assert hist == np.bincount(np.searchsorted(edges, v, side="right"), minlength=edges.size + 1).tolist()


def test_locate_of_counts_spanning_runs(impl):
    """Long tables of sparse counts, ranks and edges at run boundaries, either parity of klo."""
    rng = np.random.default_rng(3)
    for klo in (0, 1, 2, 3, 1000, 1001):
        counts = rng.integers(0, 3, 4099).astype(np.int64) * (rng.random(4099) < 0.3)
        zero = neg_zero = 0
        if klo <= 1:
            neg_zero = 2 if klo == 1 else 1
            zero = neg_zero + (3 if klo == 0 else 0)
            counts[:2] += [zero - neg_zero, neg_zero] if klo == 0 else [neg_zero, 0]
        total = int(counts.sum())
        ranks = np.array(sorted({0, 31, 32, 33, 63, 64, 65, total // 2, total - 1}), dtype=np.int64)
        keys = klo + np.arange(0, 4099, 7)
        width = 4
        bits = ((keys >> 1) << 12).astype(np.uint32).view(np.float32).astype(np.float64)
        edges = np.sort(np.concatenate(([0.0], np.where(keys & 1, -bits, bits), bits * 1.0000001)))
        got = impl.locate(counts, klo, zero, neg_zero, ranks, edges, width)
        assert got == numpy_kernels.locate(counts, klo, zero, neg_zero, ranks, edges, width)
        assert got[-1] == int(counts[(klo | 1) - klo :: 2].sum()) - neg_zero


def test_kernels_refuse_bad_buffers(impl):
    counts = np.zeros(1 << 20, dtype=np.int64)
    with pytest.raises(TypeError):
        impl.count_codes(np.zeros(4, dtype=np.uint32), counts)
    with pytest.raises(ValueError):
        impl.count_codes(np.zeros(4, dtype=np.uint16), np.zeros(10, dtype=np.int64))
    with pytest.raises(TypeError):  # counts of another element type of the same size
        impl.count_codes(np.zeros(4, dtype=np.uint8), np.zeros(256, dtype=np.float64))
    with pytest.raises(TypeError):
        impl.count_codes(np.zeros(4, dtype=np.uint8), np.zeros(256, dtype=np.uint64))
    with pytest.raises(TypeError):
        impl.moments_buckets(np.zeros(4, dtype=np.float16), counts, 8)
    with pytest.raises(TypeError):  # int32 is not float32, though both have 4-byte items
        impl.moments_buckets(np.zeros(4, dtype=np.int32), counts, 8)
    with pytest.raises(ValueError):
        impl.moments_buckets(np.zeros(4, dtype=np.float32), counts[:100], 8)
    with pytest.raises(ValueError):
        impl.moments_buckets(np.zeros(4, dtype=np.float32), counts, 0)
    with pytest.raises(TypeError):
        impl.moments_buckets(np.zeros(4, dtype=np.float32), counts.view(np.float64), 8)
    bitmap = np.zeros(1 << 14, dtype=np.uint64)
    with pytest.raises(TypeError):
        impl.select_buckets(np.zeros(4, dtype=np.float32), bitmap, np.zeros(4))
    with pytest.raises(TypeError):
        impl.select_buckets(np.zeros(4, dtype=np.float32), bitmap.view(np.int64), np.zeros(4, np.float32))
    with pytest.raises(ValueError):
        impl.select_buckets(np.zeros(4, dtype=np.float32), bitmap[:100], np.zeros(4, np.float32))
    table, ranks, edges = np.ones(10, dtype=np.int64), np.array([0, 3], dtype=np.int64), np.zeros(3)
    with pytest.raises(TypeError):
        impl.locate(table.view(np.float64), 5, 0, 0, ranks, edges, 4)
    with pytest.raises(TypeError):
        impl.locate(table, 5, 0, 0, ranks.astype(np.int32), edges, 4)
    with pytest.raises(TypeError):
        impl.locate(table, 5, 0, 0, ranks, edges.astype(np.float32), 4)
    for bad in (dict(width=2), dict(ranks=ranks[::-1].copy()), dict(ranks=np.array([10], dtype=np.int64)),
                dict(edges=np.array([0.0, np.nan]))):
        args = {"ranks": ranks, "edges": edges, "width": 4, **bad}
        with pytest.raises(ValueError):
            impl.locate(table, 5, 0, 0, args["ranks"], args["edges"], args["width"])
    neg = np.empty(2, dtype=np.int64)
    with pytest.raises(ValueError):
        impl.row_signs(np.zeros(5, dtype=np.float32), "f", 2, neg, neg)  # not whole rows
    with pytest.raises(ValueError):
        impl.row_signs(np.zeros(4, dtype=np.float32), "x", 2, neg, neg)
    with pytest.raises(TypeError):
        impl.row_signs(np.zeros(4, dtype=np.int32), "f", 2, neg, neg)
    with pytest.raises(TypeError):
        impl.row_signs(np.zeros(4, dtype=np.float32), "f", 2, neg.view(np.float64), neg)


def test_compiled_kernels_refuse_strided_and_read_only_buffers():
    native = _module("compiled")
    counts = np.zeros(1 << 20, dtype=np.int64)
    with pytest.raises(TypeError):
        native.moments_buckets(np.zeros(8, dtype=np.float32)[::2], counts, 8)
    with pytest.raises(TypeError):  # read-only counts
        native.count_codes(np.zeros(4, dtype=np.uint8), bytes(256 * 8))


def test_kernels_release_the_gil_and_stay_correct_on_threads():
    native = _module("compiled")
    x = awkward(np.float32, 300_000, seed=5)
    want = np.zeros(1 << 20, dtype=np.int64)
    expected = native.moments_buckets(x, want, BLOCK_ELEMS)
    results = [None] * 4

    def work(i):
        counts = np.zeros(1 << 20, dtype=np.int64)
        results[i] = (native.moments_buckets(x, counts, BLOCK_ELEMS), counts)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, counts in results:
        assert got == expected and np.array_equal(counts, want)


# --- the analyzer, with and without them --------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS + INTS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("chunk,n", [(7, 1001), (1000, 7001), (1 << 14, 100_000)])
def test_analyzer_matches_oracle_either_way(mode, dtype, chunk, n):
    check(values(dtype, n, seed=n), chunk)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("chunk", [7, 1000, 1 << 20])
def test_awkward_values_either_way(mode, dtype, chunk):
    check(awkward(np.float64, 20_000, seed=chunk).astype(dtype), chunk)


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">f2", ">i4"])
def test_big_endian_data(mode, dtype):
    arr = awkward(np.float64, 5000, seed=2).astype(np.dtype(dtype).newbyteorder("=")) if dtype != ">i4" else \
        values(np.int32, 5000, seed=2)
    check(arr.astype(dtype), 700)


def rows_with(module, arr, chunk):
    previous = kernels.use(module)
    try:
        return analyze(record(arr), chunk)
    finally:
        kernels.use(previous)


def test_compiled_and_numpy_rows_agree():
    native = _module("compiled")
    for dtype in (np.float32, np.float64, np.int32, ml_dtypes.bfloat16, np.float16, np.int8):
        arr = awkward(np.float64, 50_000, seed=9).astype(dtype) if np.dtype(dtype).kind == "f" or \
            np.dtype(dtype) == np.dtype(ml_dtypes.bfloat16) else values(dtype, 50_000, seed=9)
        for chunk in (4096, 1 << 20):
            a, b = rows_with(native, arr, chunk), rows_with(numpy_kernels, arr, chunk)
            for k, v in b.items():
                if k in ("hist_edges", "hist_counts"):
                    assert np.allclose(a[k], v, rtol=1e-12), (dtype, k)
                elif isinstance(v, float) and not math.isnan(v) and not k.startswith("p"):
                    assert a[k] == pytest.approx(v, rel=1e-12), (dtype, k)
                else:
                    assert a[k] == v or (math.isnan(a[k]) and math.isnan(v)), (dtype, k)


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16, np.float32, np.float64],
                         ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,out_axis", [((6, 40), 0), ((3, 4, 20), 1), ((40, 17), 0), ((5, 3, 16), 0)])
@pytest.mark.parametrize("chunk", [7, 16, 100, 1000])
def test_unit_signs_either_way(mode, dtype, shape, out_axis, chunk):
    w = awkward(np.float64, math.prod(shape), seed=chunk).astype(dtype).reshape(shape)
    acc = UnitSigns(shape, out_axis)
    flat = w.reshape(-1)
    for s in range(0, flat.size, chunk):
        acc.update(flat[s : s + chunk])
    per_unit = np.moveaxis(w.astype(np.float64), out_axis, 0).reshape(shape[out_axis], -1)
    assert np.array_equal(acc.neg, (per_unit < 0).sum(axis=1))
    assert np.array_equal(acc.pos, (per_unit > 0).sum(axis=1))


def test_a_whole_tensor_row_is_the_same_either_way():
    native = _module("compiled")
    arr = awkward(np.float32, 3 * (1 << 16) + 11, seed=4)
    rows = [rows_with(m, arr, 1 << 16) for m in (native, numpy_kernels)]
    for key, v in rows[1].items():
        if isinstance(v, float):
            assert rows[0][key] == pytest.approx(v, rel=1e-12, nan_ok=True), key
