"""The layer table: one row per layer (module path), pooled from the tensor table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..analysis.significance import wilson_interval
from .schema import LAYER_COLUMNS, counted


INTEGER_DTYPES = ("int", "uint", "bool")  # dtype names of counters, ids and masks, not magnitudes


def counter_rows(df: pd.DataFrame) -> np.ndarray:
    """Rows of integer (or bool) tensors that are not weights: step counters like
    ``num_batches_tracked``, position ids, masks. (Integer weights, stored quantized, are weights.)"""
    integer = df["dtype"].astype(str).str.startswith(INTEGER_DTYPES).to_numpy(dtype=bool)
    return integer & (df["kind"].to_numpy() != "weight")


def pooled(sub: pd.DataFrame) -> dict:
    """numel, sign fractions, abs mean, std and L2 norm pooled over several tensors' rows.

    Integer counters (:func:`counter_rows`) count in numel and the sign fractions but not in the
    magnitudes: a ``num_batches_tracked`` of 4,000 is a count of steps, not a value to average with
    running statistics.
    """
    numel = int(sub["numel"].sum())
    n = np.where(counter_rows(sub), 0.0, sub["finite_count"].to_numpy(dtype=np.float64))
    tot = n.sum()
    out = {"numel": numel}
    for s in ("neg", "zero", "pos"):
        out[f"{s}_frac"] = float(sub[f"{s}_count"].sum() / numel) if numel else math.nan
    if tot > 0:
        ok = n > 0
        mean = sub["mean"].to_numpy()[ok]
        std = sub["std"].to_numpy()[ok]
        nn = n[ok]
        sumsq = float((nn * (std**2 + mean**2)).sum())
        m = float((nn * mean).sum() / tot)
        out["abs_mean"] = float((nn * sub["abs_mean"].to_numpy()[ok]).sum() / tot)
        out["std"] = math.sqrt(max(sumsq / tot - m * m, 0.0))
        out["l2_norm"] = math.sqrt(sumsq)
    else:
        out["abs_mean"] = out["std"] = out["l2_norm"] = math.nan
    return out


def layer_frame(tensors: pd.DataFrame) -> pd.DataFrame:
    """One row per layer (module path), in network order.

    Sums per layer in one grouped pass (a model has thousands of layers); the weight
    figures are pooled as :func:`pooled` pools them.
    """
    df = counted(tensors)
    g = pd.DataFrame(_layer_parts(df)).groupby(df["layer"].to_numpy(), sort=False).sum()
    out = pd.DataFrame({"layer": g.index.to_numpy(dtype=object)})
    for c in ("tensors", "numel", "neg_count", "zero_count", "pos_count"):
        out[c] = g[c].to_numpy()
    total, wtotal, tot = g["numel"].to_numpy(), g["weight_numel"].to_numpy(), g["w_n"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        for s in ("neg", "zero", "pos"):
            out[f"{s}_frac"] = np.where(total > 0, g[f"{s}_count"].to_numpy() / total, np.nan)
        out["learned_numel"] = g["learned_numel"].to_numpy()
        out["buffer_numel"] = g["buffer_numel"].to_numpy()
        out["weight_numel"] = wtotal
        for s in ("neg", "zero", "pos"):
            out[f"weight_{s}_frac"] = np.where(wtotal > 0, g[f"w_{s}"].to_numpy() / wtotal, np.nan)
        sumsq = g["w_sumsq"].to_numpy()
        m = g["w_sum"].to_numpy() / tot
        out["weight_abs_mean"] = np.where(tot > 0, g["w_abs"].to_numpy() / tot, np.nan)
        out["weight_std"] = np.where(tot > 0, np.sqrt(np.maximum(sumsq / tot - m * m, 0.0)), np.nan)
        out["weight_l2_norm"] = np.where(tot > 0, np.sqrt(sumsq), np.nan)
    out["nan_count"] = g["nan_count"].to_numpy()
    out["inf_count"] = g["inf_count"].to_numpy()
    out["neg_frac_lo"], out["neg_frac_hi"] = wilson_interval(g["neg_count"].to_numpy(), total)
    out["weight_neg_frac_lo"], out["weight_neg_frac_hi"] = wilson_interval(g["w_neg"].to_numpy(), wtotal)
    return out[LAYER_COLUMNS].reset_index(drop=True)


def _layer_parts(df: pd.DataFrame) -> dict:
    """Per-tensor columns whose per-layer sums make the layer table (weights pool their moments)."""
    kind = df["kind"].to_numpy()
    weight = kind == "weight"
    numel = df["numel"].to_numpy(dtype=np.int64)
    n = df["finite_count"].to_numpy(dtype=np.float64)
    wn = np.where(weight & (n > 0), n, 0.0)  # weights with finite values pool their moments
    with np.errstate(invalid="ignore"):
        mean = np.where(wn > 0, df["mean"].to_numpy(dtype=np.float64), 0.0)
        std = np.where(wn > 0, df["std"].to_numpy(dtype=np.float64), 0.0)
        abs_mean = np.where(wn > 0, df["abs_mean"].to_numpy(dtype=np.float64), 0.0)
    return {
        "tensors": np.ones(len(df), dtype=np.int64),
        "numel": numel,
        **{f"{s}_count": df[f"{s}_count"].to_numpy(dtype=np.int64) for s in ("neg", "zero", "pos")},
        "learned_numel": np.where(kind != "buffer", numel, 0),
        "buffer_numel": np.where(kind == "buffer", numel, 0),
        "weight_numel": np.where(weight, numel, 0),
        **{f"w_{s}": np.where(weight, df[f"{s}_count"].to_numpy(dtype=np.int64), 0) for s in ("neg", "zero", "pos")},
        "w_n": wn,
        "w_sum": wn * mean,
        "w_sumsq": wn * (std**2 + mean**2),
        "w_abs": wn * abs_mean,
        "nan_count": df["nan_count"].to_numpy(dtype=np.int64),
        "inf_count": df["inf_count"].to_numpy(dtype=np.int64),
    }
