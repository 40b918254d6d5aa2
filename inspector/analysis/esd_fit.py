"""Fits to an empirical spectral density (ESD), the way WeightWatcher 0.7.7 makes them.

* :func:`powerlaw_fit`: the power-law exponent ``alpha`` of the ESD's tail by maximum likelihood,
  with ``xmin`` chosen among the eigenvalues by the smallest Kolmogorov-Smirnov distance
  (WeightWatcher's own ``WWFit``, its default): eigenvalues <= 1e-5 are dropped first; with
  20 or more left, for each candidate xmin (every eigenvalue but the largest)
  ``alpha = 1 + n / sum(log(x / xmin))`` over the n eigenvalues >= xmin and
  ``D = max |1 - (x / xmin)^(1 - alpha) - i / n|``; fewer than 20 use its small-sample rule
  (bias-corrected ``1 + (n - 1) / sum log(x / xmin)``, tails of at least 8, xmin minimising
  ``D - 0.868 / sqrt(n)``).
* :func:`mp_fit`: WeightWatcher's automatic Marchenko-Pastur fit (``analyze(mp_fit=True)``):
  eigenvalues rescaled to mean 1, the bulk's sigma chosen by a grid search plus Nelder-Mead
  polish (scipy's ``brute``) of the squared difference between the MP density and a
  linear-kernel density estimate (bandwidth 0.1) on 1,000 points; ``num_spikes`` counts the
  eigenvalues above the bulk edge plus its Tracy-Widom allowance, ``mp_softrank`` is the bulk
  edge over the largest eigenvalue. For a square matrix (Q = 1) the fit is to the singular
  values and the quarter-circle law, as there.

The arithmetic follows WeightWatcher's line by line, vectorised, so that the numbers agree.
"""

from __future__ import annotations

import math

import numpy as np

EVALS_THRESH = 1e-5  # eigenvalues at or below this are not fitted (WeightWatcher's EVALS_THRESH)
SMALL_N = 20  # below this many fitted eigenvalues, the small-sample rule
SMALL_K_MIN = 8
PRUNE_BATCH = 32  # candidates whose exact D is computed together
BLOCK_ELEMS = 1 << 20  # candidate-xmin rows x eigenvalues evaluated at a time (a few MB per temporary)


def powerlaw_fit(evals: np.ndarray) -> tuple[float, float, float]:
    """(alpha, xmin, D) of the eigenvalues' power-law tail; NaNs when fewer than 2 exceed 1e-5."""
    data = np.sort(np.asarray(evals, dtype=np.float64))
    data = data[data > EVALS_THRESH]
    if data.size < 2:
        return math.nan, math.nan, math.nan
    if data.size < SMALL_N:
        return _fit_small(data)
    alphas, ds = _candidates(data)
    i = int(np.argmin(ds))
    return float(alphas[i]), float(data[i]), float(ds[i])


def _candidates(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """alpha and KS distance D per candidate xmin data[i], i < N - 1 (WWFit.fit_power_law_standard).

    D is exact for every candidate that can be the smallest, +inf for those proven larger: a lower
    bound of each D from 17 points of its tail orders the candidates, and D is computed for them in
    that order until the next bound exceeds the smallest D found. The minimum and its first index
    are those of the full computation (WeightWatcher's quadratic loop). Degenerate spectra (equal
    eigenvalues: alpha infinite) are computed in full."""
    big = data.size
    logs = np.log(data)
    tail_sums = np.cumsum(logs[::-1])[::-1]
    n = (big - np.arange(big - 1)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # equal eigenvalues: alpha inf, D NaN
        alphas = 1 + n / (tail_sums[:-1] - n * logs[:-1])
    if not np.isfinite(alphas).all():
        return alphas, _distances(logs, alphas, n, np.arange(big - 1))
    bound = np.where(alphas > 1, _lower_bounds(logs, alphas, n), 1.0)
    order = np.argsort(bound, kind="stable")
    ds, best, pos = np.full(big - 1, np.inf), math.inf, 0
    while pos < order.size and bound[order[pos]] <= best:
        batch = order[pos : pos + PRUNE_BATCH]
        batch = np.sort(batch[bound[batch] <= best])
        ds[batch] = _distances(logs, alphas, n, batch)
        best = min(best, float(ds[batch].min()))
        pos += PRUNE_BATCH
    return alphas, ds


def _ks(logs: np.ndarray, alphas: np.ndarray, n: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """|1 - (x_j / x_i)^(1 - alpha_i) - (j - i) / n_i| for candidate rows i and tail positions j."""
    with np.errstate(over="ignore", invalid="ignore"):
        theory = 1 - np.exp((1 - alphas[i]) * (logs[j] - logs[i]))
        return np.abs(theory - (j - i) / n[i])


def _lower_bounds(logs: np.ndarray, alphas: np.ndarray, n: np.ndarray, points: int = 16) -> np.ndarray:
    """A lower bound of each candidate's D: its maximum over 17 evenly spaced points of the tail."""
    i = np.arange(alphas.size)[:, None]
    j = i + np.round(np.linspace(0, 1, points + 1)[None, :] * (n[:, None] - 1)).astype(np.int64)
    return _ks(logs, alphas, n, i, j).max(axis=1)


def _distances(logs: np.ndarray, alphas: np.ndarray, n: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The exact D of the candidates ``rows`` (ascending), in blocks of at most BLOCK_ELEMS values."""
    big = logs.size
    out = np.empty(rows.size)
    step = max(1, BLOCK_ELEMS // big)
    for a in range(0, rows.size, step):
        i = rows[a : a + step, None]
        j = np.arange(int(i[0, 0]), big)[None, :]
        dist = _ks(logs, alphas, n, i, np.maximum(j, i))  # positions before i repeat j = i: not a new max
        d = dist.max(axis=1)
        out[a : a + step] = np.where(alphas[i[:, 0]] > 1, d, 1.0)
    return out


def _fit_small(data: np.ndarray) -> tuple[float, float, float]:
    """WWFit.fit_powerlaw_smallN with its defaults (k_min 8, no prior)."""
    big = data.size
    logs = np.log(data)
    best, best_j = None, math.inf
    for i in range(big - 1):
        n = big - i
        if n < SMALL_K_MIN:
            continue
        s = np.sum(logs[i:]) - n * logs[i]
        if s <= 1e-12:
            continue
        alpha = 1.0 + (n - 1.0) / s
        if alpha <= 1.0:
            continue
        dks = float(np.max(np.abs(np.arange(n) / n - (1.0 - (data[i:] / data[i]) ** (1.0 - alpha)))))
        score = dks - 0.868 / math.sqrt(n)
        if score < best_j:
            best, best_j = (alpha, float(data[i]), dks), score
    if best is None:
        s = np.sum(logs) - big * logs[0]
        if s <= 1e-12:
            return 1.0, float(data[0]), 1.0
        alpha = 1.0 + (big - 1.0) / s
        dks = float(np.max(np.abs(np.arange(big) / big - (1.0 - (data / data[0]) ** (1.0 - alpha)))))
        return alpha, float(data[0]), dks
    return best


KDE_POINTS = 1000
KDE_BANDWIDTH = 0.1
DENSITY_FLOOR = 0.01


def linear_kde(values: np.ndarray, grid: np.ndarray, bandwidth: float = KDE_BANDWIDTH) -> np.ndarray:
    """Density of ``values`` on ``grid`` with the linear (triangular) kernel, as scikit-learn's KernelDensity."""
    out = np.zeros(grid.size)
    step = max(1, BLOCK_ELEMS // max(1, values.size))
    for a in range(0, grid.size, step):
        u = np.abs(grid[a : a + step, None] - values[None, :]) / bandwidth
        out[a : a + step] = np.clip(1 - u, 0, None).sum(axis=1)
    return out / (values.size * bandwidth)


def _mp_residual(sigma, xde: np.ndarray, yde: np.ndarray, peak_x: float, bad: int, q: float) -> float:
    """WeightWatcher's resid_mp(allresid=False) for one sigma, from a precomputed density estimate."""
    sigma = float(np.ravel(sigma)[0])
    with np.errstate(all="ignore"):
        if q == 1:
            ymp = np.nan_to_num((1 / (np.pi * sigma * sigma)) * np.sqrt(4 - xde ** 2))
            resid = ymp - yde
        else:
            y = 1 / q
            b = np.power(sigma * (1 + np.sqrt(1 / q)), 2)
            a = np.power(sigma * (1 - np.sqrt(1 / q)), 2)
            ymp = np.nan_to_num((1 / (2 * np.pi * sigma * sigma * xde * y)) * np.sqrt((b - xde) * (xde - a)))
            if (b < peak_x) or (b > xde.max()) or (a > peak_x):
                resid = np.zeros(len(yde)) + 1000
            else:
                resid = ymp - yde
        return float(np.sum(np.concatenate((resid, np.zeros(bad))) ** 2))


def mp_sigma(evals: np.ndarray, q: float) -> float:
    """The Marchenko-Pastur sigma of (rescaled) eigenvalues: WeightWatcher's fit_density_with_range."""
    from scipy import optimize

    scale = math.sqrt(np.max(evals) / (1.0 + 1.0 / math.sqrt(q)) ** 2)
    grid = (slice(0.05 * scale, 2.0 * scale, 0.01 * scale),)
    to_fit = np.sqrt(evals) if q == 1 else evals
    xde = np.linspace(0, np.max(to_fit) + 0.5, KDE_POINTS)
    yde = linear_kde(to_fit, xde)
    good = yde > DENSITY_FLOOR
    bad = int(np.count_nonzero(yde < DENSITY_FLOOR))
    xde, yde = xde[good], yde[good]
    if xde.size == 0:
        return math.nan
    peak_x = float(xde[np.where(yde == yde.max())][0])
    out = optimize.brute(_mp_residual, grid, args=(xde, yde, peak_x, bad, q), full_output=True)
    return float(np.ravel(out[0])[0])


def mp_fit(evals: np.ndarray, n: int, m: int) -> tuple[int, float]:
    """(num_spikes, mp_softrank) of the eigenvalues of matrices with N x M (N >= M) slices."""
    evals = np.asarray(evals, dtype=np.float64)
    total = float(np.sum(evals))
    if evals.size < 2 or not total > 0:
        return 0, math.nan
    q = n / m
    to_plot = evals * (evals.size / total)
    sigma = mp_sigma(to_plot, q)
    if not math.isfinite(sigma):
        return 0, math.nan
    bulk_max = (sigma * (1 + 1 / np.sqrt(q))) ** 2
    tw = 1 / np.sqrt(q) * np.power(bulk_max, 2 / 3) * np.power(m, -2 / 3)
    spikes = int(np.count_nonzero(to_plot > bulk_max + np.sqrt(tw)))
    return spikes, float(bulk_max / np.max(to_plot))
