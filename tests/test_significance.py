"""Sampling error of negative fractions and outlier findings that account for it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from inspector.analysis.significance import holm, two_proportion_p, wilson_interval


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 10), (5, 10), (10, 10), (128, 256), (3, 1000), (999, 1000),
                                 (123456, 250000), (7, 9)])
def test_wilson_interval_matches_scipy(k, n):
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert float(low) == pytest.approx(ref.low, abs=1e-12) and float(high) == pytest.approx(ref.high, abs=1e-12)


def test_wilson_interval_vectorised_and_empty():
    low, high = wilson_interval(np.array([0, 5, 0]), np.array([10, 10, 0]))
    assert low[0] == 0.0 and high[1] > 0.5 > low[1] and np.isnan(low[2]) and np.isnan(high[2])


def test_two_proportion_p_against_a_plain_reference():
    k, n, kr, nr = 160, 256, 128000, 256000
    pooled = (k + kr) / (n + nr)
    z = (abs(k / n - kr / nr) - 0.5 / n) / np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / nr))
    assert float(two_proportion_p(k, n, kr, nr)) == pytest.approx(2 * stats.norm.sf(z), rel=1e-9)
    assert float(two_proportion_p(128, 256, 1000, 2000)) == 1.0  # same fraction
    assert float(two_proportion_p(0, 0, 10, 20)) == 1.0
    assert float(two_proportion_p(0, 5, 0, 20)) == 1.0  # no variation at all


def test_holm_adjustment():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 -> 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert list(holm(p)) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm(np.array([])).size == 0 and list(holm([0.9, 0.8])) == [1.0, 1.0]
