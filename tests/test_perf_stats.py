"""The fast analyzer equals a plain numpy oracle, at every chunk boundary and for every dtype."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from inspector.analysis.stats import (
    PERCENTILES,
    TABLE_MIN,
    analyze,
    new_accumulator,
    part_ranges,
)
from inspector.records import TensorRecord, array_range_reader, array_reader

FLOATS = [np.float64, np.float32, np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2]
INTS = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64, np.bool_]


def record(arr: np.ndarray, name: str = "t.weight") -> TensorRecord:
    return TensorRecord(name, "other", arr.dtype, arr.shape, array_reader(arr), range_reader=array_range_reader(arr))


def oracle(arr: np.ndarray) -> dict:
    """One plain numpy call per statistic, on a float64 copy."""
    x = arr.astype(np.float64).reshape(-1)
    fin = x[np.isfinite(x)]
    out = {
        "numel": x.size,
        "nan_count": int(np.isnan(x).sum()),
        "inf_count": int(np.isinf(x).sum()),
        "neg_count": int((fin < 0).sum()),
        "zero_count": int((fin == 0).sum()),
        "pos_count": int((fin > 0).sum()),
        "finite_count": fin.size,
    }
    if fin.size:
        out.update(mean=fin.mean(), std=fin.std(), min=fin.min(), max=fin.max(), abs_mean=np.abs(fin).mean(),
                   l2_norm=np.linalg.norm(fin), pct=np.percentile(fin, PERCENTILES))
    return out


def check(arr: np.ndarray, chunk: int) -> dict:
    row = analyze(record(arr), chunk)
    ref = oracle(arr)
    for k in ("numel", "nan_count", "inf_count", "neg_count", "zero_count", "pos_count", "finite_count"):
        assert row[k] == ref[k], (k, row[k], ref[k])
    if not ref["finite_count"]:
        assert math.isnan(row["mean"]) and math.isnan(row["p50"])
        return row
    scale = max(float(np.abs(ref["min"])), float(np.abs(ref["max"])), 1e-300)
    assert row["min"] == ref["min"] and row["max"] == ref["max"]
    for k in ("mean", "abs_mean", "l2_norm"):
        assert row[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12 * scale), k
    assert row["std"] == pytest.approx(ref["std"], rel=1e-7, abs=1e-9 * scale)
    for q, want in zip(PERCENTILES, ref["pct"]):
        assert row[f"p{q:02d}"] == want, (q, row[f"p{q:02d}"], want)
    assert row["hist_counts"].sum() == ref["finite_count"]
    return row


def values(dtype, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(n) < 0.3
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), n, endpoint=True).astype(dtype)
    x = rng.standard_normal(n) * 2.0
    x[rng.random(n) < 0.05] = 0.0
    return x.astype(dtype)


# (chunk, n): smaller than, equal to, one past and several times a chunk
SIZES = [(1, n) for n in (1, 2, 7, 300)] + [
    (c, n) for c in (7, 1000) for n in (1, 6, 7, 8, 999, 1000, 1001, 3000, 7001)
]


@pytest.mark.parametrize("dtype", FLOATS + INTS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("chunk,n", SIZES)
def test_matches_oracle_at_chunk_boundaries(dtype, chunk, n):
    check(values(dtype, n, seed=n), chunk)


@pytest.mark.parametrize("dtype", FLOATS + INTS, ids=lambda d: np.dtype(d).name)
def test_matches_oracle_above_table_size(dtype):
    """8/16-bit tensors larger than TABLE_MIN take the value-table path, wider ones the bucket path."""
    n = TABLE_MIN * 3 + 5
    for chunk in (n, 10_000):
        check(values(dtype, n, seed=3), chunk)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("chunk", [7, 1000, 1 << 20])
def test_nan_inf_negative_zero(dtype, chunk):
    x = values(np.float64, 5000, seed=1)
    x[::97] = np.nan
    x[5::101] = np.inf
    x[7::103] = -np.inf
    x[9::89] = -0.0
    arr = x.astype(dtype)
    row = check(arr, chunk)
    assert row["zero_count"] == int((arr.astype(np.float64) == 0).sum())


@pytest.mark.parametrize("dtype", FLOATS + INTS, ids=lambda d: np.dtype(d).name)
def test_empty_and_scalar(dtype):
    empty = record(np.zeros((0, 3), dtype=dtype))
    row = analyze(empty, 7)
    assert row["numel"] == 0 and row["finite_count"] == 0 and math.isnan(row["mean"]) and row["l2_norm"] == 0.0
    check(np.array(values(dtype, 1)[0], dtype=dtype).reshape(()), 7)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_all_nan(dtype):
    row = check(np.full(3000, np.nan).astype(dtype), 1000)
    assert row["nan_count"] == 3000 and math.isnan(row["std"])


def test_large_mean_keeps_std_accurate():
    x = (1e6 + np.random.default_rng(0).standard_normal(50_000)).astype(np.float64)
    for chunk in (7, 1000, 1 << 20):
        row = analyze(record(x), chunk)
        assert row["std"] == pytest.approx(x.std(), rel=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, ml_dtypes.bfloat16, np.int64])
def test_parts_merge_to_the_same_bits(dtype):
    """Parts reduced separately and merged in order equal one sequential pass, bit for bit."""
    arr = values(dtype, 40_003, seed=5)
    chunk = 100
    rec = record(arr)
    seq = analyze(rec, chunk)
    accs = []
    for start, stop in part_ranges(arr.size, chunk):
        acc = new_accumulator(arr.dtype, arr.size, chunk)
        for c in rec.range_chunks(start, stop, chunk):
            acc.update(c)
        acc.end_pass()
        accs.append(acc)
    assert len(accs) > 2
    first = accs[0]
    for a in accs[1:]:
        first.merge(a)
    if first.needs_look():
        first.second_look([lambda: rec.chunks(chunk)])
    par = first.result()
    for k, v in seq.items():
        if isinstance(v, np.ndarray):
            assert np.array_equal(v, par[k]), k
        else:
            assert v == par[k] or (v != v and par[k] != par[k]), (k, v, par[k])


def test_histogram_exact_for_one_chunk_and_tables():
    for dtype in (np.float32, ml_dtypes.bfloat16, np.int8):
        arr = values(dtype, 30_000, seed=2)
        row = analyze(record(arr), 1 << 20)
        want = np.histogram(arr.astype(np.float64), bins=row["hist_edges"])[0]
        assert np.array_equal(row["hist_counts"], want)
