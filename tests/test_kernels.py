"""The compiled kernels equal numpy, and the analyzer gives the same table with or without them."""

from __future__ import annotations

import math
import os
import threading

import ml_dtypes
import numpy as np
import pytest

from inspector.analysis import kernels
from inspector.analysis.stats import BLOCK_ELEMS, StatsAccumulator, _magnitude_major, analyze
from inspector.analysis.units import UnitSigns
from tests.test_perf_stats import FLOATS, INTS, check, record, values

# awkward values cast to 16-bit floats overflow to ±Inf, and NaN codes are cast, on purpose
pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")]

native = kernels.native
needs_native = pytest.mark.skipif(native is None and os.environ.get("WINSPECT_NO_KERNELS") not in (None, "", "0"),
                                  reason="WINSPECT_NO_KERNELS is set")


@pytest.fixture(params=["compiled", "numpy"])
def mode(request, monkeypatch):
    """Run a test with the compiled kernels, then with the numpy code that stands in for them."""
    if request.param == "compiled":
        if native is None:
            pytest.skip("WINSPECT_NO_KERNELS is set")
        monkeypatch.setattr(kernels, "native", native)
    else:
        monkeypatch.setattr(kernels, "native", None)
    return request.param


def test_the_kernels_are_built():
    """`pip install` builds them here; a run without them is slower, not different."""
    if os.environ.get("WINSPECT_NO_KERNELS") not in (None, "", "0"):
        assert native is None
    else:
        assert native is not None, "inspector.analysis._kernels was not built (is a C compiler installed?)"


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


@needs_native
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 1000, 70_001])
def test_count_codes_adds_a_bincount(dtype, n):
    rng = np.random.default_rng(n)
    size = 1 << (8 * np.dtype(dtype).itemsize)
    codes = rng.integers(0, size, n).astype(dtype)
    codes[: n // 3] = 7  # a long run of one code
    counts = np.arange(size, dtype=np.int64)  # added to, not overwritten
    native.count_codes(codes, counts)
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


@needs_native
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,block", [(0, 8), (1, 8), (7, 8), (8, 8), (9, 8), (17, 16), (1000, 64), (5000, 1 << 17),
                                     (40_000, 1000)])
@pytest.mark.parametrize("kind", ["normal", "awkward"])
def test_moments_buckets_matches_numpy(dtype, n, block, kind):
    x = values(dtype, n, seed=n) if kind == "normal" else awkward(dtype, n, seed=n)
    counts = np.zeros(1 << 20, dtype=np.int64)
    got = native.moments_buckets(x, counts, block)
    fn, fmean, fm2, fabs, lo, hi, nan, inf, zero, neg_zero = got
    f = x[np.isfinite(x)]
    assert (nan, inf) == (int(np.isnan(x).sum()), int(np.isinf(x).sum()))
    assert zero == int((f == 0).sum()) and neg_zero == int(((f == 0) & np.signbit(f)).sum())
    assert np.array_equal(counts, np.bincount(_magnitude_major(f).astype(np.int64), minlength=1 << 20))
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


@needs_native
def test_moments_of_float64_whose_sum_overflows():
    x = np.array([1e308, 1e308, -1.0, 2.0], dtype=np.float64)
    counts = np.zeros(1 << 20, dtype=np.int64)
    n, mean, m2, abs_sum, lo, hi, nan, inf, zero, neg_zero = native.moments_buckets(x, counts, 8)
    assert (n, lo, hi, nan, inf) == (4, -1.0, 1e308, 0, 0)
    with np.errstate(over="ignore"):
        assert mean == x.mean() and abs_sum == np.abs(x).sum()  # inf, as numpy says
    assert counts.sum() == 4


def signs_oracle(x: np.ndarray, inner: int):
    grid = x.astype(np.float64).reshape(-1, inner)
    return (grid < 0).sum(axis=1), (grid > 0).sum(axis=1)


@needs_native
@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16, np.float32, np.float64],
                         ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("inner", [1, 3, 16, 33])
def test_row_signs_matches_numpy(dtype, inner):
    x = awkward(dtype, inner * 50, seed=inner)
    x[:inner] = -0.0  # a row of negative zeros: neither sign
    neg, pos = np.empty((2, 50), dtype=np.int64)
    native.row_signs(kernels.raw(x), kernels.row_code(x.dtype), inner, neg, pos)
    want_neg, want_pos = signs_oracle(x, inner)
    assert np.array_equal(neg, want_neg) and np.array_equal(pos, want_pos)
    assert neg[0] == pos[0] == 0


@needs_native
@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_row_signs_of_every_16_bit_code(dtype):
    """Each of the 65536 codes, NaNs and infinities included, is classed as numpy classes it."""
    x = np.arange(65536, dtype=np.uint16).view(dtype)
    neg, pos = np.empty((2, 65536), dtype=np.int64)
    native.row_signs(x.view(np.uint16), kernels.row_code(x.dtype), 1, neg, pos)
    want_neg, want_pos = signs_oracle(x, 1)
    assert np.array_equal(neg, want_neg) and np.array_equal(pos, want_pos)


@needs_native
def test_kernels_refuse_bad_buffers():
    counts = np.zeros(1 << 20, dtype=np.int64)
    with pytest.raises(ValueError):
        native.count_codes(np.zeros(4, dtype=np.uint32), counts)
    with pytest.raises(ValueError):
        native.count_codes(np.zeros(4, dtype=np.uint16), np.zeros(10, dtype=np.int64))
    with pytest.raises(ValueError):
        native.moments_buckets(np.zeros(4, dtype=np.float16), counts, 8)
    with pytest.raises(ValueError):
        native.moments_buckets(np.zeros(4, dtype=np.float32), counts[:100], 8)
    with pytest.raises(ValueError):
        native.moments_buckets(np.zeros(4, dtype=np.float32), counts, 0)
    with pytest.raises(TypeError):
        native.moments_buckets(np.zeros(8, dtype=np.float32)[::2], counts, 8)
    with pytest.raises(TypeError):  # read-only counts
        native.count_codes(np.zeros(4, dtype=np.uint8), bytes(256 * 8))
    neg = np.empty(2, dtype=np.int64)
    with pytest.raises(ValueError):
        native.row_signs(np.zeros(5, dtype=np.float32), "f", 2, neg, neg)  # not whole rows
    with pytest.raises(ValueError):
        native.row_signs(np.zeros(4, dtype=np.float32), "x", 2, neg, neg)


@needs_native
def test_kernels_release_the_gil_and_stay_correct_on_threads():
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


def test_compiled_and_numpy_tables_agree(monkeypatch):
    if native is None:
        pytest.skip("WINSPECT_NO_KERNELS is set")
    for dtype in (np.float32, np.float64, np.int32, ml_dtypes.bfloat16, np.float16, np.int8):
        arr = awkward(np.float64, 50_000, seed=9).astype(dtype) if np.dtype(dtype).kind == "f" or \
            np.dtype(dtype) == np.dtype(ml_dtypes.bfloat16) else values(dtype, 50_000, seed=9)
        monkeypatch.setattr(kernels, "native", native)
        fast = StatsAccumulator(arr.dtype, arr.size, 4096)
        for s in range(0, arr.size, 4096):
            fast.update(arr[s : s + 4096])
        monkeypatch.setattr(kernels, "native", None)
        slow = StatsAccumulator(arr.dtype, arr.size, 4096)
        for s in range(0, arr.size, 4096):
            slow.update(arr[s : s + 4096])
        a, b = fast.result(), slow.result()
        assert np.array_equal(fast.counts, slow.counts), dtype
        for k, v in b.items():
            if k in ("hist_edges", "hist_counts"):
                assert np.allclose(a[k], v, rtol=1e-12), (dtype, k)
            elif isinstance(v, float) and not math.isnan(v):
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


def test_a_whole_tensor_row_is_the_same_either_way(monkeypatch):
    arr = awkward(np.float32, 3 * (1 << 16) + 11, seed=4)
    rows = []
    for k in (native, None):
        monkeypatch.setattr(kernels, "native", k)
        rows.append(analyze(record(arr), 1 << 16))
    for key, v in rows[1].items():
        if isinstance(v, float):
            assert rows[0][key] == pytest.approx(v, rel=1e-12, nan_ok=True), key
