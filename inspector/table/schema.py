"""The tables' schema, defined once, and the functions that build them from stats rows.

Column orders here are the contract of the CSV/JSON outputs; exporters only read them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..analysis.stats import PERCENTILES

TENSOR_COLUMNS = [
    "name", "layer", "kind", "dtype", "shape", "numel",
    "neg_count", "zero_count", "pos_count", "neg_frac", "zero_frac", "pos_frac",
    "mean", "std", "min", "max", "abs_mean", "l2_norm", "nan_count", "inf_count",
    *[f"p{q:02d}" for q in PERCENTILES],
]
# more columns follow the required ones, in this order
TENSOR_EXTRA_COLUMNS = ["finite_count", "out_axis", "module_type", "tied_to"]
# per-unit sign structure (analysis/units.py) and initialisation baseline (analysis/init_baseline.py);
# empty for tensors they do not apply to
TENSOR_ANALYSIS_COLUMNS = [
    "units", "all_nonpos_units", "dead_relu_candidates", "unit_neg_frac_min", "unit_neg_frac_max",
    "fan_in", "fan_out", "std_vs_kaiming_uniform", "std_vs_kaiming_normal", "std_vs_xavier",
]

LAYER_COLUMNS = [
    "layer", "tensors", "numel", "neg_count", "zero_count", "pos_count", "neg_frac", "zero_frac", "pos_frac",
    "learned_numel", "buffer_numel",
    "weight_numel", "weight_neg_frac", "weight_zero_frac", "weight_pos_frac",
    "weight_abs_mean", "weight_std", "weight_l2_norm", "nan_count", "inf_count",
]

SUMMARY_TOP = 5  # most / least negative layers listed in the summary


def shape_str(shape) -> str:
    return "x".join(str(s) for s in shape) if len(shape) else "scalar"


def tensor_frame(rows: list[dict], extra: list[str] | None = None) -> pd.DataFrame:
    more = TENSOR_EXTRA_COLUMNS + TENSOR_ANALYSIS_COLUMNS
    cols = TENSOR_COLUMNS + more + [c for c in (extra or []) if c not in more]
    df = pd.DataFrame(rows, columns=cols)
    for c in ("numel", "neg_count", "zero_count", "pos_count", "nan_count", "inf_count", "finite_count"):
        df[c] = df[c].astype("int64")
    df["out_axis"] = df["out_axis"].astype("Int64")
    for c in TENSOR_ANALYSIS_COLUMNS:  # counts stay integers when some rows leave them empty
        df[c] = df[c].astype("Int64" if c in ("units", "all_nonpos_units", "dead_relu_candidates", "fan_in",
                                              "fan_out") else "float64")
    return df


def counted(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that count towards totals: a tensor tied to an earlier one is counted once."""
    return df[df["tied_to"].isna()]


def _pooled(sub: pd.DataFrame) -> dict:
    """numel, sign fractions, abs mean, std and L2 norm pooled over several tensors' rows."""
    numel = int(sub["numel"].sum())
    n = sub["finite_count"].to_numpy(dtype=np.float64)
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
    figures are pooled as :func:`_pooled` pools them.
    """
    df = counted(tensors)
    kind = df["kind"].to_numpy()
    weight = kind == "weight"
    numel = df["numel"].to_numpy(dtype=np.int64)
    n = df["finite_count"].to_numpy(dtype=np.float64)
    wn = np.where(weight & (n > 0), n, 0.0)  # weights with finite values pool their moments
    with np.errstate(invalid="ignore"):
        mean = np.where(wn > 0, df["mean"].to_numpy(dtype=np.float64), 0.0)
        std = np.where(wn > 0, df["std"].to_numpy(dtype=np.float64), 0.0)
        abs_mean = np.where(wn > 0, df["abs_mean"].to_numpy(dtype=np.float64), 0.0)
    parts = {
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
    g = pd.DataFrame(parts).groupby(df["layer"].to_numpy(), sort=False).sum()
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
    return out[LAYER_COLUMNS].reset_index(drop=True)


def summarize(tensors: pd.DataFrame, layers: pd.DataFrame, meta: dict) -> dict:
    """The model summary: totals, the headline negative fraction, per kind, extreme layers."""
    df = counted(tensors)
    learned = df[df["kind"] != "buffer"]
    weights = _pooled(df[df["kind"] == "weight"])
    by_kind = {}
    for kind, sub in df.groupby("kind", sort=False):
        p = _pooled(sub)
        by_kind[kind] = {"tensors": len(sub), **p}
    ranked = layers[layers["weight_numel"] > 0].sort_values("weight_neg_frac", ascending=False, kind="stable")
    top = [
        {"layer": r.layer, "weight_neg_frac": float(r.weight_neg_frac), "weight_numel": int(r.weight_numel)}
        for r in ranked.itertuples()
    ]
    summary = {
        "source": meta.get("source"),
        "format": meta.get("format"),
        "trained": meta.get("trained"),
        "tensors": int(len(tensors)),
        "parameters": int(df["numel"].sum()),
        "learned_parameters": int(learned["numel"].sum()),
        "buffer_elements": int(df.loc[df["kind"] == "buffer", "numel"].sum()),
        "weight_parameters": weights["numel"],
        "weight_neg_frac": weights["neg_frac"],
        "weight_zero_frac": weights["zero_frac"],
        "weight_pos_frac": weights["pos_frac"],
        "learned_neg_frac": _pooled(learned)["neg_frac"],
        "by_kind": by_kind,
        "most_negative_layers": top[:SUMMARY_TOP],
        "least_negative_layers": top[::-1][:SUMMARY_TOP],
        "nan_count": int(df["nan_count"].sum()),
        "inf_count": int(df["inf_count"].sum()),
        "dtypes": {str(k): int(v) for k, v in df.groupby("dtype", sort=False)["numel"].sum().items()},
        "tied_tensors": [
            {"name": r.name, "tied_to": r.tied_to} for r in tensors[tensors["tied_to"].notna()].itertuples()
        ],
        "notes": list(meta.get("notes", [])),
    }
    for key in ("model", "weights", "nested_key", "keras_version", "backend", "metadata"):
        if key in meta:
            summary[key] = meta[key]
    return summary
