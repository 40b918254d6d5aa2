"""Summaries across seeds and paired tests between configurations.

* mean, sample standard deviation (ddof=1) and a 95 % Student-t interval for the mean;
* a paired t-test per comparison (runs with the same seed share the data split, so they are paired),
  with the 95 % interval of the mean difference; p-values are adjusted with Holm's method within
  each experiment, and a difference is called significant when the adjusted p is below ``ALPHA``.
When every seed gives the same difference the test has no spread: p is 0 for a non-zero
difference and 1 for none. With one seed nothing is tested.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats as st

ALPHA = 0.05
LEVEL = 0.95
TEST_COLUMNS = ["comparison", "against", "metric", "n", "mean_diff", "ci_low", "ci_high", "t", "p", "p_holm",
                "significant"]


def interval(values) -> dict:
    """n, mean, std and the 95 % interval of the mean of the finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if n > 1 else math.nan
    half = float(st.t.ppf(0.5 + LEVEL / 2, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def summarize(runs: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per configuration (``keys``), per metric: n, mean, std, ci_low, ci_high."""
    rows = []
    for key, group in runs.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        for m in metrics:
            for k, v in interval(group[m]).items():
                row[f"{m}_{k}"] = v
        rows.append(row)
    return pd.DataFrame(rows)


def paired(a, b) -> dict:
    """Paired t-test of b - a (aligned by seed; pairs with a NaN are dropped)."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    d = d[np.isfinite(d)]
    out = {"n": len(d), **{k: math.nan for k in ("mean_diff", "ci_low", "ci_high", "t", "p")}}
    if len(d) < 2:
        if len(d):
            out["mean_diff"] = float(d.mean())
        return out
    ci = interval(d)
    out.update(mean_diff=ci["mean"], ci_low=ci["ci_low"], ci_high=ci["ci_high"])
    if ci["std"] == 0:
        out.update(t=math.copysign(math.inf, ci["mean"]) if ci["mean"] else 0.0, p=0.0 if ci["mean"] else 1.0)
    else:
        with warnings.catch_warnings():  # nearly equal differences: scipy warns, the result stands
            warnings.simplefilter("ignore", RuntimeWarning)
            res = st.ttest_1samp(d, 0.0)  # the paired t-test: the differences against 0
        out.update(t=float(res.statistic), p=float(res.pvalue))
    return out


def holm(p: pd.Series) -> pd.Series:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN)."""
    ok = p.dropna().sort_values()
    m = len(ok)
    adjusted, running = {}, 0.0
    for i, (idx, value) in enumerate(ok.items()):
        running = max(running, min(1.0, (m - i) * value))
        adjusted[idx] = running
    return pd.Series([adjusted.get(i, math.nan) for i in p.index], index=p.index, dtype="float64")


def comparisons(runs: pd.DataFrame, keys: list[str], within: list[str], factor: str, baseline: str,
                metrics: list[str]) -> pd.DataFrame:
    """Each configuration against the one with ``factor == baseline`` sharing its ``within`` labels,
    paired by seed, for each metric; Holm-adjusted over the whole table."""
    rows = []
    for key, group in runs.groupby(keys, sort=False, dropna=False):
        labels = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        if labels[factor] == baseline:
            continue
        base = runs[(runs[factor] == baseline) & _match(runs, labels, within)]
        if base.empty:
            continue
        both = group.merge(base, on="seed", suffixes=("", "_base"))
        name = label({k: v for k, v in labels.items() if k not in within})
        scope = label({k: labels[k] for k in within})
        for m in metrics:
            res = paired(both[f"{m}_base"], both[m])
            rows.append({"comparison": f"{scope} {name}".strip(), "against": f"{scope} {baseline}".strip(),
                         "metric": m, **res})
    df = pd.DataFrame(rows, columns=TEST_COLUMNS)
    df["p_holm"] = holm(df["p"]) if len(df) else df["p"]
    df["significant"] = [("yes" if q < ALPHA else "no") if q == q else "not tested" for q in df["p_holm"]]
    return df


def label(labels: dict) -> str:
    """A configuration's name from its labels: ``False`` and ``none`` left out, ``biases=True`` as ``+biases``."""
    words = []
    for k, v in labels.items():
        if v is True or (isinstance(v, np.bool_) and v):
            words.append(f"+{k}")
        elif str(v) not in ("False", "none", "nan"):
            words.append(str(v))
    return " ".join(words)


def _match(runs: pd.DataFrame, labels: dict, within: list[str]) -> pd.Series:
    mask = pd.Series(True, index=runs.index)
    for k in within:
        mask &= runs[k] == labels[k]
    return mask
