"""Sampling error of a negative fraction, and how surprising a layer's fraction is among its peers.

A negative fraction is a count: ``k`` negative values out of ``n``. Even weights whose signs are
fair coins (a freshly initialised layer) give fractions that wander by about ``0.5 / sqrt(n)``:
a layer of 256 values is expected to sit a few percent away from 50 %, and among 1000 such
layers the most extreme is about three standard errors out. So:

* every tensor and layer gets a 95 % **Wilson score interval** for its fraction
  (:func:`wilson_interval`), which stays inside [0, 1] and is honest for small ``n`` and for
  fractions near 0 or 1;
* a layer is compared with the rest of its group (the pooled fraction of the other layers)
  by a **two-proportion z-test** (:func:`two_proportion_p`, normal approximation with a
  continuity correction, two-sided);
* the p-values of all layers tested in one model are corrected for testing many layers at once
  with **Holm's step-down method** (:func:`holm`), which controls the family-wise error rate at
  the nominal level without assuming independence.

Plain numpy and ``math``: no SciPy.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson_interval(k, n, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the Wilson score interval for k successes in n trials (NaN where n == 0)."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        z2 = z * z
        denom = 1.0 + z2 / n
        centre = (p + z2 / (2 * n)) / denom
        half = z / denom * np.sqrt(np.maximum(p * (1 - p) / n + z2 / (4 * n * n), 0.0))
        low = np.where(n > 0, np.where(k == 0, 0.0, np.clip(centre - half, 0.0, 1.0)), np.nan)
        high = np.where(n > 0, np.where(k == n, 1.0, np.clip(centre + half, 0.0, 1.0)), np.nan)
    return low, high


def normal_sf(z) -> np.ndarray:
    """P(Z > z) for a standard normal Z."""
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * np.vectorize(math.erfc)(z / math.sqrt(2.0)) if z.size else z


def two_proportion_p(k, n, k_rest, n_rest) -> np.ndarray:
    """Two-sided p-value that a layer's fraction k/n equals the rest's k_rest/n_rest.

    The pooled proportion gives the standard error; a continuity correction of 1/2 count on
    the layer's side keeps small layers from looking more surprising than they are. 1.0 where
    either side is empty or the pooled proportion is 0 or 1 (no variation to judge by).
    """
    k, n, kr, nr = (np.asarray(a, dtype=np.float64) for a in (k, n, k_rest, n_rest))
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = (k + kr) / (n + nr)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / nr))
        gap = np.abs(k / n - kr / nr) - 0.5 / n
        z = np.maximum(gap, 0.0) / se
        p = np.minimum(1.0, 2 * normal_sf(z))
    return np.where((n > 0) & (nr > 0) & (se > 0), p, 1.0)


def holm(p) -> np.ndarray:
    """Holm-adjusted p-values: the i-th smallest multiplied by (m - i), made monotone, capped at 1."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = scaled
    return out
