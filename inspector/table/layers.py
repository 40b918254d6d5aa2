"""The layer table: one row per layer (module path), pooled from the tensor table."""

from __future__ import annotations

import math

import numpy as np

from ..analysis.significance import wilson_interval
from .frame import Frame, first_seen, group_sum
from .schema import LAYER_COLUMNS, counted


INTEGER_DTYPES = ("int", "uint", "bool")  # dtype names of counters, ids and masks, not magnitudes


def counter_rows(df) -> np.ndarray:
    """Rows of integer (or bool) tensors that are not weights: step counters like
    ``num_batches_tracked``, position ids, masks. (Integer weights, stored quantized, are weights.)"""
    dtypes = np.asarray(df["dtype"], dtype=object).tolist()
    integer_names = {d: str(d).startswith(INTEGER_DTYPES) for d in set(dtypes)}
    integer = np.array([integer_names[d] for d in dtypes], dtype=bool)
    return integer & (np.asarray(df["kind"], dtype=object) != "weight")


def pooled(sub) -> dict:
    """numel, sign fractions, abs mean, std and L2 norm pooled over several tensors' rows (a Frame or a
    DataFrame).

    Integer counters (:func:`counter_rows`) count in numel and the sign fractions but not in the
    magnitudes: a ``num_batches_tracked`` of 4,000 is a count of steps, not a value to average with
    running statistics.
    """
    numel = int(np.asarray(sub["numel"], dtype=np.int64).sum())
    n = np.where(counter_rows(sub), 0.0, np.asarray(sub["finite_count"], dtype=np.float64))
    tot = n.sum()
    out = {"numel": numel}
    for s in ("neg", "zero", "pos"):
        out[f"{s}_frac"] = float(np.asarray(sub[f"{s}_count"], dtype=np.int64).sum() / numel) if numel else math.nan
    if tot > 0:
        ok = n > 0
        mean = np.asarray(sub["mean"], dtype=np.float64)[ok]
        std = np.asarray(sub["std"], dtype=np.float64)[ok]
        nn = n[ok]
        sumsq = float((nn * (std**2 + mean**2)).sum())
        m = float((nn * mean).sum() / tot)
        out["abs_mean"] = float((nn * np.asarray(sub["abs_mean"], dtype=np.float64)[ok]).sum() / tot)
        out["std"] = math.sqrt(max(sumsq / tot - m * m, 0.0))
        out["l2_norm"] = math.sqrt(sumsq)
    else:
        out["abs_mean"] = out["std"] = out["l2_norm"] = math.nan
    return out


LAYER_TYPES = {c: "float64" for c in LAYER_COLUMNS}
LAYER_TYPES.update({c: "int64" for c in ("tensors", "numel", "neg_count", "zero_count", "pos_count", "learned_numel",
                                         "buffer_numel", "weight_numel", "nan_count", "inf_count")}, layer="object")


def layer_frame(tensors: Frame) -> Frame:
    """One row per layer (module path), in network order.

    Sums per layer in one grouped pass (a model has thousands of layers); the weight
    figures are pooled as :func:`pooled` pools them.
    """
    df = counted(tensors)
    layers, codes = first_seen(df["layer"])
    g = {k: group_sum(codes, len(layers), v) for k, v in _layer_parts(df).items()}
    out = {"layer": layers}
    for c in ("tensors", "numel", "neg_count", "zero_count", "pos_count"):
        out[c] = g[c]
    total, wtotal, tot = g["numel"], g["weight_numel"], g["w_n"]
    with np.errstate(invalid="ignore", divide="ignore"):
        for s in ("neg", "zero", "pos"):
            out[f"{s}_frac"] = np.where(total > 0, g[f"{s}_count"] / total, np.nan)
        out["learned_numel"] = g["learned_numel"]
        out["buffer_numel"] = g["buffer_numel"]
        out["weight_numel"] = wtotal
        for s in ("neg", "zero", "pos"):
            out[f"weight_{s}_frac"] = np.where(wtotal > 0, g[f"w_{s}"] / wtotal, np.nan)
        sumsq = g["w_sumsq"]
        m = g["w_sum"] / tot
        out["weight_abs_mean"] = np.where(tot > 0, g["w_abs"] / tot, np.nan)
        out["weight_std"] = np.where(tot > 0, np.sqrt(np.maximum(sumsq / tot - m * m, 0.0)), np.nan)
        out["weight_l2_norm"] = np.where(tot > 0, np.sqrt(sumsq), np.nan)
    out["nan_count"] = g["nan_count"]
    out["inf_count"] = g["inf_count"]
    out["neg_frac_lo"], out["neg_frac_hi"] = wilson_interval(g["neg_count"], total)
    out["weight_neg_frac_lo"], out["weight_neg_frac_hi"] = wilson_interval(g["w_neg"], wtotal)
    return Frame.from_columns({c: out[c] for c in LAYER_COLUMNS}, LAYER_TYPES)


def _layer_parts(df: Frame) -> dict:
    """Per-tensor columns whose per-layer sums make the layer table (weights pool their moments)."""
    kind = df["kind"]
    weight = kind == "weight"
    numel = df["numel"].astype(np.int64)
    n = df["finite_count"].astype(np.float64)
    wn = np.where(weight & (n > 0), n, 0.0)  # weights with finite values pool their moments
    with np.errstate(invalid="ignore"):
        mean = np.where(wn > 0, df["mean"].astype(np.float64), 0.0)
        std = np.where(wn > 0, df["std"].astype(np.float64), 0.0)
        abs_mean = np.where(wn > 0, df["abs_mean"].astype(np.float64), 0.0)
    return {
        "tensors": np.ones(len(df), dtype=np.int64),
        "numel": numel,
        **{f"{s}_count": df[f"{s}_count"].astype(np.int64) for s in ("neg", "zero", "pos")},
        "learned_numel": np.where(kind != "buffer", numel, 0),
        "buffer_numel": np.where(kind == "buffer", numel, 0),
        "weight_numel": np.where(weight, numel, 0),
        **{f"w_{s}": np.where(weight, df[f"{s}_count"].astype(np.int64), 0) for s in ("neg", "zero", "pos")},
        "w_n": wn,
        "w_sum": wn * mean,
        "w_sumsq": wn * (std**2 + mean**2),
        "w_abs": wn * abs_mean,
        "nan_count": df["nan_count"].astype(np.int64),
        "inf_count": df["inf_count"].astype(np.int64),
    }
