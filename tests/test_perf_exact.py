"""Exact percentiles and histogram without sorting equal numpy's to the bit."""

from __future__ import annotations

import numpy as np
import pytest

from inspector.analysis.exact import SMALL, percentiles_and_hist
from inspector.analysis.stats import HIST_BINS, PERCENTILES


def edges_for(x: np.ndarray) -> np.ndarray:
    a = float(np.max(np.abs(x))) or 1.0
    return np.linspace(-a, a, HIST_BINS + 1)


def samples(n: int, seed: int):
    rng = np.random.default_rng(seed)
    yield "normal", rng.standard_normal(n)
    yield "uniform", rng.random(n) * 1e-3 - 2e-4
    yield "crowded", 1.0 + rng.random(n) * 1e-6  # every value in one coarse bucket
    yield "few values", rng.integers(-3, 4, n).astype(np.float64)
    x = rng.standard_normal(n) * 1e-30
    x[::5] = -0.0
    yield "tiny and zeros", x
    y = rng.standard_normal(n)
    y[: n // 2] = np.linspace(-1, 1, n // 2)  # values on the histogram edges
    yield "edge values", y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 5, SMALL - 1, SMALL + 1, 100_003])
def test_equals_numpy(dtype, n):
    for label, x in samples(n, seed=n):
        x = x.astype(dtype)
        edges = edges_for(x)
        pct, hist = percentiles_and_hist(x, PERCENTILES, edges)
        want = np.percentile(x.astype(np.float64), PERCENTILES)
        assert pct == want.tolist(), label
        assert np.array_equal(hist, np.histogram(x.astype(np.float64), bins=edges)[0]), label
