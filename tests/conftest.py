"""Shared test helpers: a plain numpy reference for every statistic, and isolation from the network."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inspector.analysis.stats import CHUNK_ELEMS, percentile_rel_error

PCTS = (1, 5, 25, 50, 75, 95, 99)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """No test may download: torchvision weights resolve in an empty private TORCH_HOME unless a test fills it."""
    monkeypatch.setenv("WINSPECT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))


def oracle(values: np.ndarray) -> dict:
    """The statistics of the tensor table, computed the plain way on a float64 copy of the whole tensor."""
    x = np.asarray(values).astype(np.float64).reshape(-1)
    numel = x.size
    nan = int(np.isnan(x).sum())
    inf = int(np.isinf(x).sum())
    f = x[np.isfinite(x)]
    out = {
        "numel": numel,
        "neg_count": int((f < 0).sum()),
        "zero_count": int((f == 0).sum()),
        "pos_count": int((f > 0).sum()),
        "nan_count": nan,
        "inf_count": inf,
    }
    for s in ("neg", "zero", "pos"):
        out[f"{s}_frac"] = out[f"{s}_count"] / numel if numel else math.nan
    if f.size:
        out.update(mean=f.mean(), std=f.std(), min=f.min(), max=f.max(), abs_mean=np.abs(f).mean(),
                   l2_norm=np.linalg.norm(f))
        for q, v in zip(PCTS, np.percentile(f, PCTS)):
            out[f"p{q:02d}"] = v
    else:
        out.update(mean=math.nan, std=math.nan, min=math.nan, max=math.nan, abs_mean=math.nan,
                   l2_norm=0.0 if numel == 0 else math.nan)
        for q in PCTS:
            out[f"p{q:02d}"] = math.nan
    return out


def assert_stats_match(row, values, pct_rel: float | None = None, rtol: float = 1e-9,
                       chunk: int = CHUNK_ELEMS) -> None:
    """Every statistic of a tensor-table row equals the numpy reference.

    Percentiles are compared within pct_rel, by default the bound the analyzer states for the
    tensor's dtype and size when read in chunks of ``chunk`` elements.
    """
    if pct_rel is None:
        arr = np.asarray(values)
        pct_rel = percentile_rel_error(arr.dtype, arr.size, chunk)
    ref = oracle(values)
    finite = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = finite[np.isfinite(finite)]
    atol = 1e-12 * (float(np.abs(finite).max()) if finite.size else 0.0)
    for key in ("numel", "neg_count", "zero_count", "pos_count", "nan_count", "inf_count"):
        assert int(row[key]) == ref[key], key
    for key in ("neg_frac", "zero_frac", "pos_frac", "mean", "std", "min", "max", "abs_mean", "l2_norm"):
        _close(row[key], ref[key], rtol, atol, key)
    sorted_f = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    sorted_f = sorted_f[np.isfinite(sorted_f)]
    for q in PCTS:
        key = f"p{q:02d}"
        if pct_rel == 0.0:
            _close(row[key], ref[key], rtol, atol, key)
        else:
            h = (sorted_f.size - 1) * q / 100
            scale = max(abs(sorted_f[math.floor(h)]), abs(sorted_f[math.ceil(h)]))
            assert abs(row[key] - ref[key]) <= pct_rel * scale + 1e-300, (key, row[key], ref[key])


def _close(got, want, rtol, atol, key) -> None:
    got, want = float(got), float(want)
    if math.isnan(want):
        assert math.isnan(got), (key, got, want)
        return
    assert abs(got - want) <= rtol * abs(want) + atol, (key, got, want)
